"""Runs rpg's ONNX exports in ONNX Runtime and compares with rpg's logits.

Usage: check_onnxruntime.py DIR [DIR...]

Each DIR holds model.onnx (written by `rpg export`), input.bin and
logits.bin (little-endian f32, written by the onnx_fixtures example) and
shapes.json. The whole batch and its first image alone (the batch dimension
is dynamic), with ONNX Runtime's graph optimisations off and on, must give rpg's logits within 1e-4 of the largest logit (at
least 1e-4 absolute). Exits 1 if any model does not.
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort


def check(folder: pathlib.Path) -> bool:
    shapes = json.loads((folder / "shapes.json").read_text())
    x = np.fromfile(folder / "input.bin", dtype="<f4").reshape(shapes["input"])
    want = np.fromfile(folder / "logits.bin", dtype="<f4").reshape(shapes["logits"])
    scale = max(1.0, float(np.abs(want).max()))
    diff, ok = 0.0, True
    # The graph as written (this checks our export), and as ONNX Runtime
    # rewrites it by default (what users run).
    for level in [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        meta = session.get_modelmeta().custom_metadata_map
        (name,) = [i.name for i in session.get_inputs()]
        batch = session.run(None, {name: x})[0]
        single = session.run(None, {name: x[:1]})[0]
        ok = ok and batch.shape == want.shape
        diff = max(diff, float(np.abs(batch - want).max()), float(np.abs(single - want[:1]).max()))
    ok = ok and diff <= 1e-4 * scale
    print(
        f"{folder.name:<14} {meta.get('model', '?'):<14} input {str(list(x.shape)):<18} "
        f"max |ORT - rpg| {diff:.2e} (largest logit {scale:.3g})  {'ok' if ok else 'FAIL'}"
    )
    return ok


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"ONNX Runtime {ort.__version__}")
    results = [check(pathlib.Path(d)) for d in sys.argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
