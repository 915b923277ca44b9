"""Runs rpg's ONNX exports in ONNX Runtime and compares with rpg's logits.

Usage: check_onnxruntime.py DIR [DIR...]

Each DIR holds model.onnx (written by `rpg export`), input.bin and
logits.bin (little-endian f32, written by the onnx_fixtures example) and
shapes.json. The whole batch and its first image alone (the batch dimension
is dynamic), with ONNX Runtime's graph optimisations off and on, must give rpg's logits within 1e-4 of the largest logit (at
least 1e-4 absolute). Where DIR also holds model.int8.onnx (rpg's int8 QDQ
export) and logits_int8.bin (rpg's interpreter running it), ONNX Runtime
must run it on its integer kernels (QLinearConv or QGemm after its optimisations)
and agree with rpg: within INT8_TOLERANCE of the largest logit, which
allows the one-code differences that rounding in a different order makes
inside the network. Exits 1 if any model does not.
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


# Largest |ORT - rpg| on the int8 graph, as a share of the largest logit.
# Measured on the fixtures (ONNX Runtime 1.32, AVX-512 VNNI): LeNet-5 1e-7,
# the ResNets 0.7%, MobileNetV2 2.4% on the integer kernels (0.4% as
# written; `cargo xtask onnx-check`, 2026-12-03): a code that rounds the other way early in a deep net moves the
# logits by a few output steps. A wrong scale, axis or zero point moves
# them by far more.
INT8_TOLERANCE = 0.03

# Without VNNI, ONNX Runtime's uint8 x int8 kernels add products in pairs
# into 16 bits (vpmaddubsw), which saturates where activation and weight
# codes are both near their ends; its own quantizer offers 7-bit weights
# (reduce_range) for such machines. There the integer kernels are allowed
# this much instead; the graph as written (float QDQ) is held to the above.
INT8_TOLERANCE_NO_VNNI = 0.10


def has_vnni() -> bool:
    try:
        flags = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def check_int8(folder: pathlib.Path) -> bool:
    shapes = json.loads((folder / "shapes.json").read_text())
    x = np.fromfile(folder / "input.bin", dtype="<f4").reshape(shapes["input"])
    want = np.fromfile(folder / "logits_int8.bin", dtype="<f4").reshape(shapes["logits"])
    scale = max(1.0, float(np.abs(want).max()))
    diffs, ok = [], True
    for level in [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        # Saving the optimised graph warns that it is machine specific.
        options.log_severity_level = 3
        if level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
            optimized = folder / "model.int8.optimized.onnx"
            options.optimized_model_filepath = str(optimized)
        session = ort.InferenceSession(str(folder / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
        (name,) = [i.name for i in session.get_inputs()]
        got = session.run(None, {name: x})[0]
        ok = ok and got.shape == want.shape
        diffs.append(float(np.abs(got - want).max()))
    # Integer kernels, not float QDQ emulation, ran (LeNet-5's convs read
    # too few channels for int8 and stay f32; its fully connected layers
    # are QGemm).
    graph = optimized.read_bytes()
    integer = any(op in graph for op in [b"QLinearConv", b"QGemm"])
    vnni = has_vnni()
    allowed = INT8_TOLERANCE if vnni else INT8_TOLERANCE_NO_VNNI
    ok = ok and integer and diffs[0] <= INT8_TOLERANCE * scale and diffs[1] <= allowed * scale
    print(
        f"{folder.name + ' int8':<14} max |ORT - rpg| {diffs[0]:.2e} as written, {diffs[1]:.2e} on "
        f"{'integer kernels' if integer else 'NO integer kernels'}{'' if vnni else ' (no VNNI)'} "
        f"(largest logit {scale:.3g})  {'ok' if ok else 'FAIL'}"
    )
    return ok


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"ONNX Runtime {ort.__version__}")
    results = [check(pathlib.Path(d)) for d in sys.argv[1:]]
    results += [
        check_int8(pathlib.Path(d)) for d in sys.argv[1:] if (pathlib.Path(d) / "model.int8.onnx").exists()
    ]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
