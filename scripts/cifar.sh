#!/usr/bin/env bash
# CIFAR with dynamic data pruning, as in the BLS / SeTa research scripts.
#
#   bash scripts/cifar.sh BLS_InfoBatch 0.5          # method, prune ratio
#   bash scripts/cifar.sh BLS_SeTa 0.1 5 0.9         # method, ratio, num_group, window_scale
#   bash scripts/cifar.sh BLS_SeTa 0.1 5 0.9 --num_epoch 50 --data cifar10   # extra flags
#
# Positional: method (Full, InfoBatch, SeTa, Static, Random, BLS_InfoBatch, BLS_SeTa;
# default SeTa), ratio (0.1), num_group (5), window_scale (0.9). Flags after the fourth
# argument go to examples/cifar/main.py unchanged. Environment: DATA (cifar100), MODEL
# (resnet18), DATA_PATH (./data/$DATA), NPROC (1; more runs torchrun with DDP), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

type=${1:-SeTa}
ratio=${2:-0.1}
num_group=${3:-5}
window_scale=${4:-0.9}
if [ "$#" -gt 4 ]; then shift 4; else shift "$#"; fi

data=${DATA:-cifar100}
model=${MODEL:-resnet18}
data_path=${DATA_PATH:-./data/$data}
nproc=${NPROC:-1}
python=${PYTHON:-python3}
exp="results/$model/$data/$type/pr$ratio-ng$num_group-ws$window_scale"

if [ "$nproc" -gt 1 ]; then
    launch=("$python" -m torch.distributed.run --nproc_per_node="$nproc")
else
    launch=("$python")
fi

"${launch[@]}" examples/cifar/main.py \
    --optimizer lars --max-lr 5.2 \
    --model "$model" \
    --save_path "$exp" \
    --data "$data" \
    --data-path "$data_path" \
    --delta 0.875 \
    --prune_type "$type" \
    --ratio "$ratio" \
    --num_group "$num_group" \
    --window_scale "$window_scale" \
    "$@"
