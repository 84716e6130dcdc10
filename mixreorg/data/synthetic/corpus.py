"""Writing a synthetic corpus: webdataset training shards with captions, a labelled evaluation set, and (for
Unpair-Seg's first stage) image-mask shards with every object instance's and background region's exact mask and no
caption, drawn from a sample stream of their own (split "masks"), so they share no image with the other splits.

A world is a scene drawer plus its class list: ``appearance`` (animals known by their coats; the one the tiny
models learn, the default) or ``shapes`` (outlines; the hard variant, byte-identical to the corpus written
before worlds existed). Each sample is drawn from its own seed sequence (seed, split, index), so output is
byte-identical for a seed and any subset can be redrawn.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixreorg.data.shards import atomic_output_dir, write_shards
from mixreorg.data.synthetic import appearance, shapes
from mixreorg.data.verify import write_manifest
from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar


@dataclass(frozen=True)
class World:
    name: str
    classes: tuple[str, ...]
    objects: tuple[str, ...]  # the object classes; the rest are backgrounds
    palette: tuple[tuple[int, int, int], ...]
    render: Callable[[np.random.Generator, int], tuple[Image.Image, np.ndarray, str, dict]]
    # render's outputs plus the instance map, from the same draws
    draw: Callable[[np.random.Generator, int], tuple[Image.Image, np.ndarray, str, dict, np.ndarray]]


WORLDS = {
    "appearance": World("appearance", appearance.CLASSES, appearance.ANIMALS, appearance.PALETTE,
                        appearance.render_scene, appearance.draw_scene),
    "shapes": World("shapes", shapes.CLASSES, shapes.SHAPES, shapes.PALETTE, shapes.render_scene, shapes.draw_scene),
}
SPLITS = {"train": 0, "eval": 1, "masks": 2}
DEFAULT_WORLD = "appearance"


def get_world(name: str) -> World:
    if name not in WORLDS:
        raise MixreorgError(f"unknown synthetic world '{name}'; choose one of: {', '.join(WORLDS)}")
    return WORLDS[name]


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one sample: independent of every other sample, so any subset can be redrawn."""
    return np.random.default_rng([seed, SPLITS[split], index])


def _draw_train_sample(job: tuple[str, int, int, int]) -> dict:
    """One training sample as shard fields; a top-level function so worker processes can run it."""
    world, seed, index, image_size = job
    image, _, caption, meta = WORLDS[world].render(sample_rng(seed, "train", index), image_size)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return {"__key__": f"{index:09d}", "jpg": buffer.getvalue(), "txt": caption, "json": meta}


def scene_masks(labels: np.ndarray, instances: np.ndarray, meta: dict) -> tuple[list, list]:
    """(masks, names): each drawn object's visible pixels, then each background's pixels outside the objects."""
    objects = [(instances == number, obj.get("name", obj.get("shape")))
               for number, obj in enumerate(meta["objects"], 1)]
    ground = [((labels == b["class_id"]) & (instances == 0), b["name"]) for b in meta["backgrounds"]]
    kept = [(mask, name) for mask, name in objects + ground if mask.any()]
    return [mask for mask, _ in kept], [name for _, name in kept]


def _draw_mask_sample(job: tuple[str, int, int, int]) -> dict:
    """One image-mask sample as shard fields: the JPEG and its SA-1B-style record (no caption)."""
    from mixreorg.data.masks.records import mask_record

    world, seed, index, image_size = job
    drawer = WORLDS[world]
    image, labels, _, meta, instances = drawer.draw(sample_rng(seed, "masks", index), image_size)
    masks, names = scene_masks(labels, instances, meta)
    objects = set(drawer.objects)
    record = mask_record(masks, index, f"{index:09d}.jpg", category=names,
                         is_object=[name in objects for name in names])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return {"__key__": f"{index:09d}", "jpg": buffer.getvalue(), "json": record}


def _train_samples(world: str, train_size: int, image_size: int, seed: int, workers: int, progress,
                   draw: Callable[[tuple[str, int, int, int]], dict] = _draw_train_sample):
    """The samples in index order, drawn by ``workers`` processes (the output does not depend on it)."""
    jobs = ((world, seed, index, image_size) for index in range(train_size))
    if workers <= 1:
        for sample in map(draw, jobs):
            progress.update(1)
            yield sample
        return
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for sample in pool.imap(draw, jobs, chunksize=32):
            progress.update(1)
            yield sample


def generate_corpus(
    out: str | Path,
    train_size: int = 10000,
    eval_size: int = 500,
    image_size: int = 96,
    seed: int = 0,
    shard_size: int = 1000,
    world: str = DEFAULT_WORLD,
    workers: int = 1,
    mask_size: int = 0,
) -> dict:
    """Write train shards (+ manifest), the evaluation set and ``mask_size`` image-mask samples (in ``masks/``,
    + manifest) under ``out``, atomically; returns a summary.

    ``workers`` processes draw the training images; the bytes written are the same for any number of them.
    """
    drawer = get_world(world)
    if train_size < 1 or eval_size < 0 or shard_size < 1 or mask_size < 0:
        raise MixreorgError("--train-size and --shard-size must be at least 1, --eval-size and --mask-size at least 0")
    if image_size < 32:
        raise MixreorgError(f"--image-size {image_size} is too small to draw recognisable objects; use 32 or more")
    start = time.perf_counter()
    with (
        atomic_output_dir(out) as tmp,
        progress_bar(total=train_size + eval_size + mask_size, desc="synth", unit="img") as progress,
    ):
        samples = _train_samples(world, train_size, image_size, seed, workers, progress)
        shards = write_shards(samples, tmp / "train", shard_size)
        write_manifest(tmp / "train" / "manifest.json", shards)
        (tmp / "eval" / "images").mkdir(parents=True)
        (tmp / "eval" / "annotations").mkdir()
        for index in range(eval_size):
            image, labels, _, _ = drawer.render(sample_rng(seed, "eval", index), image_size)
            image.save(tmp / "eval" / "images" / f"{index:06d}.png")
            Image.fromarray(labels).save(tmp / "eval" / "annotations" / f"{index:06d}.png")
            progress.update(1)
        classes = {"classes": list(drawer.classes), "palette": [list(c) for c in drawer.palette],
                   "has_background": False, "ignore_index": 255, "num_images": eval_size,
                   "objects": list(drawer.objects)}
        (tmp / "eval" / "classes.json").write_text(json.dumps(classes, indent=1) + "\n")
        # The same names one per line: what `mixreorg segment --labels-file` reads.
        (tmp / "eval" / "classes.txt").write_text("\n".join(classes["classes"]) + "\n")
        settings = {"generator": "mixreorg data synth", "world": world, "seed": seed, "train_size": train_size,
                    "eval_size": eval_size, "image_size": image_size, "shard_size": shard_size}
        if mask_size:
            samples = _train_samples(world, mask_size, image_size, seed, workers, progress, _draw_mask_sample)
            mask_shards = write_shards(samples, tmp / "masks", shard_size)
            write_manifest(tmp / "masks" / "manifest.json", mask_shards)
            settings["mask_size"] = mask_size
        (tmp / "synth.json").write_text(json.dumps(settings, indent=1) + "\n")
    seconds = time.perf_counter() - start
    return {"out": str(out), "world": world, "train_shards": len(shards), "train_samples": train_size,
            "eval_images": eval_size, "mask_samples": mask_size, "seconds": seconds,
            "images_per_second": (train_size + eval_size + mask_size) / max(seconds, 1e-9)}
