#!/usr/bin/env bash
# The `paper` profile on the GPU machine, one group of notebooks per device command (issue 22).
#
#   benchmarks/gpu_paper.sh [options] GROUP... [-- RUN_ALL_OPTION...]
#   benchmarks/gpu_paper.sh --list-groups
#
# Groups, to be run in this order (a later one reuses the runs an earlier one cached):
#   01 | 02-03 | 04 | 05-07      (--list-groups names their notebooks)
#
# Made for the device machine (a run call with carry [".whl", ".data", ".git-head"], all three
# made here by benchmarks/gpu_wheelhouse.sh), whose image has torch but no Jupyter and reaches
# no package registry. It makes .git from .git-head when no .git came along (provenance then
# names the commit), and a venv on top of the image's python3 (PYTHON) whose .pth file adds the
# image's site-packages and this checkout (so `reuse` imports, with no build step), installs
# the wheelhouse offline into it (pip install --no-index --find-links .whl), registers its
# ipykernel and checks that papermill will start that kernel. Then, per notebook, it runs
#   ./run_all.sh --profile paper --device cuda --only NOTEBOOK [RUN_ALL_OPTION...]
# timed, with the run cache at REUSE_CACHE_DIR, outside the checkout, so that the next
# command finds it while the machine stays warm. A notebook starts only while the budget
# lasts and is stopped when it runs out (what it trained stays in the cache: run the group
# again). nvidia-smi is read before and sampled every 2 s. Then results/PROFILE (with the
# executed notebooks in results/PROFILE/notebooks), figures/PROFILE, results/SUMMARY.md and
# the logs (gpu-run/PROFILE-GROUP/: timing.tsv, one log per notebook, nvidia-smi.txt,
# gpu-usage.csv, environment.txt, pip-list.txt) are packed into $OUT/PROFILE-GROUP.tar.gz
# (split in 15 MiB parts *.part-N if larger), with timing.tsv beside it.
#
# Options:
#   --local         a check here on the CPU: --profile smoke --device cpu; OUT a new temporary
#                   folder unless set; venv and cache under ${TMPDIR:-/tmp}
#   --profile NAME  smoke | quick | paper [paper; smoke with --local]
#   --budget S      seconds from the start until notebooks are stopped [550: a run command
#                   may last 600 s, and packing takes a few]
#   --list-groups   print each group and its notebooks, run nothing
#   -h, --help      this text
# Environment: PYTHON [python3], WHEELS [.whl], REUSE_GPU_VENV [/tmp/reuse-venv],
#   REUSE_CACHE_DIR [/tmp/reuse-cache], REUSE_DATA_DIR [.data/fashion-mnist when it exists],
#   OUT (set by the device's run tool; required without --local).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GROUP_ORDER=(01 02-03 04 05-07)
declare -A GROUP_PREFIXES=([01]="01" [02-03]="02 03" [04]="04" [05-07]="05 06 07")

die() { echo "gpu_paper.sh: error: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

# The notebooks of group $1 into the array nbs; an error when a prefix matches none or several.
group_notebooks() {
  local prefix matches
  nbs=()
  for prefix in ${GROUP_PREFIXES[$1]}; do
    matches=("$REPO"/notebooks/"${prefix}"_*.ipynb)
    [[ -e ${matches[0]} ]] || die "group $1: no notebook notebooks/${prefix}_*.ipynb"
    ((${#matches[@]} == 1)) || die "group $1: several notebooks match ${prefix}_*: ${matches[*]##*/}"
    nbs+=("${matches[0]}")
  done
}

list_groups() {
  local group nb covered=" " missing=()
  for group in "${GROUP_ORDER[@]}"; do
    group_notebooks "$group"
    printf '%s\t%s\n' "$group" "$(printf '%s ' "${nbs[@]##*/}" | sed 's/ $//')"
    for nb in "${nbs[@]}"; do covered+="${nb##*/} "; done
  done
  for nb in "$REPO"/notebooks/*.ipynb; do
    [[ $covered == *" ${nb##*/} "* ]] || missing+=("${nb##*/}")
  done
  ((${#missing[@]} == 0)) || echo "gpu_paper.sh: warning: in no group: ${missing[*]}" >&2
}

local_mode=0 profile="" budget=550 groups=() passthrough=()
while (($#)); do
  case $1 in
    --local) local_mode=1; shift ;;
    --profile) [[ ${2:-} =~ ^(smoke|quick|paper)$ ]] ||
                 die "--profile '${2:-}' is not a profile; allowed: smoke, quick, paper"
               profile=$2; shift 2 ;;
    --budget) if [[ ! ${2:-} =~ ^[0-9]+$ ]] || ((${2} < 60)); then
                die "--budget needs whole seconds >= 60, got '${2:-}'"
              fi
              budget=$2; shift 2 ;;
    --list-groups) list_groups; exit ;;
    -h|--help) usage; exit 0 ;;
    --) shift; passthrough=("$@"); break ;;
    -*) die "unknown option '$1'; allowed: --local, --profile NAME, --budget S, --list-groups, --help," \
            "and after -- any option of ./run_all.sh" ;;
    *) [[ -n ${GROUP_PREFIXES[$1]:-} ]] ||
         die "unknown group '$1'; allowed: ${GROUP_ORDER[*]} (--list-groups names their notebooks)"
       groups+=("$1"); shift ;;
  esac
done
((${#groups[@]})) || die "name a group: ${GROUP_ORDER[*]} (--list-groups names their notebooks)"
notebooks=()
for group in "${groups[@]}"; do
  group_notebooks "$group"
  notebooks+=("${nbs[@]}")
done

tmp=${TMPDIR:-/tmp}
if ((local_mode)); then
  profile=${profile:-smoke} device=cpu
  VENV=${REUSE_GPU_VENV:-$tmp/reuse-venv-local}
  CACHE=${REUSE_CACHE_DIR:-$tmp/reuse-cache-local}
  OUT=${OUT:-$(mktemp -d "$tmp/reuse-gpu-out.XXXXXX")}
else
  profile=${profile:-paper} device=cuda
  VENV=${REUSE_GPU_VENV:-/tmp/reuse-venv}
  CACHE=${REUSE_CACHE_DIR:-/tmp/reuse-cache}
  [[ -n ${OUT:-} ]] || die "OUT is not set: the device's run tool sets it; here, use --local"
fi
[[ -d $OUT && -w $OUT ]] || die "OUT=$OUT is not a writable folder"
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-$REPO/.whl}
if [[ -z ${REUSE_DATA_DIR:-} && -d $REPO/.data/fashion-mnist ]]; then
  export REUSE_DATA_DIR=$REPO/.data/fashion-mnist
fi
label=$profile-$(IFS=_; echo "${groups[*]}")
logroot=$(mktemp -d "$tmp/reuse-gpu-log.XXXXXX")
logs=$logroot/gpu-run/$label
mkdir -p "$logs" "$CACHE"
deadline=$((SECONDS + budget))
say() { echo "$*" | tee -a "$logs/summary.log"; }

sampler=""
packed=0
# shellcheck disable=SC2317  # called by the EXIT trap
pack() {  # everything under $OUT in at most 8 files of at most 16 MiB
  ((packed)) && return
  packed=1
  [[ -n $sampler ]] && kill "$sampler" 2>/dev/null
  local paths=() p archive=$OUT/$label.tar.gz
  for p in "results/$profile" "figures/$profile" results/SUMMARY.md; do
    [[ -e $REPO/$p ]] && paths+=("$p")
  done
  cp "$logs/timing.tsv" "$OUT/$label-timing.tsv" 2>/dev/null
  tar czf "$archive" -C "$REPO" "${paths[@]}" -C "$logroot" gpu-run ||
    echo "gpu_paper.sh: warning: tar failed; $OUT may lack outputs" >&2
  if (($(stat -c %s "$archive") > 15 * 1048576)); then
    split -b 15M -d -a 1 "$archive" "$archive.part-" && rm "$archive"
    echo "Split into parts: cat $label.tar.gz.part-* > $label.tar.gz"
  fi
  echo "Outputs in $OUT ($(du -sh "$OUT" | cut -f1)): $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
}
trap pack EXIT
trap 'exit 143' TERM INT

# ------------------------------------------------------------------ the machine and its GPU
# No .git travels to the device, and provenance names a commit only where git finds one: make
# it from the carried .git-head (gpu_wheelhouse.sh), the index read from HEAD, so that git
# status compares this tree with that commit (modes ignored: the copy may not keep them).
if [[ ! -e $REPO/.git && -d $REPO/.git-head ]]; then
  if ! command -v git >/dev/null; then
    say "warning: git is not installed here: provenance will record the commit as unknown"
  elif cp -a "$REPO/.git-head" "$REPO/.git" && git -C "$REPO" config core.bare false &&
       git -C "$REPO" config core.fileMode false && git -C "$REPO" reset -q; then
    say "Made $REPO/.git from .git-head: commit $(git -C "$REPO" rev-parse --short HEAD)"
  else
    rm -rf "$REPO/.git"
    say "warning: could not make .git from .git-head: provenance will record the commit as unknown"
  fi
fi
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "label: $label  notebooks: ${notebooks[*]##*/}"
  echo "commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo 'unknown (no git repository here)')"
  echo "changed tracked files: $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
  echo "uname: $(uname -srm)  cores: $(nproc)  memory: $(free -g 2>/dev/null | awk '/^Mem/ {print $2 " GiB"}')"
  echo "python (PYTHON=$PYTHON): $("$PYTHON" -c 'import sys; print(sys.version.split()[0], sys.prefix)' 2>&1)"
  echo "data: ${REUSE_DATA_DIR:-(default of the runner)}  cache: $CACHE ($(find "$CACHE" -type f | wc -l) files)"
  echo "budget: $budget s  run_all.sh options: --profile $profile --device $device ${passthrough[*]}"
} > "$logs/environment.txt"
cat "$logs/environment.txt"
if command -v nvidia-smi >/dev/null; then
  { nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit \
      --format=csv; } > "$logs/nvidia-smi.txt" 2>&1
  tail -2 "$logs/nvidia-smi.txt"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm \
    --format=csv -l 2 > "$logs/gpu-usage.csv" 2>&1 &
  sampler=$!
else
  echo "nvidia-smi: not found" | tee "$logs/nvidia-smi.txt"
fi

# ------------------------------------------------------------------ the environment, offline
pip_offline() {  # no index, no configuration files, no PIP_* settings of this machine
  local unset_pip=()
  while read -r var; do unset_pip+=(-u "$var"); done < <(compgen -e | grep '^PIP_')
  env "${unset_pip[@]}" PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$VENV/bin/python" -m pip "$@"
}
ready() {  # the venv imports papermill, ipykernel and this checkout's reuse
  [[ -x $VENV/bin/python ]] && (cd / && "$VENV/bin/python" -c '
import sys, pathlib, papermill, ipykernel, reuse
sys.exit(pathlib.Path(reuse.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())' "$REPO") 2>/dev/null
}

setup_start=$SECONDS
if ready; then
  say "Using $VENV (set up by an earlier command)"
else
  compgen -G "$WHEELS/*.whl" >/dev/null ||
    die "no wheels in $WHEELS: make them with benchmarks/gpu_wheelhouse.sh and carry .whl"
  rm -rf "$VENV"
  "$PYTHON" -m venv --without-pip "$VENV" || die "$PYTHON -m venv --without-pip $VENV failed"
  venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') ||
    die "the new venv's python does not run"
  # The image's site-packages (with their own .pth files) after the venv's, and this checkout.
  "$PYTHON" - "$REPO" > "$venv_site/_reuse_gpu.pth" <<'EOF' || die "cannot read $PYTHON's site-packages"
import site, sys
print(sys.argv[1])
for folder in site.getsitepackages():
    print(f"import site; site.addsitedir({folder!r})")
EOF
  mapfile -t needs < <(bash "$REPO/benchmarks/gpu_wheelhouse.sh" --print-needs)
  say "Installing ${needs[*]} from $WHEELS (no index) into $VENV"
  mapfile -t nodeps < <(bash "$REPO/benchmarks/gpu_wheelhouse.sh" --print-nodeps)
  if ! { pip_offline install -q --no-index --find-links "$WHEELS" --no-cache-dir "${needs[@]}" &&
         pip_offline install -q --no-index --find-links "$WHEELS" --no-cache-dir --no-deps "${nodeps[@]}"; } \
       > "$logs/pip-install.log" 2>&1; then
    cat "$logs/pip-install.log"
    say "warning: the resolver could not satisfy them from $WHEELS and the image (above);" \
        "installing every wheel of $WHEELS without dependency checks"
    pip_offline install -q --no-index --no-deps --no-cache-dir "$WHEELS"/*.whl >> "$logs/pip-install.log" 2>&1 ||
      { cat "$logs/pip-install.log"; die "pip install --no-deps failed too"; }
  fi
  ready || die "after the install, $VENV/bin/python cannot import papermill, ipykernel or $REPO's reuse"
fi
pip_offline list --format=freeze > "$logs/pip-list.txt" 2>/dev/null
pip_offline check > "$logs/pip-check.txt" 2>&1 ||
  say "pip check (informational, image included): $(grep -c . "$logs/pip-check.txt") line(s) in pip-check.txt"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null ||
  die "registering the kernel failed"
kernel=$(cd / && JUPYTER_PREFER_ENV_PATH=1 "$VENV/bin/python" -c \
  'from jupyter_client.kernelspec import KernelSpecManager; print(KernelSpecManager().get_kernel_spec("python3").argv[0])') ||
  die "jupyter_client finds no kernel python3"
[[ $kernel == "$VENV/bin/python" ]] || die "kernel python3 runs $kernel, not $VENV/bin/python"
say "Environment ready in $((SECONDS - setup_start)) s: kernel python3 is $kernel"

# ------------------------------------------------------------------ the notebooks
export VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH REUSE_CACHE_DIR=$CACHE PYTHONUNBUFFERED=1
unset CONDA_PREFIX PYTHONHOME
printf 'notebook\tstatus\twall_s\tcache_files\n' > "$logs/timing.tsv"
failed=0
for nb in "${notebooks[@]}"; do
  stem=$(basename "$nb" .ipynb)
  left=$((deadline - SECONDS))
  if ((left < 20)); then
    printf '%s\tskipped (budget spent)\t0\t-\n' "$stem" >> "$logs/timing.tsv"
    say "$stem: skipped, $left s of the budget left"
    failed=1
    continue
  fi
  say "$stem: ./run_all.sh --profile $profile --device $device --only $stem ${passthrough[*]} ($left s left)"
  start=$EPOCHREALTIME
  timeout --kill-after=15 "$left" "$REPO/run_all.sh" --profile "$profile" --device "$device" \
    --only "$stem" "${passthrough[@]}" > "$logs/$stem.log" 2>&1
  rc=$?
  wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=ok ;;
    124|137) status="stopped at the budget"; failed=1 ;;
    *) status="failed (exit $rc)"; failed=1 ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$stem" "$status" "$wall" "$(find "$CACHE" -type f | wc -l)" >> "$logs/timing.tsv"
  grep -E '^\[[0-9]+/[0-9]+\]|^Error in cell|^partly executed|error:' "$logs/$stem.log" | tail -4
  say "$stem: $status, $wall s"
done
column -t -s $'\t' "$logs/timing.tsv" 2>/dev/null || cat "$logs/timing.tsv"
say "Total $SECONDS s (budget $budget s)"
exit "$failed"
