#!/usr/bin/env bash
# One call checks a GPU machine (docs/cuda.md) in about seven minutes, the
# most important results first: which libraries the CUDA build of rpg
# loads, `rpg selftest` at strict f32 (the correctness gate: every CUDA op
# and one training step of every zoo model against the CPU), the main job,
# data-parallel runs (NCCL with one and two ranks, and through the host),
# `rpg bench` and PyTorch's same benchmark with ours / PyTorch per row, and
# the selftest at TF32 (for information). Every step has its own timeout
# and the limits add up to BUDGET; a failed step is reported and the rest
# still run.
#
# Everything is written to a scratch folder, and exactly one file comes
# back: $OUT/results.tar.xz (logs, JSON, summaries; the short tables are
# also printed). GPU machines hand back only a few small files.
#
#   bash run.sh [DEVICE]        DEVICE: cuda (default), cuda:N, or cpu (to test the plumbing)
#
# Environment: OUT (where results.tar.xz goes; default ./gpu-bundle-out),
# DATA_DIR (MNIST for the main job; default datasets/mnist), QUICK=1 (one
# small model, few steps: a plumbing check), RPG (an unpacked rpg binary to
# use instead of rpg.xz), NVIDIA_ROOTS (folders holding PyTorch's nvidia/*
# wheels; default: python3's `nvidia` package).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
device="${1:-cuda}"
out="${OUT:-$PWD/gpu-bundle-out}"
data="${DATA_DIR:-datasets/mnist}"
budget=420
work="$(mktemp -d "${TMPDIR:-/tmp}/rpg-gpu-bundle.XXXXXX")"
mkdir -p "$out"
failed=()
# Beside this script in a bundle; in the repository, where it is kept.
pytorch="$here/train_step.py"
[ -f "$pytorch" ] || pytorch="$here/../../benches/pytorch/train_step.py"
compare="$(dirname "$pytorch")/compare.py"

# The one archive, written whatever happens (a step killed by the call's own
# time limit included); the binary stays behind.
pack() {
    python3 - "$work" "$out/results.tar.xz" <<'PY'
import os, sys, tarfile
work, archive = sys.argv[1], sys.argv[2]
with tarfile.open(archive + ".part", "w:xz") as tar:
    for root, _, files in os.walk(work):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, work)
            if rel == "rpg" or os.path.getsize(path) > 4 << 20:
                continue
            tar.add(path, arcname=rel)
os.replace(archive + ".part", archive)
PY
    echo "results: $out/results.tar.xz"
}
trap pack EXIT

step() { # step NAME SECONDS CMD...: runs CMD with a timeout, logs to NAME.out/.log
    local name="$1" seconds="$2"; shift 2
    echo "== $name (at most ${seconds}s)"
    local start=$SECONDS
    if timeout "$seconds" "$@" > "$work/$name.out" 2> "$work/$name.log"; then
        echo "   ok in $((SECONDS - start))s"
    else
        echo "   FAILED (exit $?) after $((SECONDS - start))s: $(tail -n 3 "$work/$name.log" | tr '\n' ' ')"
        failed+=("$name")
    fi
}

# The libraries rpg links (cuDNN, cuBLAS, cuRAND, NVRTC, the CUDA runtime):
# the machine's CUDA 13.0 and system folders first, then the CUDA 13 wheels
# PyTorch carries. Set for rpg's commands only: PyTorch loads its own.
libdirs=()
for dir in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -d "$dir" ] && libdirs+=("$dir")
done
roots="${NVIDIA_ROOTS:-$(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null)}"
while IFS= read -r root; do
    [ -n "$root" ] || continue
    for lib in "$root"/*/lib; do
        [ -d "$lib" ] && libdirs+=("$lib")
    done
done <<< "$roots"
rpg_path="$(IFS=:; echo "${libdirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "$rpg_path" | tr ':' '\n' > "$work/library-path.txt"

if [ -n "${RPG:-}" ]; then
    rpg="$RPG"
else
    rpg="$work/rpg"
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$here/rpg.xz" "$rpg" && chmod +x "$rpg" || { echo "cannot unpack $here/rpg.xz"; exit 1; }
fi
rpg_cmd=(env "LD_LIBRARY_PATH=$rpg_path" "$rpg")

# Before any step: what the binary will load, and what it cannot find.
env "LD_LIBRARY_PATH=$rpg_path" ldd "$rpg" > "$work/ldd.txt" 2>&1
grep "not found" "$work/ldd.txt" && echo "   (libraries above are missing: see ldd.txt)"
"${rpg_cmd[@]}" --version > "$work/version.txt" 2>&1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$work/gpu.csv" 2>&1
python3 -c 'import torch; print(torch.__version__, torch.version.cuda)' > "$work/torch.txt" 2>&1

if [ "${QUICK:-0}" = 1 ]; then
    models=(--model lenet5); steps=2; train=(--epochs 1 --train-limit 512 --test-limit 512)
    pt_models=(--model lenet5)
else
    models=(); steps=20; train=()
    pt_models=()
fi

# The limits below add up to at most $budget seconds (tests/gpu_bundle.rs
# checks the sum), leaving a 10-minute call time to start and pack.
step selftest_f32 110 "${rpg_cmd[@]}" selftest --device "$device" --precision f32 --json "${models[@]}"
step main_job 75 "${rpg_cmd[@]}" train --device "$device" --data-dir "$data" --out "$work/main-job" "${train[@]}"
# Data-parallel training on this one device (one process, NCCL with one
# and two ranks, two ranks through the host), as torchrun starts ranks:
# docs/distributed.md.
step data_parallel 60 bash "$here/data_parallel.sh" "$work" "$device" "$data" "${rpg_cmd[@]}"
step rpg_bench 65 "${rpg_cmd[@]}" bench --device "$device" --steps "$steps" --json "${models[@]}"
step pytorch_bench 65 python3 "$pytorch" --device "$device" --steps "$steps" "${pt_models[@]}"
step compare 10 python3 "$compare" "$work/rpg_bench.out" "$work/pytorch_bench.out"
step selftest_tf32 35 "${rpg_cmd[@]}" selftest --device "$device" --precision tf32 --json "${models[@]}"

# The short tables.
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def rows(name):
    try:
        return json.load(open(os.path.join(work, name)))
    except Exception:
        return []
for name in ("selftest_f32.out", "selftest_tf32.out"):
    bad = [f"{r['model']} {r['mode']} {r['worst']:.2e} in {r['worst_at']} (noise {r['noise']:.1e})"
           for r in rows(name) if not r["passed"]]
    print(f"{name}: {len(rows(name))} cases, {len(bad)} failed" + "".join("\n  " + b for b in bad))
for name in ("one_process", "nccl_one_rank", "nccl_two_ranks", "host_two_ranks"):
    try:
        s = json.load(open(os.path.join(work, name, "summary.json")))
        print(f"{name}: test accuracy {s['test_accuracy']:.4f}, test loss {s['test_loss']:.6f}")
    except Exception as e:
        print(f"{name}: no summary ({e})")
try:
    s = json.load(open(os.path.join(work, "main-job", "summary.json")))
    print(f"main job: test accuracy {s['test_accuracy']:.4f}, {s['epochs']} epochs, "
          f"{s['images_per_second']:.0f} img/s, {s['train_seconds']:.1f}s")
except Exception as e:
    print(f"main job: no summary ({e})")
PY
cat "$work/compare.out" 2> /dev/null
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
