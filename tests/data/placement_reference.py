#!/usr/bin/env python3
"""Independent reference of rpg placement version 1, written from docs/format.md.

Writes tests/data/placement_golden.json, which tests/golden.rs checks the Rust
implementation against. Never regenerate the committed file to make a failing
test pass: a difference means saved models would silently change.

    python3 tests/data/placement_reference.py > tests/data/placement_golden.json
"""
import json
import math

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


def splitmix64_first(seed):
    z = (seed + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Pcg32:
    def __init__(self, init_state, init_seq):
        self.state = 0
        self.inc = ((init_seq << 1) | 1) & M64
        self.next()
        self.state = (self.state + init_state) & M64
        self.next()

    @classmethod
    def for_stream(cls, seed, purpose, group):
        return cls(splitmix64_first(seed), (purpose << 32) | group)

    def next(self):
        old = self.state
        self.state = (old * 6364136223846793005 + self.inc) & M64
        xorshifted = (((old >> 18) ^ old) >> 27) & M32
        rot = old >> 59
        return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & M32

    def below(self, bound):
        threshold = ((1 << 32) - bound) % bound
        while True:
            word = self.next()
            if word >= threshold:
                return word % bound


INDICES, SIGNS = 1, 2
SIGN_BIT = 1 << 31


def fan_out(shape):
    if len(shape) <= 2:
        return shape[0]
    return shape[0] * math.prod(shape[2:])


def group_stream(kind, seed, group, ring, lens):
    served = sum(lens)
    if kind == "paper":
        rng = Pcg32.for_stream(seed, INDICES, group)
        stream = list(range(ring)) * (served // ring)
        rem = served % ring
        if rem:
            pool = list(range(ring))
            for k in range(rem):
                j = k + rng.below(ring - k)
                pool[k], pool[j] = pool[j], pool[k]
            stream += pool[:rem]
        for i in range(len(stream) - 1, 0, -1):
            j = rng.below(i + 1)
            stream[i], stream[j] = stream[j], stream[i]
    elif kind == "hashed":
        rng = Pcg32.for_stream(seed, INDICES, group)
        stream = [rng.below(ring) for _ in range(served)]
    elif kind == "naive":
        return [k % ring for n in lens for k in range(n)]
    elif kind == "sequential":
        return [k % ring for k in range(served)]
    signs = Pcg32.for_stream(seed, SIGNS, group)
    for start in range(0, len(stream), 32):
        word = signs.next()
        for bit in range(min(32, len(stream) - start)):
            if (word >> bit) & 1:
                stream[start + bit] |= SIGN_BIT
    return stream


def placement(kind, seed, rings, layers):
    """layers: list of (name, shape, shared, group) in registry order."""
    shared = [l for l in layers if l[2]]
    entries = {}
    for g, ring in enumerate(rings):
        mine = [l for l in shared if l[3] == g]
        lens = [math.prod(l[1]) for l in mine]
        stream = group_stream(kind, seed, g, ring, lens)
        pos = 0
        for l, n in zip(mine, lens):
            entries[l[0]] = stream[pos:pos + n]
            pos += n
    ref = max(fan_out(l[1]) for l in shared)
    scales = {l[0]: math.sqrt(ref / fan_out(l[1])) for l in shared}
    return [{"name": l[0], "entries": entries[l[0]], "scale": scales[l[0]]} for l in shared]


REGISTRIES = {
    "tiny_mlp": [("fc1.weight", [8, 4], True, 0), ("fc1.bias", [8], False, 0),
                 ("fc2.weight", [2, 8], True, 0)],
    "small_cnn": [("conv1.weight", [4, 1, 3, 3], False, 0), ("conv2.weight", [6, 4, 3, 3], True, 0),
                  ("conv3.weight", [5, 6, 1, 1], True, 0), ("fc.weight", [3, 5], True, 0)],
    "two_groups": [("a.weight", [3, 3, 3, 3], True, 0), ("b.weight", [7, 5], True, 1),
                   ("c.weight", [4, 3, 3, 3], True, 0), ("c.bias", [4], False, 0)],
}
CASES = []
for seed in (0, 1, 42):
    for reg, rings in (("tiny_mlp", [7]), ("tiny_mlp", [64]), ("small_cnn", [7]),
                       ("small_cnn", [64]), ("small_cnn", [1000]), ("two_groups", [7, 13])):
        for kind in ("paper", "hashed", "naive", "sequential"):
            CASES.append((reg, rings, seed, kind))

out = {
    "placement_version": 1,
    "registries": {k: [{"name": n, "shape": s, "shared": sh, "group": g} for n, s, sh, g in v]
                   for k, v in REGISTRIES.items()},
    "cases": [{"registry": reg, "ring_lengths": rings, "seed": seed, "placement": kind,
               "layers": placement(kind, seed, rings, REGISTRIES[reg])}
              for reg, rings, seed, kind in CASES],
}
print(json.dumps(out, separators=(",", ":")))
