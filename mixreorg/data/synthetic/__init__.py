"""The synthetic corpus: procedurally drawn scenes with captions and exact label maps, in two worlds.

``appearance`` (appearance.py): animals known by their coats on textured backgrounds, the world the tiny
models learn. ``shapes`` (shapes.py): named outlines, the hard variant. corpus.py writes either as webdataset
training shards plus a labelled evaluation set.
"""

from mixreorg.data.synthetic.backgrounds import BACKGROUNDS
from mixreorg.data.synthetic.corpus import DEFAULT_WORLD, WORLDS, World, generate_corpus, get_world, sample_rng
from mixreorg.data.synthetic.shapes import CLASSES, PALETTE, PATTERNS, SHAPES, render_scene

__all__ = [
    "BACKGROUNDS", "CLASSES", "DEFAULT_WORLD", "PALETTE", "PATTERNS", "SHAPES", "WORLDS", "World",
    "generate_corpus", "get_world", "render_scene", "sample_rng",
]
