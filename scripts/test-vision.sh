#!/usr/bin/env bash
# Tests that need torchvision, timm or ultralytics (the ImageNet and detection examples, the
# YOLO trainer). torchvision does not import beside the torch 2.13.0 CPU wheel, so they run in
# their own environment with torch 2.14.1 + torchvision 0.29.1 (both from the local wheel
# store; about 2 minutes and 5.5 GB the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-vision/bin/python ]; then
  python3 -m venv .venv-vision
fi
.venv-vision/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" timm "ultralytics>=8.4,<9"
.venv-vision/bin/python -m pip install -q -e ".[dev,examples]"
# Only the example tests carry the vision marker; naming the file keeps pytest from importing
# the Lightning/transformers tests, whose frameworks this environment does not install.
.venv-vision/bin/python -m pytest -q -n 1 -m vision tests/test_examples.py tests/test_detection.py tests/test_ultralytics.py "$@"
