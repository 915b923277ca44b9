"""ONNX Runtime on the ONNX files `rpg compress --onnx-int8` writes: test
accuracy of model.f32.onnx and model.int8.onnx, and their latency at batch 1
and 64 (median of RUNS samples of at least SAMPLE_SECONDS each, the two
graphs sampled alternately after a warm-up, one session each with as many
threads as the machine has cores).

Usage: int8_latency.py DATA_DIR DIR [DIR...]

DATA_DIR holds the data set's t10k-images-idx3-ubyte[.gz] and
t10k-labels-idx1-ubyte[.gz] (MNIST, Fashion-MNIST); the input normalisation
comes from the files' metadata. Writes DIR/onnxruntime.json and prints one
line per DIR.
"""

import gzip
import json
import os
import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort

RUNS = 21
SAMPLE_SECONDS = 0.01


def idx(path: pathlib.Path) -> np.ndarray:
    for candidate in [path, path.with_name(path.name + ".gz")]:
        if candidate.exists():
            raw = candidate.read_bytes()
            if candidate.suffix == ".gz":
                raw = gzip.decompress(raw)
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise SystemExit(f"{path}[.gz] not found: pass the data set's directory")


def session(path: pathlib.Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def accuracy(s: ort.InferenceSession, images: np.ndarray, labels: np.ndarray) -> float:
    name = s.get_inputs()[0].name
    correct = 0
    for start in range(0, len(images), 256):
        logits = s.run(None, {name: images[start : start + 256]})[0]
        correct += int((logits.argmax(1) == labels[start : start + 256]).sum())
    return correct / len(images)


def latencies(a: ort.InferenceSession, b: ort.InferenceSession, x: np.ndarray) -> tuple[float, float]:
    """Median ms per call; each sample times enough calls to last at least
    SAMPLE_SECONDS (sub-millisecond calls alone are mostly timer noise)."""
    name = a.get_inputs()[0].name
    t = time.perf_counter()
    for _ in range(3):
        a.run(None, {name: x})
        b.run(None, {name: x})
    calls = max(1, int(SAMPLE_SECONDS / ((time.perf_counter() - t) / 6)))

    def sample(s: ort.InferenceSession) -> float:
        t = time.perf_counter()
        for _ in range(calls):
            s.run(None, {name: x})
        return (time.perf_counter() - t) / calls

    ta, tb = [], []
    for _ in range(RUNS):
        ta.append(sample(a))
        tb.append(sample(b))
    return float(np.median(ta)) * 1e3, float(np.median(tb)) * 1e3


def measure(data: pathlib.Path, folder: pathlib.Path) -> dict:
    f32, int8 = session(folder / "model.f32.onnx"), session(folder / "model.int8.onnx")
    meta = f32.get_modelmeta().custom_metadata_map
    mean = np.array([float(v) for v in meta["normalize_mean"].split(",")], dtype=np.float32)
    std = np.array([float(v) for v in meta["normalize_std"].split(",")], dtype=np.float32)
    side = int(meta["image_size"])
    images = idx(data / "t10k-images-idx3-ubyte").astype(np.float32) / 255.0
    images = images.reshape(len(images), 1, images.shape[1], images.shape[2])
    if images.shape[-1] != side:
        raise SystemExit(f"{folder}: the model takes {side}x{side} images, the data are {images.shape[-1]}")
    images = (images - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
    labels = idx(data / "t10k-labels-idx1-ubyte").astype(np.int64)
    result = {
        "onnxruntime": ort.__version__,
        "threads": os.cpu_count(),
        "f32_accuracy": accuracy(f32, images, labels),
        "int8_accuracy": accuracy(int8, images, labels),
    }
    for batch in [1, 64]:
        ms = latencies(f32, int8, np.ascontiguousarray(images[:batch]))
        result[f"f32_ms_b{batch}"], result[f"int8_ms_b{batch}"] = ms
    (folder / "onnxruntime.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    data = pathlib.Path(sys.argv[1])
    for d in sys.argv[2:]:
        r = measure(data, pathlib.Path(d))
        print(
            f"{d}: accuracy f32 {100 * r['f32_accuracy']:.2f}% int8 {100 * r['int8_accuracy']:.2f}% | "
            f"b1 {r['f32_ms_b1']:.3f} -> {r['int8_ms_b1']:.3f} ms | b64 {r['f32_ms_b64']:.2f} -> {r['int8_ms_b64']:.2f} ms "
            f"({r['f32_ms_b64'] / r['int8_ms_b64']:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
