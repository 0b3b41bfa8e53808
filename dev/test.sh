#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run every test:
# unit tests, the real-process federation, and the Docker Compose end-to-end run.
#
#   ./dev/test.sh                 everything (what CI runs); the unit tier under coverage
#   ./dev/test.sh -m "not docker" skip the image builds (extra args go to pytest as they
#                                 are: add --cov for coverage)
set -euo pipefail
cd "$(dirname "$0")/.."
./dev/setup.sh all
.venv/bin/ruff check .
.venv/bin/mypy
if [ $# -gt 0 ]; then
  exec .venv/bin/pytest -ra "$@"
fi
# The unit tier under coverage (settings in pyproject.toml; its total is printed), then
# the other tiers without: their code runs in the servers and devices they start, which
# coverage does not follow, so there it would cost time and measure nothing.
# Both tiers always run (a unit failure must not hide the others' results); the exit
# code is the first non-zero one.
status=0
.venv/bin/pytest -ra -m "not integration and not docker and not fleet" --cov \
    --cov-report=term || status=$?
.venv/bin/pytest -ra -m "integration or docker or fleet" || { rc=$?; [ "$status" -ne 0 ] || status=$rc; }
exit "$status"
