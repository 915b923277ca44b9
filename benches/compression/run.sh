#!/usr/bin/env bash
# The measurements behind docs/compression.md's tables: for LeNet-5 and
# ResNet-20, RPG at 10% DoF, on MNIST (bundled) and Fashion-MNIST (Debian's
# dataset-fashion-mnist), every compression the issue asks about, each
# through `cargo xtask compress`, then ONNX Runtime on the ONNX exports
# (benches/onnx/int8_latency.py), then the tables (table.py).
#
#   bash benches/compression/run.sh            # about an hour on 2 cores
#
# Trains the four models first where OUT lacks them (cargo xtask train,
# LeNet-5 6 epochs, ResNet-20 4). Run it on an otherwise idle machine: the
# latencies are medians of 21 alternated runs, but other work still skews
# them. Each compression writes OUT/<dataset>-<model>/<case>/; a case whose
# report exists is not redone.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/compress}
EPOCHS=${FINETUNE_EPOCHS:-2}
PRUNE_EPOCHS=${PRUNE_FINETUNE_EPOCHS:-4}
LR=${FINETUNE_LR:-0.01}
FASHION=/usr/share/datasets/fashion-mnist
PYTHON=.venv-onnx/bin/python
[ -x "$PYTHON" ] || cargo xtask onnx-check --models lenet5 >/dev/null # makes the venv
[ -d "$FASHION" ] || cargo xtask data fashion-mnist

train() { # dataset model epochs
  local run="$OUT/$2-$1-rpg"
  [ -f "$run/model.safetensors" ] || [ -d "$run/checkpoints/best" ] ||
    cargo xtask train --model "$2" --dataset "$1" --dof 0.1 --epochs "$3" --out "$run"
}

compress() { # dataset model case flags...
  local run="$OUT/$2-$1-rpg" dir="$OUT/$1-$2/$3"
  shift 3
  if [ ! -f "$dir/compress_report.json" ]; then
    rm -rf "$dir"
    cargo xtask compress --checkpoint "$run" --out "$dir" "$@"
  fi
}

for dataset in mnist fashion-mnist; do
  train "$dataset" lenet5 6
  train "$dataset" resnet20 4
done
for dataset in mnist fashion-mnist; do
  data=datasets/mnist
  [ "$dataset" = mnist ] || data=$FASHION
  for model in lenet5 resnet20; do
    tune=(--finetune-epochs "$EPOCHS" --finetune-lr "$LR")
    compress "$dataset" "$model" int8 --quant int8 --onnx-int8
    compress "$dataset" "$model" int4 --quant int4
    compress "$dataset" "$model" int8-qat --quant int8 --qat "${tune[@]}"
    compress "$dataset" "$model" int4-qat --quant int4 --qat "${tune[@]}"
    # QAT's control: as much more training in full precision, then int4.
    compress "$dataset" "$model" int4-tuned --quant int4 "${tune[@]}"
    for ratio in 0.25 0.5 0.75; do
      compress "$dataset" "$model" "channels-$ratio" --prune-channels "$ratio" \
        --finetune-epochs "$PRUNE_EPOCHS" --finetune-lr "$LR" --onnx-int8
    done
    "$PYTHON" benches/onnx/int8_latency.py "$data" "$OUT/$dataset-$model"/{int8,channels-*}
  done
done
"$PYTHON" benches/compression/table.py "$OUT"
