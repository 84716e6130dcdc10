"""Stage 2's pseudo-labels: masks matched one-to-one to caption entities, kept when every scale agrees.

At each input scale, a mask's region embedding (the frozen dense features pooled inside it) is compared with each
entity's text embedding; the Hungarian algorithm (scipy's ``linear_sum_assignment``) pairs masks and entities so that
the summed similarity is largest. A pair's confidence is the softmax over the image's masks of the entity's scaled
similarities, taken at the matched mask: how clearly this mask, rather than another, is the entity's. A pair becomes
a pseudo-label only when every scale matches the same mask to the entity with at least the threshold confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def match(similarity: np.ndarray) -> list[tuple[int, int]]:
    """[M, E] similarities -> the (mask, entity) pairs of the largest-total one-to-one matching, by entity."""
    if similarity.size == 0:
        return []
    masks, entities = linear_sum_assignment(similarity, maximize=True)
    return sorted(zip(masks.tolist(), entities.tolist(), strict=True), key=lambda pair: pair[1])


def confidence(similarity: np.ndarray, logit_scale: float) -> np.ndarray:
    """[M, E] -> [M, E]: for each entity, the softmax over masks of logit_scale x similarity."""
    scaled = logit_scale * similarity.astype(np.float64)
    scaled -= scaled.max(axis=0, keepdims=True)
    weights = np.exp(scaled)
    return weights / weights.sum(axis=0, keepdims=True)


def agreeing_pairs(similarities: Sequence[np.ndarray], logit_scale: float, threshold: float) -> list[tuple[int, int]]:
    """The (mask, entity) pairs matched alike at every scale (one [M, E] similarity per scale) with confidence at
    least ``threshold`` at each."""
    kept: set[tuple[int, int]] | None = None
    for similarity in similarities:
        sure = confidence(similarity, logit_scale)
        pairs = {(m, e) for m, e in match(similarity) if sure[m, e] >= threshold}
        kept = pairs if kept is None else kept & pairs
    return sorted(kept or set(), key=lambda pair: pair[1])
