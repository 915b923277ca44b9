#!/usr/bin/env python3
"""Ours / PyTorch per row: `compare.py RPG_JSON TORCH_JSON [RPG_JSON TORCH_JSON ...]`.

Each pair is one run of `rpg bench --json` and one of `train_step.py` made
in the same call (either side may be several files, comma-separated, whose
rows are joined: `cargo xtask bench --against-pytorch` measures one model
at a time); with several runs, every run's ratio is shown and the
median is taken. Training and inference images/s, RPG / dense step time
(from the two models' steps interleaved in one process,
`paired_step_ratio`, where given), and each side's peak memory (resident
set on the CPU, allocated on a GPU; every case measured in a process of
its own), median over the runs.
"""

import json
import statistics
import sys


def rows(paths):
    return {(r["model"], r["mode"]): r for path in paths.split(",") for r in json.load(open(path))}


def main():
    files = sys.argv[1:]
    if not files or len(files) % 2:
        sys.exit("usage: compare.py RPG_JSON TORCH_JSON [RPG_JSON TORCH_JSON ...]")
    runs = [(rows(files[i]), rows(files[i + 1])) for i in range(0, len(files), 2)]
    keys = [k for k in runs[0][0] if all(k in ours and k in theirs for ours, theirs in runs)]
    version = next(iter(runs[0][1].values())).get("torch", "?")
    print(f"ours / PyTorch {version}, {len(runs)} run(s); per-run ratios in brackets")
    print(f"{'model':<16} {'mode':<6} {'batch':>5} {'train ratio':>11} {'infer ratio':>11} "
          f"{'rpg/dense step':>14}  {'train img/s ours / torch (median)':>34}  {'peak MB ours / torch':>20}")
    for key in keys:
        train = [o[key]["train_images_per_second"] / t[key]["train_images_per_second"] for o, t in runs]
        infer = [o[key]["infer_images_per_second"] / t[key]["infer_images_per_second"] for o, t in runs]
        # RPG / dense: measured with the two models' steps interleaved in
        # one process where `rpg bench` did so (the two sides then meet
        # the same machine), else from the two rows.
        overhead = [o[key].get("paired_step_ratio")
                    or o[key]["step_seconds"] / o[(key[0], "dense")]["step_seconds"]
                    for o, _ in runs if (key[0], "dense") in o]
        ours = statistics.median(o[key]["train_images_per_second"] for o, _ in runs)
        theirs = statistics.median(t[key]["train_images_per_second"] for _, t in runs)
        each = " ".join(f"{r:.2f}" for r in train)
        # On a GPU both sides report device memory (ours: held beyond what
        # the device held before the case), on the CPU the resident set.
        peak_ours = statistics.median(
            (o[key].get("peak_device_bytes") or o[key].get("peak_rss_bytes", float("nan"))) for o, _ in runs) / 1e6
        peak_theirs = statistics.median(t[key].get("peak_memory_bytes", float("nan")) for _, t in runs) / 1e6
        print(f"{key[0]:<16} {key[1]:<6} {runs[0][0][key]['batch_size']:>5} "
              f"{statistics.median(train):>11.2f} {statistics.median(infer):>11.2f} "
              f"{statistics.median(overhead) if overhead else float('nan'):>14.3f}  "
              f"{ours:>15.1f} / {theirs:<15.1f} {peak_ours:>9.0f} / {peak_theirs:<9.0f} [{each}]")


if __name__ == "__main__":
    main()
