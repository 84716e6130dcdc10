"""Our tokenizer's plain-text shortcut gives exactly open_clip's tokens, on every path."""

from __future__ import annotations

import random

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from mixreorg.data.synthetic import render_scene, sample_rng
from mixreorg.data.templates import FULL_TEMPLATES
from mixreorg.model.tokenizer import Tokenizer

AWKWARD = [
    "",
    "   ",
    "A Red STAR  and\ta striped circle\non sand ",
    "fish &amp; chips &amp;amp; more",
    "Caf\u00e9 cr\u00e8me with \u201ccurly\u201d quotes and \ufb01ne ligatures",
    "mojibake: caf\u00c3\u00a9",
    "full\uff37idth \uff21\uff22\uff23",
    "emoji \U0001f436 dog",
    "numbers 1234567 and 3.14159, punctuation!!! ?? ... (brackets) [x] {y} <z>",
    "it's the dog's ball, isn't it? we'll see; they're here",
    "line\r\nbreaks\rand\u2028separators",
    "control\x1b[31m colours \x07 bell",
    " ".join(["word"] * 100),  # longer than the context: truncated with EOT kept last
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def _corpus() -> list[str]:
    pick = random.Random(0)
    captions = [render_scene(sample_rng(0, "train", i), 32)[2] for i in range(40)]
    prompts = [pick.choice(FULL_TEMPLATES).format(word) for word in ("star", "Sand", "hot-dog", "x-ray", "o'clock")]
    return AWKWARD + captions + prompts


@pytest.mark.parametrize("context_length", [77, 16])
def test_same_tokens_as_open_clip(context_length: int) -> None:
    texts = _corpus()
    ours, reference = Tokenizer(context_length), SimpleTokenizer(context_length=context_length)
    expected = reference(texts)
    assert torch.equal(ours(texts), expected)
    assert torch.equal(ours(texts), expected)  # again, now from the per-word memo
    for text in texts:
        assert ours.encode(text) == reference.encode(text), text
