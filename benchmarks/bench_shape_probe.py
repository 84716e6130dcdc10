"""Can the tiny image encoder learn the synthetic shapes at all? Direct supervision as an upper bound.

The learning benchmark shows the tiny models naming backgrounds but not shapes. This probe takes captions
out of the question: the image encoder (with its projector and a linear head) is trained with the true
multi-label targets (which of the 18 classes are in the scene) on freshly drawn scenes, for the same number
of steps and batch as a learning run. If it cannot tell the shapes apart under direct supervision, no
image-text loss will within that budget. A small CNN (4 conv-BN-ReLU-pool stages) is the reference for how
much data the task needs with a convolutional prior. The other probes take the tiny encoder apart:
``tiny_conv`` swaps the patch embedding for the conv stem; ``hybrid`` feeds it the CNN's first three stages
instead (so the same features that work in the CNN); ``vit_plain`` is a plain ViT of the same width and depth with
no grouping at all (mean of the patch tokens).

    python benchmarks/bench_shape_probe.py --steps 1500
    python benchmarks/bench_shape_probe.py --steps 5000 --probes tiny_patch --threads 1

Reported: shape top-1 (the image's highest-scoring shape is in it) on 300 held-out scenes, against the
constant guess of the most frequent shape, and the final training BCE. Every invocation adds its rows (one per
probe, steps and learning rate, replacing an earlier row with the same three) to
benchmarks/results/shape_probe_cpu.json and rewrites shape_probe_cpu.md from all rows.
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

from mixreorg.data.synthetic import CLASSES, PATTERNS, SHAPES, render_scene, sample_rng
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


def cnn_stages(channels: tuple[int, ...]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for channels_in, channels_out in zip((3, *channels[:-1]), channels, strict=True):
        layers += [nn.Conv2d(channels_in, channels_out, 3, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
    return layers


def small_cnn() -> nn.Sequential:
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(CLASSES))]
    return nn.Sequential(*cnn_stages((32, 64, 96, 128)), *head)


def hybrid() -> EncoderProbe:
    """The tiny encoder on the CNN's first three stages (stride 8 = the tiny patch size, 96 = its width)."""
    probe = EncoderProbe([])
    width = probe.model.cfg.vision.width
    probe.model.image_encoder.patch_embed.proj = nn.Sequential(*cnn_stages((32, 64, width)), nn.Conv2d(width, width, 1))
    return probe


class PlainViT(nn.Module):
    """A pre-norm ViT with the tiny preset's patch size, width, heads and block count, no group tokens."""

    def __init__(self) -> None:
        super().__init__()
        vision = build_model("tiny").cfg.vision
        width, depth = vision.width, vision.contextual_layers + sum(vision.depths)
        self.embed = nn.Conv2d(3, width, vision.patch_size, vision.patch_size)
        tokens = (vision.image_size // vision.patch_size) ** 2  # the preset's size, as the scenes are
        self.position = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        block = nn.TransformerEncoderLayer(
            width, vision.heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(images).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


PROBES = {
    "tiny_patch": lambda: EncoderProbe([]),
    "tiny_conv": lambda: EncoderProbe(["model.vision.stem=conv"]),
    "hybrid": hybrid,
    "vit_plain": PlainViT,
    "cnn": small_cnn,
}


SCENES = {"shapes": SHAPES, "patterns": PATTERNS}  # what objects may be; --shapes / --patterns narrow it


def scenes(split: str, start: int, count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], torch.zeros(count, len(CLASSES))
    for row, index in enumerate(range(start, start + count)):
        image, labels, _, _ = render_scene(sample_rng(PROBE_SEED, split, index), size, **SCENES)
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


def _merge(rows: list[dict], new: list[dict]) -> list[dict]:
    """Earlier rows, with any row for the same (probe, scenes, image size, steps, lr) replaced by the new one."""
    key = lambda row: (row["probe"], _scenes(row), row["image_size"], row.get("steps"), row.get("lr"))  # noqa: E731
    fresh = {key(row) for row in new}
    return [row for row in rows if key(row) not in fresh] + new


def _scenes(row: dict) -> str:
    return row.get("scenes", "all")


def scenes_label(shapes: tuple[str, ...], patterns: tuple[str, ...]) -> str:
    """'all' for the corpus's own scenes, else what was narrowed, e.g. 'circle square; plain'."""
    parts = [" ".join(shapes) if shapes != SHAPES else "", " ".join(patterns) if patterns != PATTERNS else ""]
    return "; ".join(part or "all" for part in parts) if any(parts) else "all"


def write_report(record: dict) -> str:
    """shape_probe_cpu.md from all rows of the record: the constant guess first, then the runs in order."""
    lines = [
        f"# Shape probe: direct multi-label supervision ({record['device']})",
        "",
        f"`python benchmarks/bench_shape_probe.py --steps S --probes P --lr LR --threads T` (and `--shapes` / "
        "`--patterns` where the scenes column narrows what objects may be: shapes; patterns); S steps of batch "
        f"{record['batch_size']} on fresh scenes drawn at the row's size, AdamW (weight decay 0.05, no warm-up); "
        "shape top-1 on 300 held-out scenes. Minutes depend on the threads and on what else shared the 2 cores.",
        "",
        "| probe | scenes | px | steps | lr | shape top-1 | final BCE | minutes (threads) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(record["rows"], key=lambda row: "steps" in row):  # the floor first, then runs in order
        start = f"| {row['probe']} | {_scenes(row)} | {row['image_size']} |"
        if "steps" not in row:
            lines.append(f"{start} - | - | {row['shape_top1']:.3f} | - | - |")
            continue
        lines.append(
            f"{start} {row['steps']} | {row['lr']:g} | {row['shape_top1']:.3f} | {row['final_bce']:.3f} "
            f"| {row['minutes']:.1f} ({row['threads']}) |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "shape_probe_cpu.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (weight decay 0.05)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES, help="shapes scenes may draw")
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=PATTERNS, help="object patterns")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    SCENES.update(shapes=tuple(args.shapes), patterns=tuple(args.patterns))
    scenes_name = scenes_label(SCENES["shapes"], SCENES["patterns"])
    held_out = scenes("eval", 0, 300, args.image_size)
    shape_presence = held_out[1][:, : len(SHAPES)].mean(0)
    rows = [{"probe": "constant_guess", "scenes": scenes_name, "image_size": args.image_size,
             "shape_top1": float(shape_presence.max())}]
    command = (
        f"python benchmarks/bench_shape_probe.py --steps {args.steps} --probes {' '.join(args.probes)} "
        f"--image-size {args.image_size} --lr {args.lr} --threads {args.threads}"
    )
    if scenes_name != "all":
        command += f" --shapes {' '.join(args.shapes)} --patterns {' '.join(args.patterns)}"
    for name in args.probes:
        result = run_probe(name, args.steps, args.batch_size, args.image_size, held_out, args.lr)
        print(name, {k: round(v, 3) for k, v in result.items()}, flush=True)
        rows.append({
            "probe": name, "scenes": scenes_name, "image_size": args.image_size, "steps": args.steps, "lr": args.lr,
            "threads": args.threads,
            **result,
        })
    path = RESULTS / "shape_probe_cpu.json"
    record = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    record.update(device=device_name(), batch_size=args.batch_size)
    record["rows"] = _merge(record["rows"], rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(write_report(record))
    print(command)


if __name__ == "__main__":
    main()
