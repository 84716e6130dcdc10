"""Can the tiny image encoder learn the synthetic shapes at all? Direct supervision as an upper bound.

The learning benchmark shows the tiny models naming backgrounds but not shapes. This probe takes captions
out of the question: the image encoder (with its projector and a linear head) is trained with the true
multi-label targets (which of the 18 classes are in the scene) on freshly drawn scenes, for the same number
of steps and batch as a learning run. If it cannot tell the shapes apart under direct supervision, no
image-text loss will within that budget. A small CNN (4 conv-BN-ReLU-pool stages) is the reference for how
much data the task needs with a convolutional prior; ``tiny_conv`` swaps the patch embedding for a conv stem.

    python benchmarks/bench_shape_probe.py --steps 1500

Reported: shape top-1 (the image's highest-scoring shape is in it) on 300 held-out scenes, against the
constant guess of the most frequent shape, and the final training BCE. Results: benchmarks/results/shape_probe_cpu.*
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixreorg.data.synthetic import CLASSES, SHAPES, render_scene, sample_rng
from mixreorg.data.transforms import normalize_pixels, to_pixels
from mixreorg.model import build_model
from mixreorg.utils.environment import device_name

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PROBE_SEED = 7  # scenes nobody trains on elsewhere


class EncoderProbe(nn.Module):
    """The tiny preset's image encoder and projector, with a linear multi-label head."""

    def __init__(self, overrides: list[str]) -> None:
        super().__init__()
        self.model = build_model("tiny", overrides)
        self.head = nn.Linear(self.model.cfg.projection.embed_dim, len(CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embedding, _ = self.model.encode_image(images)
        return self.head(embedding)


def small_cnn() -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels_in, channels_out in ((3, 32), (32, 64), (64, 96), (96, 128)):
        layers += [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(CLASSES)))


PROBES = {
    "tiny_patch": lambda: EncoderProbe([]),
    "tiny_conv": lambda: EncoderProbe(["model.vision.stem=conv"]),
    "cnn": small_cnn,
}


def scenes(split: str, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], torch.zeros(count, len(CLASSES))
    for row, index in enumerate(range(start, start + count)):
        image, labels, _, _ = render_scene(sample_rng(PROBE_SEED, split, index), size)
        images.append(to_pixels(image))
        targets[row, torch.from_numpy(np.unique(labels).astype(np.int64))] = 1
    return normalize_pixels(torch.stack(images)), targets


def shape_top1(logits: torch.Tensor, targets: torch.Tensor) -> float:
    best = logits[:, : len(SHAPES)].argmax(dim=1)
    return float(targets[torch.arange(len(targets)), best].mean())


def run_probe(
    name: str, steps: int, batch: int, size: int, held_out: tuple[torch.Tensor, torch.Tensor], lr: float = 1e-3
) -> dict:
    torch.manual_seed(0)
    net = PROBES[name]()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    start, curve = time.perf_counter(), []
    net.train()
    for step in range(steps):
        images, targets = scenes("train", step * batch, batch, size)
        loss = F.binary_cross_entropy_with_logits(net(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    minutes = (time.perf_counter() - start) / 60
    net.eval()
    with torch.no_grad():
        logits = net(held_out[0])
    tail = curve[-100:]
    return {"shape_top1": shape_top1(logits, held_out[1]), "final_bce": sum(tail) / len(tail), "minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (weight decay 0.05)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    held_out = scenes("eval", 0, 300, args.image_size)
    shape_presence = held_out[1][:, : len(SHAPES)].mean(0)
    results = {"constant_guess": {"shape_top1": float(shape_presence.max())}}
    for name in args.probes:
        results[name] = run_probe(name, args.steps, args.batch_size, args.image_size, held_out, args.lr)
        print(name, {k: round(v, 3) for k, v in results[name].items()}, flush=True)
    record = {
        "device": device_name(),
        "command": "python benchmarks/bench_shape_probe.py "
        f"--steps {args.steps} --threads {args.threads} --lr {args.lr}",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shape_probe_cpu.json").write_text(json.dumps(record, indent=1))
    lines = [
        f"# Shape probe: direct multi-label supervision ({record['device']})",
        "",
        f"`{record['command']}`; {args.steps} steps of batch {args.batch_size} on fresh {args.image_size} px scenes; "
        "shape top-1 on 300 held-out scenes.",
        "",
        "| probe | shape top-1 | final BCE | minutes |",
        "|---|---|---|---|",
    ]
    for name, entry in results.items():
        bce = f"{entry['final_bce']:.3f}" if "final_bce" in entry else "-"
        minutes = f"{entry['minutes']:.1f}" if "minutes" in entry else "-"
        lines.append(f"| {name} | {entry['shape_top1']:.3f} | {bce} | {minutes} |")
    (RESULTS / "shape_probe_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
