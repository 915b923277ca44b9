#!/usr/bin/env python3
"""PyTorch's side of `rpg bench`: the same models, step and batch sizes,
dense and RPG, so that a comparison is made in one run on one machine.

One step = zero_grad + forward + cross-entropy + backward + SGD step
(momentum 0.9, weight decay 5e-4), as `rpg bench` times it. RPG follows the
paper's sharing: every conv/linear weight except the first and the last is
generated each step from one ring (10% DoF by default) by a gather with even
sampling (`index = perm(arange(T)) % N`), random signs and a per-layer
scale; the ring gets the gradient through the gather. The method, chosen
for speed (measured on 2 CPU cores, ResNet-18-cifar at 10% DoF): one
precomputed index tensor, `index_select` then an in-place multiply by the
sign and scale for generation, autograd's `index_add_` for the ring's gradient, and
`torch.split` (not per-layer slices) to hand the weights to the modules;
RPG's step then costs little more than the dense one. Inputs are fixed
random tensors of each model's shape (as `rpg bench` uses).

Prints one JSON array: model, mode, batch_size, step_seconds (median),
train_images_per_second, infer_images_per_second, peak_memory_bytes.

    python3 benches/pytorch/train_step.py --device cuda --steps 20
"""

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_CASES = [("mlp", 128), ("lenet5", 128), ("resnet20", 128), ("resnet18_cifar", 32)]


class Mlp(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 256), nn.Linear(256, classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """A basic residual block with a 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """3x3 stem, no max-pool: ResNet-20 (16/32/64, 3 blocks a stage) and ResNet-18-cifar (64..512, 2 a stage)."""

    def __init__(self, widths, blocks, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for b in range(n):
                stage.append(Block(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def build(name):
    if name == "mlp":
        return Mlp(), (1, 28, 28)
    if name == "lenet5":
        return LeNet5(), (1, 28, 28)
    if name == "resnet20":
        return CifarResNet([16, 32, 64], [3, 3, 3]), (3, 32, 32)
    if name == "resnet18_cifar":
        return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2]), (3, 32, 32)
    sys.exit(f"unknown model {name}: expected mlp, lenet5, resnet20 or resnet18_cifar")


class Rpg:
    """The paper's sharing over a model: shared weights generated from one ring each step."""

    def __init__(self, model, dof, seed=0):
        gen = torch.Generator().manual_seed(seed)
        weights = [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]
        self.shared = [n for n, _ in weights[1:-1]]
        params = dict(model.named_parameters())
        dense = sum(p.numel() for p in params.values())
        unshared = dense - sum(params[n].numel() for n in self.shared)
        self.ring_len = max(1, round(dof * dense) - unshared)
        self.shapes = [params[n].shape for n in self.shared]
        self.sizes = [math.prod(s) for s in self.shapes]
        total = sum(math.prod(s) for s in self.shapes)
        index = torch.arange(total) % self.ring_len
        index = index[torch.randperm(total, generator=gen)]
        sign = torch.randint(0, 2, (total,), generator=gen).float() * 2 - 1
        fan_ins = [math.prod(s[1:]) for s in self.shapes]
        largest = max(fan_ins)
        scale = torch.cat([torch.full((math.prod(s),), math.sqrt(largest / f)) for s, f in zip(self.shapes, fan_ins)])
        device = next(model.parameters()).device
        coef = sign * scale
        self.index = index.to(device)
        self.coef = coef.to(device)
        self.ring = nn.Parameter(torch.randn(self.ring_len, generator=gen).mul_(math.sqrt(2.0 / largest)).to(device))
        self.unshared = {n: p for n, p in params.items() if n not in self.shared}
        # The shared weights stop being parameters: each step sets them, as
        # views of one gathered tensor, on their modules, which run as usual.
        self.modules = []
        for n in self.shared:
            module = model.get_submodule(n.rsplit(".", 1)[0])
            del module._parameters["weight"]
            self.modules.append(module)

    def parameters(self):
        return [self.ring, *self.unshared.values()]

    def generate(self):
        """One gather for every shared weight (`index_select`, whose
        backward is one `index_add_` into the ring: 32 ms for ResNet-18's
        11.2 M weights here, where a gather over an inverse table took 200),
        split into the modules' weights. `torch.split`, not one slice per layer: each slice's
        backward would write a zero-filled gradient of the whole flat
        tensor (60 of them for ResNet-18, 2.4x its dense step), the split's
        backward concatenates the pieces once."""
        # In place: the product's backward needs only `coef`, and a fresh
        # 45 MB tensor per step costs 13 ms here.
        flat = torch.index_select(self.ring, 0, self.index).mul_(self.coef)
        for module, piece, s in zip(self.modules, torch.split(flat, self.sizes), self.shapes):
            module.weight = piece.view(s)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(name, mode, batch, steps, device, dof):
    torch.manual_seed(0)
    model, shape = build(name)
    model = model.to(device)
    x = torch.randn(batch, *shape, device=device)
    y = (torch.arange(batch, device=device) % 10)
    rpg = Rpg(model, dof) if mode == "rpg" else None
    params = rpg.parameters() if rpg else list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def forward(train):
        model.train(train)
        if rpg is not None:
            rpg.generate()
        return model(x)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps + 3):
        sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(True), y)
        loss.backward()
        opt.step()
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    infer = []
    with torch.no_grad():
        for i in range(max(steps, 3) + 1):
            sync(device)
            t = time.perf_counter()
            forward(False)
            sync(device)
            if i > 0:
                infer.append(time.perf_counter() - t)
    step = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "model": name,
        "mode": mode,
        "batch_size": batch,
        "step_seconds": step,
        "train_images_per_second": batch / step,
        "infer_images_per_second": batch / statistics.median(infer),
        "peak_memory_bytes": peak,
        "steps": steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--model", action="append", help="only this model (repeatable)")
    ap.add_argument("--batch-size", type=int, help="batch size for every model (default: 128, 32 for resnet18_cifar)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps, after 3 warm-up steps (default: 20)")
    ap.add_argument("--modes", default="dense,rpg", help="dense, rpg or both (default: dense,rpg)")
    ap.add_argument("--dof", type=float, default=0.1, help="RPG DoF ratio (default: 0.1)")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--precision", choices=["default", "f32"], default="default",
                    help="default: PyTorch's (TF32 in cuDNN convs); f32: TF32 off everywhere")
    ap.add_argument("--in-process", action="store_true",
                    help="run the cases here instead of one child process each (whose peak memory is then the case's own)")
    args = ap.parse_args()
    if args.steps <= 0 or (args.batch_size is not None and args.batch_size <= 0):
        ap.error("--steps and --batch-size must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision == "f32":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(args.device)
    cases = [(m, args.batch_size or b) for m, b in DEFAULT_CASES]
    if args.model:
        defaults = dict(DEFAULT_CASES)
        cases = [(m, args.batch_size or defaults.get(m, 32)) for m in args.model]
    rows = []
    for name, batch in cases:
        for mode in args.modes.split(","):
            if args.in_process:
                row = run_case(name, mode, batch, args.steps, device, args.dof)
            else:
                # A process's peak RSS only grows: each case gets its own, as
                # `rpg bench` gives each case a child process.
                child = [sys.executable, __file__, "--in-process", "--device", args.device,
                         "--model", name, "--batch-size", str(batch), "--modes", mode,
                         "--steps", str(args.steps), "--dof", str(args.dof),
                         "--precision", args.precision]
                if args.threads:
                    child += ["--threads", str(args.threads)]
                done = subprocess.run(child, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{name} {mode}: {done.stderr.strip()}")
                (row,) = json.loads(done.stdout)
            row["torch"] = torch.__version__
            print(f"{name:>16} {mode:>5} b{batch}: {row['train_images_per_second']:.1f} train img/s, "
                  f"{row['infer_images_per_second']:.1f} infer img/s", file=sys.stderr)
            rows.append(row)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
