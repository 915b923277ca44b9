"""Markdown tables of benches/compression/run.sh's results (DIR: its OUT).

Usage: table.py DIR

Reads DIR/<dataset>-<model>/<case>/compress_report.json (and
onnxruntime.json where ONNX Runtime measured the case) and prints, per data
set and model, the quantization table, the channel pruning table and the
issue's targets with a plain verdict each.
"""

import json
import pathlib
import sys


def load(folder: pathlib.Path, name: str):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def ms(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def section(folder: pathlib.Path) -> list[str]:
    cases = {p.name: load(p, "compress_report.json") for p in folder.iterdir() if p.is_dir()}
    ort = {p.name: load(p, "onnxruntime.json") for p in folder.iterdir() if p.is_dir()}
    base = cases.get("int8")
    if base is None:
        return []
    lines = [f"### {folder.name}", ""]
    before = base["accuracy_before"]
    lines += [
        f"The trained RPG model: {pct(before)}; dense f32 safetensors {base['dense_f32_bytes']:,} bytes. "
        "Ring quantization (post-training, and after quantization-aware fine-tuning, QAT):",
        "",
        "| ring | artifact bytes | smaller than dense f32 | post-training | change | QAT | change | share of the loss QAT recovers | control: f32 fine-tuning as long, then quantized |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for bits in ["int8", "int4"]:
        ptq, qat, tuned = cases.get(bits), cases.get(f"{bits}-qat"), cases.get(f"{bits}-tuned")
        if ptq is None:
            continue
        row = f"| {bits} | {ptq['artifact_bytes']:,} | {ptq['size_ratio']:.1f}x | {pct(ptq['accuracy_after'])} | {100 * (ptq['accuracy_after'] - before):+.2f} pt"
        if qat:
            lost = before - ptq["accuracy_after"]
            gained = qat["accuracy_after"] - ptq["accuracy_after"]
            share = f"{gained / lost:.0%}" if lost > 0 else "nothing lost"
            row += f" | {pct(qat['accuracy_after'])} | {100 * (qat['accuracy_after'] - before):+.2f} pt | {share} |"
            row += f" {pct(tuned['accuracy_after'])} |" if tuned else " |"
            if bits == "int4":
                met = lost <= 0 or gained / lost >= 0.5
                verdicts.append(
                    f"QAT int4 recovers at least half of what post-training int4 loses: **{'met' if met else 'not met'}** "
                    f"(lost {100 * lost:.2f} pt, recovered {100 * gained:+.2f} pt)"
                )
        else:
            row += " | | | | |"
        lines.append(row)
    pruned = next((c for k, c in sorted(cases.items()) if k.startswith("channels-") and c), None)
    epochs = pruned["settings"]["finetune_epochs"] if pruned else 0
    qat_epochs = next((c["settings"]["finetune_epochs"] for k, c in cases.items() if k.endswith("-qat") and c), 0)
    lines[2] = lines[2].replace("QAT):", f"QAT, {qat_epochs} epochs):")
    lines += [
        "",
        "Channel pruning (groups found from the graph, per-group L1, the same share from each group), "
        f"then {epochs} epochs of fine-tuning; latency at batch 1 / 64 in ms, median of 21 alternated runs; rpg's before and after "
        "in one process, ONNX Runtime's f32 and int8 (QDQ) graphs of the same model in another:",
        "",
        "| pruned | ONNX f32 bytes | pruned, no fine-tuning | fine-tuned | rpg b1 / b64 | speed-up b64 | ORT f32 b1 / b64 | ORT int8 b1 / b64 | ORT int8 accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    o = ort.get("int8")
    if o:
        lines.append(
            f"| 0 | {base['onnx']['f32_bytes']:,} | {pct(before)} | | {ms(base['latency_before_ms'][0])} / {ms(base['latency_before_ms'][1])} | 1.00x "
            f"| {ms(o['f32_ms_b1'])} / {ms(o['f32_ms_b64'])} | {ms(o['int8_ms_b1'])} / {ms(o['int8_ms_b64'])} | {pct(o['int8_accuracy'])} |"
        )
        speed = o["f32_ms_b64"] / o["int8_ms_b64"]
        drop = 100 * (o["f32_accuracy"] - o["int8_accuracy"])
        verdicts.append(
            f"int8 QDQ in ONNX Runtime at least 1.5x the f32 graph at batch 64 within 0.5 point: "
            f"**{'met' if speed >= 1.5 and drop <= 0.5 else 'not met'}** ({speed:.2f}x, {-drop:+.2f} pt: "
            f"{pct(o['f32_accuracy'])} -> {pct(o['int8_accuracy'])})"
        )
    for ratio in ["0.25", "0.5", "0.75"]:
        c, o = cases.get(f"channels-{ratio}"), ort.get(f"channels-{ratio}")
        if c is None:
            continue
        steps = c["steps"]
        speedup = c["latency_before_ms"][1] / c["latency_after_ms"][1]
        row = (
            f"| {float(ratio):.0%} | {c['onnx']['f32_bytes']:,} | {pct(steps[0]['accuracy'])} | {pct(c['accuracy_after'])} "
            f"| {ms(c['latency_after_ms'][0])} / {ms(c['latency_after_ms'][1])} | {speedup:.2f}x"
        )
        if o:
            row += f" | {ms(o['f32_ms_b1'])} / {ms(o['f32_ms_b64'])} | {ms(o['int8_ms_b1'])} / {ms(o['int8_ms_b64'])} | {pct(o['int8_accuracy'])} |"
        else:
            row += " | | | |"
        lines.append(row)
        if ratio == "0.5" and "resnet" in folder.name:
            drop = 100 * (before - c["accuracy_after"])
            met = drop <= 1 and speedup >= 2
            verdicts.append(
                f"half the channels pruned and fine-tuned, within 1 point and at least 2x faster at batch 64: "
                f"**{'met' if met else 'not met'}** ({-drop:+.2f} pt, {speedup:.2f}x)"
            )
    lines += [""] + [f"- {v}" for v in verdicts] + [""]
    return lines


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "int8").is_dir()):
        print("\n".join(section(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
