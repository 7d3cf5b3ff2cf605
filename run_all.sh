#!/usr/bin/env bash
# Set up the environment, check the data, run the notebooks with papermill and
# write results/SUMMARY.md. ./run_all.sh --help for the options.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=run_all.sh

usage() {
  cat <<EOF
Usage: ./$PROG [options]

Sets up the Python environment (an active one that imports reuse, else .venv),
checks that Fashion-MNIST is there, executes the notebooks with papermill and
writes a summary of their results to results/SUMMARY.md.

Options [default]:
  --profile NAME      scale: smoke | quick | paper                    [quick]
  --only PATTERN      run only the notebooks whose file name contains PATTERN,
                      or matches it as a glob (01, network, '0[12]*');
                      repeat to select more                           [all]
  --seeds LIST        comma-separated seeds, e.g. 0,1,2  [the profile's seeds]
  --device NAME       auto | cpu | cuda | mps                          [auto]
  --output DIR        write executed notebooks, figures and results to
                      DIR/notebooks, DIR/figures, DIR/results
                      [figures/PROFILE, results/PROFILE; the executed notebooks
                      replace notebooks/ for quick (the committed profile), else
                      go to results/PROFILE/notebooks]
  --set NAME=VALUE    set another notebook parameter; VALUE is YAML, so lists
                      work: --set 'archs=[unet, pspnet]'; repeatable   [none]
  --data-dir DIR      folder with the Fashion-MNIST *-ubyte.gz files
                      [\$REUSE_DATA_DIR, then /usr/share/datasets/fashion-mnist]
  --download          download Fashion-MNIST with torchvision if it is not
                      found (the only network use besides setup)       [off]
  --setup-only        set up the environment, check the data, stop      [off]
  --dry-run           print the papermill command of each notebook and
                      stop without setup or running anything           [off]
  -h, --help          show this help

Environment: REUSE_CACHE_DIR, cache of trained models [.cache/runs];
REUSE_NOTEBOOKS_DIR, folder of the notebooks to run [notebooks/].
EOF
}

die_usage() { echo "$PROG: error: $*" >&2; echo "See ./$PROG --help" >&2; exit 2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
abspath() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }

# Quotes an argument for copy-paste, only where the shell needs it.
shell_quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# --- options ---------------------------------------------------------------------
profile=quick device=auto seeds="" output="" data_dir="" download=0 setup_only=0 dry_run=0
only=() sets=() set_names=()
while (($#)); do
  opt=$1 value=""
  case $opt in
    --profile=*|--only=*|--seeds=*|--device=*|--output=*|--set=*|--data-dir=*)
      value=${opt#*=} opt=${opt%%=*} ;;
    --profile|--only|--seeds|--device|--output|--set|--data-dir)
      (($# >= 2)) || die_usage "option $opt needs a value"
      value=$2; shift ;;
  esac
  case $opt in
    --profile) profile=$value ;;
    --only) only+=("$value") ;;
    --seeds) seeds=$value ;;
    --device) device=$value ;;
    --output) output=$value ;;
    --set) sets+=("$value") ;;
    --data-dir) data_dir=$value ;;
    --download) download=1 ;;
    --setup-only) setup_only=1 ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown option '$1'" ;;
  esac
  shift
done

case $profile in smoke|quick|paper) ;; *)
  die_usage "bad --profile '$profile': allowed are smoke, quick, paper" ;; esac
case $device in auto|cpu|cuda|mps) ;; *)
  die_usage "bad --device '$device': allowed are auto, cpu, cuda, mps" ;; esac
seed_re='(0|[1-9][0-9]*)'  # no leading zeros: YAML reads 010 as octal
if [[ -n $seeds && ! $seeds =~ ^$seed_re(,$seed_re)*$ ]]; then
  die_usage "bad --seeds '$seeds': give comma-separated non-negative integers, e.g. 0,1,2"
fi
for assignment in ${sets[@]+"${sets[@]}"}; do
  name=${assignment%%=*}
  [[ $assignment == *=* && $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] ||
    die_usage "bad --set '$assignment': expected NAME=VALUE, NAME a Python identifier"
  case $name in profile|seeds|device|figures_dir|results_dir|cache_dir|data_dir)
    die_usage "--set $name: run_all.sh sets '$name' itself (see --profile, --seeds," \
      "--device, --output, --data-dir and REUSE_CACHE_DIR)" ;;
  esac
  set_names+=("$name")
done

nb_dir=$(abspath "${REUSE_NOTEBOOKS_DIR:-$REPO/notebooks}")
SHOWN_PROFILE=quick  # the profile whose executed notebooks notebooks/ holds (README, "Scales")
if [[ -n $output ]]; then
  output=$(abspath "$output")
  out_nb_dir=$output/notebooks figures_dir=$output/figures results_dir=$output/results
  summary_root=$output/results
else
  # each profile writes to its own folders; the notebooks pick these by default, so no
  # machine path is injected into the committed notebooks
  figures_dir="" results_dir="" summary_root=$REPO/results
  out_nb_dir=$nb_dir
  [[ $profile == "$SHOWN_PROFILE" ]] || out_nb_dir=$REPO/results/$profile/notebooks
fi
cache_dir=""
[[ -z ${REUSE_CACHE_DIR:-} ]] || cache_dir=$(abspath "$REUSE_CACHE_DIR")
[[ -z $data_dir ]] || data_dir=$(abspath "$data_dir")

# --- notebooks -------------------------------------------------------------------
# Fills `notebooks` with the paths that --only selects, in file-name order.
select_notebooks() {
  local path name pattern available=()
  notebooks=()
  [[ -d $nb_dir ]] || die "notebook folder $nb_dir does not exist"
  for path in "$nb_dir"/*.ipynb; do
    [[ -e $path ]] || break
    name=${path##*/}
    available+=("$name")
    if ((${#only[@]} == 0)); then notebooks+=("$path"); continue; fi
    for pattern in "${only[@]}"; do
      if [[ $pattern == *[\*\?\[]* ]]; then
        # shellcheck disable=SC2053  # unquoted on purpose: a glob match
        if [[ $name == $pattern ]]; then notebooks+=("$path"); break; fi
      elif [[ $name == *"$pattern"* ]]; then
        notebooks+=("$path"); break
      fi
    done
  done
  ((${#notebooks[@]} == 0)) || return 0
  if ((${#only[@]})); then
    die_usage "--only '${only[*]}' matches no notebook in $nb_dir;" \
      "available: ${available[*]:-none}"
  fi
  die "no notebooks (*.ipynb) in $nb_dir"
}

# Rejects --set names that a selected notebook's `parameters` cell does not assign.
# json + ast rather than nbformat, so this runs with any python3, before setup.
check_set_names() {
  ((${#set_names[@]})) || return 0
  python3 - "${set_names[@]}" -- "${notebooks[@]}" <<'PY' || exit 2
import ast, json, sys

args = sys.argv[1:]
names, notebooks = args[:args.index("--")], args[args.index("--") + 1:]
for path in notebooks:
    notebook = path.rsplit("/", 1)[-1]
    allowed = []
    try:
        with open(path, encoding="utf-8") as handle:
            cells = json.load(handle)["cells"]
        for cell in cells:
            if cell["cell_type"] == "code" and "parameters" in cell["metadata"].get("tags", []):
                for node in ast.parse("".join(cell["source"])).body:
                    if isinstance(node, ast.Assign):
                        allowed += [t.id for t in node.targets if isinstance(t, ast.Name)]
                    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                        allowed.append(node.target.id)
    except (OSError, ValueError, KeyError, SyntaxError) as err:
        sys.exit(f"run_all.sh: error: cannot read the parameters cell of {path}: {err!r}")
    for name in names:
        if name not in allowed:
            sys.exit(f"run_all.sh: error: --set {name}: {notebook} has no parameter '{name}'; "
                     f"its parameters are: {', '.join(allowed) or 'none'} "
                     "(use --only to select notebooks that have it)")
PY
}

# Papermill writes to a hidden file that replaces the notebook only on success, so
# a failing run never clobbers a committed notebook.
partial_path() { local name=${1##*/}; printf '%s' "$out_nb_dir/.${name%.ipynb}.partial.ipynb"; }

# Sets the array `cmd` to the papermill command for notebook $1.
papermill_command() {
  local assignment
  cmd=(papermill "$1" "$(partial_path "$1")" -k python3 --cwd "$nb_dir"
       --log-output --no-progress-bar -r profile "$profile" -r device "$device")
  [[ -z $figures_dir ]] || cmd+=(-r figures_dir "$figures_dir" -r results_dir "$results_dir")
  [[ -z $cache_dir ]] || cmd+=(-r cache_dir "$cache_dir")
  [[ -z $seeds ]] || cmd+=(-y "seeds: [${seeds//,/, }]")
  [[ -z $data_dir ]] || cmd+=(-r data_dir "$data_dir")
  for assignment in ${sets[@]+"${sets[@]}"}; do
    cmd+=(-y "${assignment%%=*}: ${assignment#*=}")
  done
}

print_commands() {
  local notebook arg line
  for notebook in "${notebooks[@]}"; do
    papermill_command "$notebook"
    line=""
    for arg in "${cmd[@]}"; do line+="$(shell_quote "$arg") "; done
    echo "${line}&& mv -f $(shell_quote "$(partial_path "$notebook")")" \
      "$(shell_quote "$out_nb_dir/${notebook##*/}")"
  done
}

# --- environment -----------------------------------------------------------------
imports_reuse() { (cd / && "$1" -c 'import reuse') >/dev/null 2>&1; }  # from /: not the checkout

setup_env() {
  if [[ -n ${VIRTUAL_ENV:-}${CONDA_PREFIX:-} ]] && imports_reuse python; then
    echo "Using the active environment $(python -c 'import sys; print(sys.prefix)')"
  else
    if ! { [[ -x $REPO/.venv/bin/python ]] && imports_reuse "$REPO/.venv/bin/python"; }; then
      echo "Setting up $REPO/.venv: pip install -r requirements.txt -e . (a few minutes, once)"
      python3 -m venv "$REPO/.venv" ||
        die "python3 -m venv failed; on Debian/Ubuntu: sudo apt-get install python3-venv"
      (cd "$REPO" && .venv/bin/python -m pip install -q -r requirements.txt -e .) ||
        die "pip install into $REPO/.venv failed (see above)"
    fi
    # shellcheck disable=SC1091
    source "$REPO/.venv/bin/activate"
    echo "Using $REPO/.venv"
  fi
  # papermill -k python3 must start this environment's kernel, not one from ~/.local.
  python -m ipykernel install --sys-prefix --name python3 >/dev/null
  export JUPYTER_PREFER_ENV_PATH=1
}

check_data() {
  local args=()
  [[ -z $data_dir ]] || args+=(--data-dir "$data_dir")
  ((download == 0)) || args+=(--download)
  python -m reuse.data check ${args[@]+"${args[@]}"} || exit 1
}

# --- run -------------------------------------------------------------------------
# Filters papermill's output as it streams: drops its per-cell bookkeeping lines,
# which would drown the notebooks' own output, and, for a failing cell, its Python
# traceback, whose message print_cell_error shows without the click frames.
papermill_filter='
import re, sys

noise = re.compile(r"(Executing|Ending) Cell \d+-*$|(Input|Output) Notebook: |Working directory: "
                   r"|Executing notebook with kernel: |Black is not installed"
                   r"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption")
frames, dropping = None, False
for line in sys.stdin:
    if dropping:
        continue
    if frames is not None:
        if line.startswith("  "):
            frames.append(line)
            continue
        dropping = line.startswith("papermill.exceptions.PapermillExecutionError")
        if dropping:
            continue
        sys.stdout.writelines(frames)
        frames = None
    if line.startswith("Traceback (most recent call last):"):
        frames = [line]
    elif not noise.match(line):
        sys.stdout.write(line)
        sys.stdout.flush()
if not dropping:
    sys.stdout.writelines(frames or [])
'
run_papermill() {
  "$@" 2>&1 | python -c "$papermill_filter"
  return "${PIPESTATUS[0]}"
}

# Prints the failing cell's error from a partly executed notebook, colours removed.
print_cell_error() {
  python - "$1" <<'PY'
import json, re, sys

with open(sys.argv[1], encoding="utf-8") as handle:
    cells = json.load(handle)["cells"]
for cell in cells:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            print(f"Error in cell [{cell.get('execution_count')}]: {out['ename']}: {out['evalue']}")
            print(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", []))))
            sys.exit(0)
sys.exit(1)
PY
}

run_notebooks() {
  local total=${#notebooks[@]} i=0 notebook name partial t0
  mkdir -p "$out_nb_dir"
  for notebook in "${notebooks[@]}"; do
    i=$((i + 1)) name=${notebook##*/} partial=$(partial_path "$notebook") t0=$SECONDS
    echo "[$i/$total] $name ..."
    rm -f "$partial"
    papermill_command "$notebook"
    if run_papermill "${cmd[@]}"; then
      python -m reuse.nbclean "$partial"  # no stderr, timings or paths in stored notebooks
      mv -f "$partial" "$out_nb_dir/$name"
      echo "[$i/$total] $name ... ok ($((SECONDS - t0)) s)"
      continue
    fi
    echo "[$i/$total] $name ... FAILED ($((SECONDS - t0)) s)" >&2
    [[ -f $partial ]] || die "$name failed before papermill wrote $partial (see above)"
    print_cell_error "$partial" >&2 ||
      echo "(no cell error recorded; see papermill's output above)" >&2
    die "$name failed; partly executed notebook: $partial"
  done
  python -m reuse.report --results "$summary_root" --out "$summary_root/SUMMARY.md"
  echo "Ran $total notebook(s); total wall time $SECONDS s; summary: $summary_root/SUMMARY.md"
}

if ((setup_only)); then
  setup_env
  check_data
  exit 0
fi
select_notebooks
check_set_names
if ((dry_run)); then
  print_commands
  exit 0
fi
setup_env
check_data
run_notebooks
