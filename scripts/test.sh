#!/usr/bin/env bash
# The test command the README gives: lint, type-check and the test suite (all but the tests
# that need torchvision/timm, which scripts/test-vision.sh runs in their own environment).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy src
python -m pytest -q -m "not vision" "$@"
python -m pytest -q --doctest-modules src/bls   # the docstring examples
