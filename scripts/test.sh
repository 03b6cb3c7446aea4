#!/usr/bin/env bash
# The test command the README gives: lint, type-check and the test suite (all but the tests
# that need torchvision/timm, which scripts/test-vision.sh runs in their own environment).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests benchmarks examples
ruff format --check src tests benchmarks examples
mypy src
# -n 2: the tests run in two worker processes, each replaced by pytest-xdist if it dies, so a test
# that crashes the interpreter (a native kernel's abort or segfault) fails alone, named, and
# the summary still prints.
python -m pytest -q -n 2 -m "not vision" "$@"
# The docstring examples; the Ultralytics module imports torchvision, which this environment
# lacks (scripts/test-vision.sh tests it).
python -m pytest -q --doctest-modules src/bls --ignore=src/bls/integrations/ultralytics.py
