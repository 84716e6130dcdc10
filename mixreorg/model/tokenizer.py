"""CLIP's BPE tokenizer (open_clip's vocabulary and merges, shipped inside open_clip so it works offline),
with a shortcut for plain text.

open_clip cleans every string with ftfy and a double ``html.unescape`` before splitting it into words; on
printable ASCII without '&' both are the identity, yet they cost about half of the tokenizer's time, which
the training loader pays on every caption. Such text skips them, and each word's token ids are memoised.
Anything else goes through open_clip unchanged. ``tests/test_tokenizer.py`` checks both paths agree.
"""

from __future__ import annotations

import functools
import re

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import Tensor

# Printable ASCII except '&' (the only character html.unescape acts on).
_PLAIN_TEXT = re.compile(r"[ -%'-~]*")
_MAX_MEMO_WORDS = 200_000  # bounds memory on web-scale vocabularies (each loader worker holds its own)


class Tokenizer:
    """``tokenizer(texts, context_length)`` -> [N, context_length] ids: SOT + BPE + EOT, zero padded,
    truncated with EOT kept last (open_clip's convention)."""

    def __init__(self, context_length: int = 77) -> None:
        self.base = SimpleTokenizer(context_length=context_length)
        self.context_length = context_length
        self._word_ids: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without the start and end tokens."""
        if not _PLAIN_TEXT.fullmatch(text):
            return self.base.encode(text)
        ids: list[int] = []
        # ASCII letters, digits and punctuation map to themselves under CLIP's byte-to-unicode table.
        for word in self.base.pat.findall(" ".join(text.split()).lower()):
            word_ids = self._word_ids.get(word)
            if word_ids is None:
                if len(self._word_ids) >= _MAX_MEMO_WORDS:
                    self._word_ids.clear()
                word_ids = [self.base.encoder[piece] for piece in self.base.bpe(word).split(" ")]
                self._word_ids[word] = word_ids
            ids.extend(word_ids)
        return ids

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        length = context_length or self.context_length
        sot, eot = self.base.sot_token_id, self.base.eot_token_id
        rows = []
        for text in texts:
            ids = [sot, *self.encode(text)][: length - 1]
            ids.append(eot)
            rows.append(ids + [0] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(texts), length)


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int = 77) -> Tokenizer:
    return Tokenizer(context_length)


def tokenize(texts: list[str], context_length: int) -> Tensor:
    """[len(texts), context_length] token ids: SOT + BPE + EOT, zero padded, truncated with EOT kept last."""
    return get_tokenizer(context_length)(texts)
