#!/usr/bin/env bash
# ImageNet-style training of a timm model with dynamic data pruning (needs timm).
#
#   bash scripts/imagenet.sh BLS_InfoBatch mobilenetv3_small_050
#   bash scripts/imagenet.sh BLS_SeTa vit_tiny_patch16_224
#   bash scripts/imagenet.sh BLS_SeTa resnet18 0.0 0.6 5 --epochs 100   # extra flags
#
# Positional, as in the SeTa / BLS research scripts: method (default SeTa), timm model
# (resnet18), prune ratio (0.0), window_scale (0.6), num_group (5). Flags after the fifth
# argument go to examples/imagenet/main.py unchanged. Environment: DATA_PATH (a folder with
# train/<class>/ and val/<class>/, default ./data/imagenet), NPROC (GPUs, default 1),
# PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

type=${1:-SeTa}
model=${2:-resnet18}
ratio=${3:-0.0}
scale=${4:-0.6}
num_group=${5:-5}
if [ "$#" -gt 5 ]; then shift 5; else shift "$#"; fi

data_path=${DATA_PATH:-./data/imagenet}
nproc=${NPROC:-1}
python=${PYTHON:-python3}
name="./results/$model/IMNET/$type/pr$ratio-ng$num_group-ws$scale"

"$python" -m torch.distributed.run --standalone --nproc_per_node="$nproc" \
    examples/imagenet/main.py \
    --model "$model" \
    --batch-size 128 \
    --drop-path 0.0 \
    --weight-decay 0.1 \
    --num_workers 8 \
    --data-path "$data_path" \
    --no_amp \
    --epochs 300 \
    --data-set IMNET \
    --output_dir "$name" \
    --prune_type "$type" \
    --prune_ratio "$ratio" \
    --num_group "$num_group" \
    --window_scale "$scale" \
    "$@"
