#!/usr/bin/env bash
# One call checks a GPU machine (docs/cuda.md): unpacks the CUDA build of
# rpg, runs `rpg selftest` (every CUDA op and one training step of every zoo
# model against the CPU), `rpg bench` and PyTorch's same benchmark in the
# same call, prints ours / PyTorch per row, and runs the main job. Every
# step has its own timeout; a failed step is reported and the rest still
# run. Everything lands in $OUT (default: ./gpu-bundle-out).
#
#   bash run.sh [DEVICE]        DEVICE: cuda (default), cuda:N, or cpu (to test the plumbing)
#
# Environment: OUT (results), DATA_DIR (MNIST for the main job; default
# datasets/mnist), QUICK=1 (one small model, few steps: a plumbing check),
# RPG (an unpacked rpg binary to use instead of rpg.xz).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
device="${1:-cuda}"
out="${OUT:-$PWD/gpu-bundle-out}"
data="${DATA_DIR:-datasets/mnist}"
mkdir -p "$out"
failed=()
# Beside this script in a bundle; in the repository, where it is kept.
pytorch="$here/train_step.py"
[ -f "$pytorch" ] || pytorch="$here/../../benches/pytorch/train_step.py"
compare="$(dirname "$pytorch")/compare.py"

step() { # step NAME SECONDS CMD...: runs CMD with a timeout, logs to $out/NAME.log
    local name="$1" seconds="$2"; shift 2
    echo "== $name (at most ${seconds}s)"
    local start=$SECONDS
    if timeout "$seconds" "$@" > "$out/$name.out" 2> "$out/$name.log"; then
        echo "   ok in $((SECONDS - start))s"
    else
        echo "   FAILED (exit $?) after $((SECONDS - start))s: $(tail -n 3 "$out/$name.log" | tr '\n' ' ')"
        failed+=("$name")
    fi
}

# The CUDA and cuDNN libraries of the machine (CUDA 13.0 runtime, cuDNN 9).
for dir in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

if [ -n "${RPG:-}" ]; then
    rpg="$RPG"
else
    rpg="$out/rpg"
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$here/rpg.xz" "$rpg" && chmod +x "$rpg" || { echo "cannot unpack $here/rpg.xz"; exit 1; }
fi
"$rpg" --version > "$out/version.txt" 2>&1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.csv" 2>&1
python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' > "$out/torch.txt" 2>&1

if [ "${QUICK:-0}" = 1 ]; then
    models=(--model lenet5); steps=2; train=(--epochs 1 --train-limit 512 --test-limit 512)
    pt_models=(--model lenet5)
else
    models=(); steps=20; train=()
    pt_models=()
fi

step selftest 240 "$rpg" selftest --device "$device" --json "${models[@]}"
step rpg_bench 240 "$rpg" bench --device "$device" --steps "$steps" --json "${models[@]}"
step pytorch_bench 240 python3 "$pytorch" --device "${device%%:*}" --steps "$steps" "${pt_models[@]}"
step compare 30 python3 "$compare" "$out/rpg_bench.out" "$out/pytorch_bench.out"
step main_job 300 "$rpg" train --device "$device" --data-dir "$data" --out "$out/main-job" "${train[@]}"

cat "$out/compare.out" 2> /dev/null
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]} (logs in $out)"
    exit 1
fi
echo "all steps passed; results in $out"
