"""Noun prompts for the multi-label loss, offline, with GroupViT's selection rule."""

from __future__ import annotations

import gzip
import random
from importlib import resources

import pytest

from mixreorg.data.nouns import extract_nouns, make_word_prompts
from mixreorg.data.templates import FULL_TEMPLATES, SIMPLE_TEMPLATES, SUBSET_TEMPLATES


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a red star and a striped circle on sand", ["star", "circle", "sand"]),
        ("photo of a blue heart lying on grass", ["photo", "heart", "lying", "grass"]),
        ("A man is riding a horse in the desert", ["man", "riding", "horse", "desert"]),
        ("a black and white photo of an old church in Paris", ["photo", "church", "Paris"]),
        ("the sky is blue", ["sky"]),
        ("close-up of fresh tomatoes on a wooden table", ["close-up", "tomatoes", "table"]),
        ("a woman holds an umbrella while walking through the rain",
         ["woman", "holds", "umbrella", "walking", "rain"]),
        ("<PERSON> smiles at the camera", ["PERSON", "smiles", "camera"]),
        ("a red star and a blue star", ["star", "star"]),  # duplicates kept, as in GroupViT's word list
        ("very quickly and slowly", []),
    ],
)
def test_extract_nouns_and_verbs(caption, expected):
    assert extract_nouns(caption) == expected


def make_prompts(caption: str, rng: random.Random, k: int = 3) -> list[str]:
    return [prompt for _, prompt in make_word_prompts(caption, rng, k)]


def test_make_prompts_follows_groupvit_rule():
    caption = "a dog running on the beach near a lighthouse"
    words = extract_nouns(caption)
    assert words == ["dog", "running", "beach", "lighthouse"]
    seen_words, seen_templates = set(), set()
    for seed in range(200):
        prompts = make_prompts(caption, random.Random(seed), k=3)
        assert len(prompts) == 3
        chosen = []
        for prompt in prompts:
            matches = [(t, w) for t in FULL_TEMPLATES for w in words if t.format(w) == prompt]
            assert matches, prompt
            seen_templates.add(matches[0][0])
            chosen.append(matches[0][1])
        assert len(set(chosen)) == 3  # without replacement
        seen_words.update(chosen)
    assert seen_words == set(words) and len(seen_templates) > 60
    assert make_prompts(caption, random.Random(5)) == make_prompts(caption, random.Random(5))
    # Each prompt comes with the word written into it, lower-cased.
    for word, prompt in make_word_prompts("A Dog near a Lighthouse", random.Random(1), k=2):
        assert word in {"dog", "lighthouse"} and prompt in {t.format(word.title()) for t in FULL_TEMPLATES}


def test_short_captions_are_padded_with_the_caption():
    prompts = make_prompts("the sky is blue", random.Random(0), k=3)
    assert prompts[1:] == ["the sky is blue", "the sky is blue"]
    assert prompts[0] in {t.format("sky") for t in FULL_TEMPLATES}
    assert make_prompts("very quickly", random.Random(0), k=2) == ["very quickly", "very quickly"]
    assert make_prompts("a dog", random.Random(0), k=0) == []
    assert [word for word, _ in make_word_prompts("the sky is blue", random.Random(0), k=3)] == ["sky", None, None]


def test_templates_are_the_published_sets():
    assert len(FULL_TEMPLATES) == 80 and len(set(FULL_TEMPLATES)) == 80
    assert len(SUBSET_TEMPLATES) == 7 and set(SUBSET_TEMPLATES) <= set(FULL_TEMPLATES)
    assert SIMPLE_TEMPLATES == ("a photo of a {}.",)
    assert all(t.count("{}") == 1 for t in FULL_TEMPLATES)


def test_lexicon_ships_inside_the_package():
    raw = resources.files("mixreorg.data").joinpath("resources", "english_pos_lexicon.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode().splitlines()
    assert lines[0].startswith("# English part-of-speech lexicon") and "lemminflect" in lines[0]
    table = dict(line.split("\t") for line in lines if not line.startswith("#"))
    assert len(table) > 50000
    assert table["dog"].startswith("N") and "V" in table["running"] and table["quickly"] == "R"
