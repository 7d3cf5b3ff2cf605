#!/usr/bin/env bash
# Unit tests, then every notebook at smoke scale under nbval.
# Usage: ./run_tests.sh [pytest args for the unit tests, e.g. -k surgery]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

./run_all.sh --setup-only  # the one setup code path
# run_all.sh kept an active environment that imports reuse, else it prepared .venv.
if ! { [[ -n ${VIRTUAL_ENV:-}${CONDA_PREFIX:-} ]] &&
       (cd / && python -c 'import reuse') 2>/dev/null; }; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
export JUPYTER_PREFER_ENV_PATH=1

echo "== unit tests"
python -m pytest -q tests "$@"

echo "== notebooks at smoke scale (nbval)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/nb"
notebooks=(notebooks/*.ipynb)
[[ -e ${notebooks[0]} ]] || { echo "run_tests.sh: error: no notebooks in notebooks/" >&2; exit 1; }
for notebook in "${notebooks[@]}"; do
  # --prepare-only injects the parameters without executing; nbval executes.
  papermill --prepare-only -k python3 --log-level WARNING -f tests/smoke_parameters.yaml \
    -r figures_dir "$tmp/figures" -r results_dir "$tmp/results" -r cache_dir "$tmp/cache" \
    "$notebook" "$tmp/nb/${notebook##*/}"
done
# No repository config applies under $tmp, hence -p no:cacheprovider here too.
python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider "$tmp/nb"

echo "All tests passed in $SECONDS s"
