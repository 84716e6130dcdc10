"""Noun prompts for the multi-label loss: GroupViT's rule with an offline lexicon instead of NLTK.

GroupViT tags each caption with ``nltk.pos_tag`` and keeps nouns and verbs (NN, NNS, NNP, VB*), draws
``min(3, n)`` of them without replacement, writes each into a random one of the 80 ImageNet templates and pads
with the raw caption. NLTK's tagger data cannot be downloaded on most clusters, so the tags here come from a
lexicon shipped in the package (resources/english_pos_lexicon.txt.gz, see benchmarks/tools/build_noun_lexicon.py)
plus a few context rules that stand in for the tagger:

- function words (articles, pronouns, prepositions, conjunctions, numerals) and auxiliaries (is, has, can, ...)
  are never kept; NLTK tags auxiliaries as verbs, but a prompt like "a photo of a is." teaches nothing;
- a word that can be an adjective or adverb counts as one when it modifies a following noun ("a *red* star"),
  follows a copula or degree word ("is *white*"), or is coordinated with another adjective ("black and white");
- unknown words are nouns (names, rare words, as NLTK's tagger mostly does), unless they end in "-ly".
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import random
import re
from importlib import resources

from mixreorg.data.templates import FULL_TEMPLATES

_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")
_LEXICON_FILE = "english_pos_lexicon.txt.gz"

FUNCTION_WORDS = frozenset(
    """
    a an the this that these those my your his her its our their whose which what who whom whoever whatever
    i me you he him she it we us they them myself yourself himself herself itself ourselves themselves mine
    yours hers ours theirs one ones someone something anyone anything everyone everything nobody nothing
    of in on at by for with without within from to into onto upon over under above below across along among
    around behind beside besides between beyond near through throughout toward towards via off out up down
    about against before after during since until till inside outside underneath atop amid per like unlike
    and or nor but yet so because although though while whereas if unless than as whether either neither both
    be am is are was were been being have has had having do does did doing done will would shall should can
    could may might must ought not no yes there here then now when where why how very too also just only even
    still quite rather really almost some any each every all few many much more most several such other another
    s t d ll m re ve two three four five six seven eight nine ten eleven twelve twenty hundred thousand
    """.split()
)
_COPULAS = frozenset("be am is are was were been being become becomes became look looks looked seem seems".split())
_DEGREE = frozenset("very so too quite rather really more most less least extremely pretty fairly".split())
_COORDINATORS = frozenset({"and", "or"})


@functools.lru_cache(maxsize=1)
def _lexicon() -> dict[str, str]:
    """word -> tag letters (N noun, V verb, J adjective, R adverb, X auxiliary); loaded once per process."""
    raw = resources.files("mixreorg.data").joinpath("resources", _LEXICON_FILE).read_bytes()
    table = {}
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        if line and not line.startswith("#"):
            word, tags = line.split("\t")
            table[word] = tags
    return table


def _tags(word: str, lexicon: dict[str, str]) -> str:
    if word in FUNCTION_WORDS:
        return ""
    tags = lexicon.get(word)
    if tags is None:
        return "R" if word.endswith("ly") else "N"
    return tags


def extract_nouns(caption: str) -> list[str]:
    """The caption's nouns and verbs in order (duplicates kept, as GroupViT's word list keeps them)."""
    lexicon = _lexicon()
    words = _WORD.findall(caption)
    lowered = [w.lower() for w in words]
    tags = [_tags(w, lexicon) if len(w) > 1 else "" for w in lowered]
    kept = []
    for i, word in enumerate(words):
        own = tags[i]
        if "N" not in own and "V" not in own:
            continue
        if ("J" in own or "R" in own) and _acts_as_modifier(i, lowered, tags):
            continue
        kept.append(word)
    return kept


def _acts_as_modifier(i: int, lowered: list[str], tags: list[str]) -> bool:
    following = tags[i + 1] if i + 1 < len(tags) else ""
    if "N" in following:
        return True
    if i > 0 and (lowered[i - 1] in _COPULAS or lowered[i - 1] in _DEGREE):
        return True
    if i + 2 < len(tags) and lowered[i + 1] in _COORDINATORS and "J" in tags[i + 2]:
        return True
    return False


def make_word_prompts(caption: str, rng: random.Random, k: int = 3) -> list[tuple[str | None, str]]:
    """``k`` (word, prompt) pairs: ``min(k, n)`` noun/verb positions drawn without replacement, each written into a
    random one of the 80 full templates; padded with (None, the raw caption). The word (lower-cased) lets the
    multi-label loss recognise two prompts of the same word in a batch."""
    words = extract_nouns(caption)
    chosen = rng.sample(words, min(k, len(words)))
    prompts: list[tuple[str | None, str]] = [(word.lower(), rng.choice(FULL_TEMPLATES).format(word)) for word in chosen]
    return prompts + [(None, caption)] * (k - len(prompts))


def word_id(word: str | None) -> int:
    """A stable 63-bit id for a prompt's word, equal across processes and machines; -1 for caption padding."""
    if word is None:
        return -1
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little") >> 1


# Nouns that name the picture, or a place in it ("in front of", "on top of"), rather than anything in it.
FRAME_NOUNS = frozenset({"photo", "photograph", "image", "picture", "view", "shot", "close-up", "closeup", "front",
                         "top", "bottom", "middle", "side", "left", "right", "center", "centre"})


def noun_phrases(caption: str) -> list[str]:
    """The entities a caption names, for Unpair-Seg's mask-entity matching: each run of consecutive nouns (a
    compound such as "brick wall" stays whole), lower-cased, without repeats and without words for the picture
    itself or places in it ("photo", "front"). Adjectives and verbs are left out; the same lexicon and modifier rules as
    ``extract_nouns`` decide what a word is."""
    lexicon = _lexicon()
    words = [w.lower() for w in _WORD.findall(caption)]
    tags = [_tags(w, lexicon) if len(w) > 1 else "" for w in words]
    phrases: list[str] = []
    run: list[str] = []
    for i, word in enumerate(words):
        own = tags[i]
        noun = "N" in own and not (("J" in own or "R" in own) and _acts_as_modifier(i, words, tags))
        noun = noun and not ("V" in own and word.endswith("ing"))  # "lying", "floating": the verb reading wins
        if noun and word not in FRAME_NOUNS:
            run.append(word)
            continue
        if run:
            phrases.append(" ".join(run))
        run = []
    if run:
        phrases.append(" ".join(run))
    return list(dict.fromkeys(phrases))
