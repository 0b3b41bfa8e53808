#!/usr/bin/env bash
# The test command: set up (idempotent), then lint, type-check and run every test:
# unit tests, the real-process federation, and the Docker Compose end-to-end run.
#
#   ./dev/test.sh                 everything (what CI runs)
#   ./dev/test.sh -m "not docker" skip the image builds (extra args go to pytest)
set -euo pipefail
cd "$(dirname "$0")/.."
./dev/setup.sh all
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest -ra "$@"
