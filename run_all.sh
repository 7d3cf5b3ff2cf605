#!/usr/bin/env bash
# Set up the Python environment, then run every notebook with papermill:
#   ./run_all.sh [options]   is   python -m reuse run [options]   in that environment.
# ./run_all.sh --help lists the options (reuse/study/publishing/batch.py).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "run_all.sh: error: $*" >&2; exit 1; }
imports_reuse() { (cd / && "$1" -c 'import reuse') >/dev/null 2>&1; }  # from /: not the checkout
# a .venv made before a requirement was added lacks it: then the set-up runs again (pip keeps what
# is there). Every distribution named in requirements.txt and requirements-nodeps.lock must be installed,
# and this one as cnn-reuse (a .venv from before the rename has it as reuse, without the command).
has_packages() {
  "$1" -c 'import importlib.metadata as m, re, sys
m.distribution("cnn-reuse")
for path in sys.argv[1:]:
    for line in open(path):
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line.split("#")[0].strip())
        if name:
            m.distribution(name.group())' "$REPO/requirements.txt" "$REPO/requirements-nodeps.lock" >/dev/null 2>&1
}
NODEPS=(--no-deps --only-binary :all: --require-hashes -r requirements-nodeps.lock)  # facenet-pytorch's weights

# One set-up at a time: two run_all.sh (or run_tests.sh) started together would build one
# .venv and install one kernelspec at once. flock(1) is util-linux; without it, no lock.
LOCK=$REPO/.venv.lock
[[ -L $LOCK ]] && die "$LOCK is a symbolic link: refused (remove it)"
if command -v flock >/dev/null && { exec 9>>"$LOCK"; } 2>/dev/null; then  # a read-only checkout: no lock
  flock -n 9 || { echo "Waiting for another set-up to finish ($LOCK)"; flock 9; }
fi
# An active environment that imports reuse is used as it is; else .venv is made once.
if [[ -n ${VIRTUAL_ENV:-}${CONDA_PREFIX:-} ]] && imports_reuse python; then
  echo "Using the active environment $(python -c 'import sys; print(sys.prefix)')"
else
  if ! { [[ -x $REPO/.venv/bin/python ]] && imports_reuse "$REPO/.venv/bin/python" && has_packages "$REPO/.venv/bin/python"; }; then
    # requirements.lock pins every package with its hashes for the platform it was compiled
    # on, Linux x86_64 with Python 3.11 (docs/maintaining.md, "A pinned environment"); anywhere else, or
    # with REUSE_NO_LOCK=1 (e.g. a GPU machine's own torch), requirements.txt's floors.
    [[ ${REUSE_NO_LOCK:-0} == [01] ]] ||
      die "REUSE_NO_LOCK=${REUSE_NO_LOCK}: use 1 (install requirements.txt's floors) or 0 (the lock where it fits)"
    python3 -m venv "$REPO/.venv" ||
      die "python3 -m venv failed; on Debian/Ubuntu: sudo apt-get install python3-venv"
    # torch's Linux x86_64 wheels bring its CUDA libraries: about 6 GB in .venv, and as much
    # again while pip downloads them. Say so up front rather than fail half-way with ENOSPC.
    free_gb=$(df -Pk "$REPO" | awk 'NR == 2 {print int($4 / 1048576)}')
    ((free_gb >= 10)) ||
      echo "run_all.sh: warning: ${free_gb} GB free under $REPO; setting up .venv needs about 10 GB" >&2
    lock_fits='import platform as p, sys; sys.exit((p.system(), p.machine(), sys.version_info[:2]) != ("Linux", "x86_64", (3, 11)))'
    if [[ -f $REPO/requirements.lock && ${REUSE_NO_LOCK:-0} == 0 ]] && "$REPO/.venv/bin/python" -c "$lock_fits"; then
      echo "Setting up $REPO/.venv: pip install -r requirements.lock, then -e . (a few minutes, once)"
      # --no-compile: Python compiles a module on its first import instead of pip compiling
      # every file of every package (torch's thousands): 51 s instead of 90 s here, measured.
      # --no-cache-dir: the wheels are installed once; a cached copy would hold ~3 GB more.
      (cd "$REPO" && .venv/bin/python -m pip install -q --no-compile --no-cache-dir --require-hashes -r requirements.lock &&
        .venv/bin/python -m pip install -q "${NODEPS[@]}" &&
        .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .) ||
        die "pip install -r requirements.lock into $REPO/.venv failed (see above; $(df -Ph "$REPO" | awk 'NR == 2 {print $4}') free; REUSE_NO_LOCK=1 uses requirements.txt)"
    else
      echo "Setting up $REPO/.venv: pip install -r requirements.txt -e . (a few minutes, once)"
      (cd "$REPO" && .venv/bin/python -m pip install -q --no-compile --no-cache-dir -r requirements.txt -e . &&
        .venv/bin/python -m pip install -q "${NODEPS[@]}") ||
        die "pip install into $REPO/.venv failed (see above; $(df -Ph "$REPO" | awk 'NR == 2 {print $4}') free)"
    fi
  fi
  # shellcheck disable=SC1091
  source "$REPO/.venv/bin/activate"
  echo "Using $REPO/.venv"
fi
# JupyterLab opens without the "Jupyter news" pop-up (jupyter/overrides.json); an
# overrides.json of your own already in the environment is kept.
lab_settings=$(python -c 'import sys; print(sys.prefix)')/share/jupyter/lab/settings
[[ -e $lab_settings/overrides.json ]] ||
  { mkdir -p "$lab_settings" && cp "$REPO/jupyter/overrides.json" "$lab_settings/"; } ||
  die "could not write $lab_settings/overrides.json"
# papermill's kernel python3 must be this environment's, not one from ~/.local: installed
# unless this environment's kernelspec already runs this python
python -c 'import json, sys; spec = f"{sys.prefix}/share/jupyter/kernels/python3/kernel.json"
sys.exit(json.load(open(spec))["argv"][0] != sys.executable)' 2>/dev/null ||
  python -m ipykernel install --sys-prefix --name python3 >/dev/null
exec 9>&-  # the set-up is done: release the lock
export JUPYTER_PREFER_ENV_PATH=1
exec python -m reuse run "$@"
