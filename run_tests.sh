#!/usr/bin/env bash
# Set up the environment, then the tests: unit tests, fault and robustness runs, and every
# notebook at smoke scale under nbval (tests/test_notebooks.py).
# Usage: ./run_tests.sh [pytest args, e.g. -k surgery]
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
python -m pytest -q tests "$@"
echo "All tests passed in $SECONDS s"
