#!/usr/bin/env bash
# Data-parallel training on one device, as run.sh's `data_parallel` step:
# the same short run (MNIST, 4,096 images, one epoch, global batch 128) as
# one process, then as ranks that torchrun would start (its variables set
# here by hand, so torchrun is not needed):
#   nccl_one_rank   one rank exchanging its gradients through NCCL
#                   (bit for bit the one process: a sum over one rank)
#   nccl_two_ranks  two ranks on the one GPU over NCCL (distinct
#                   NCCL_HOSTIDs, since NCCL refuses two ranks on one GPU
#                   of one host)
#   host_two_ranks  two ranks exchanging through host memory over TCP
# NCCL runs only on CUDA, and only with an rpg built with it. Each run's
# summary.json lands in WORK/<name>/; a table of them is printed.
#
#   bash data_parallel.sh WORK DEVICE DATA RPG_CMD...
set -uo pipefail
work="$1" device="$2" data="$3"; shift 3
rpg=("$@")
# Ranks on one GPU share it: `cuda` would mean cuda:LOCAL_RANK.
[ "$device" = cuda ] && device=cuda:0
common=(train --device "$device" --data-dir "$data" --epochs 1 --train-limit 4096 --test-limit 1000)
failed=0

# ranks NAME WORLD PORT ENV...: WORLD ranks with the global batch of 128.
ranks() {
    local name="$1" world="$2" port="$3"; shift 3
    local pids=() r
    for ((r = 0; r < world; r++)); do
        env RANK=$r WORLD_SIZE="$world" LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT="$port" \
            RPG_COLLECTIVE_TIMEOUT=30 NCCL_HOSTID="rpg-bundle-$r" "$@" \
            "${rpg[@]}" "${common[@]}" --batch-size $((128 / world)) --out "$work/$name" \
            > "$work/$name-$r.log" 2>&1 &
        pids+=($!)
    done
    local ok=1
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    if [ $ok = 1 ]; then echo "$name: ok"; else echo "$name: FAILED (see $name-*.log)"; failed=1; fi
}

"${rpg[@]}" "${common[@]}" --batch-size 128 --out "$work/one_process" > "$work/one_process.log" 2>&1 \
    && echo "one_process: ok" || { echo "one_process: FAILED"; failed=1; }
if [[ "$device" == cuda* ]] && grep -q libnccl "$work/ldd.txt" 2> /dev/null; then
    # One rank is no launch (WORLD_SIZE=1): RPG_EXCHANGE=nccl exchanges anyway.
    ranks nccl_one_rank 1 29410 RPG_EXCHANGE=nccl
    ranks nccl_two_ranks 2 29420 RPG_EXCHANGE=nccl
else
    echo "NCCL runs skipped: not on CUDA, or this rpg was built without NCCL"
fi
ranks host_two_ranks 2 29430 RPG_EXCHANGE=host

python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
print(f"{'run':16} {'test acc':>9} {'test loss':>20} {'train img/s':>12}")
for name in ["one_process", "nccl_one_rank", "nccl_two_ranks", "host_two_ranks"]:
    path = os.path.join(work, name, "summary.json")
    if not os.path.exists(path):
        continue
    s = json.load(open(path))
    print(f"{name:16} {s.get('test_accuracy', float('nan')):9.4f} {s.get('test_loss', float('nan')):20.17f} "
          f"{s.get('images_per_second', float('nan')):12.0f}")
PY
exit $failed
