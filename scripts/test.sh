#!/usr/bin/env bash
# The test command the README gives: lint, type-check and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests
ruff format --check src tests
mypy src
python -m pytest -q "$@"
