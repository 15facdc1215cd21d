#!/usr/bin/env bash
# The README's test command: install the package with its test extras into the
# active Python environment, lint, check the formatting, type-check and run the whole suite.
# Arguments go to pytest: -m "not bench" leaves out the benchmark smoke tests
# (a few seconds; CI runs them, so the default keeps them).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e '.[test]'
ruff check kerno_otel plugins tests benchmarks scripts docs/examples
ruff format --check --quiet kerno_otel plugins tests benchmarks scripts docs/examples
mypy
set +e
python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating that as a failure" >&2
    exit 1
fi
exit "$rc"
