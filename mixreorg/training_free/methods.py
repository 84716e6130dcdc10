"""The training-free methods: each a named change to the last transformer block of a CLIP ViT.

With q, k, v the per-head projections of the last block's input (after its first LayerNorm), d the head width and
s = d^-1/2, the block's attention weights A (rows: queries) are

    plain      softmax(s q k^T)                      CLIP as trained
    maskclip   I (each token attends only to itself)  MaskCLIP: the value path, out_proj(v)
    sclip      softmax(s q q^T) + softmax(s k k^T)   SCLIP's correlative self-attention
    clearclip  softmax(s q q^T)                      ClearCLIP's self-self attention
    naclip     softmax(s k k^T + G)                  NACLIP: key-key similarity plus a Gaussian neighbourhood prior

G[i, j] = exp(-|p_i - p_j|^2 / (2 sigma^2)) over the patch-grid positions p (sigma = 5 patches; 0 in the class
token's row and column), as NACLIP's release builds it (a unit-height Gaussian, not a normalised one).
The block's output is then x + out_proj(A v) + FFN(...) for plain, maskclip and sclip (their releases keep the
residual and the feed-forward), and out_proj(A v) alone for clearclip and naclip (both releases drop the residual
and the FFN of the last block: ClearCLIP's ``ignore_residual=True`` default, NACLIP's ``arch='reduced'``).
Facts from the authors' released code; see the README's methods table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mixreorg.errors import MixreorgError

NACLIP_SIGMA = 5.0  # NACLIP's gaussian_std (its README and test_all.sh)


@dataclass(frozen=True)
class Method:
    name: str
    attention: str  # qk | self | qq+kk | qq | kk+prior
    residual: bool  # keep the last block's residual connection
    ffn: bool  # keep the last block's feed-forward
    summary: str
    source: str  # the authors' released code the details follow
    paper: str


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("plain", "qk", True, True, "CLIP's own patch tokens (no change)", "mlfoundations/open_clip",
               "Radford et al., ICML 2021"),
        Method("maskclip", "self", True, True, "last block's value path: no query-key attention",
               "chongzhou96/MaskCLIP", "Zhou et al., ECCV 2022"),
        Method("sclip", "qq+kk", True, True, "correlative self-attention: softmax(qq^T) + softmax(kk^T)",
               "wangf3014/SCLIP", "Wang et al., ECCV 2024"),
        Method("clearclip", "qq", False, False, "q-q attention; last block without residual and FFN",
               "mc-lan/ClearCLIP", "Lan et al., ECCV 2024"),
        Method("naclip", "kk+prior", False, False,
               "k-k attention plus a Gaussian neighbourhood prior; last block without residual and FFN",
               "sinahmr/NACLIP", "Hajimiri et al., WACV 2025"),
    )
}


def get_method(name: str) -> Method:
    method = METHODS.get(str(name).lower())
    if method is None:
        raise MixreorgError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)}")
    return method


def neighbourhood_prior(grid: tuple[int, int], sigma: float = NACLIP_SIGMA, device=None,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """[1 + h*w, 1 + h*w] Gaussian of the grid distance between patches; zero for the class token (index 0)."""
    rows, cols = torch.meshgrid(torch.arange(grid[0], device=device), torch.arange(grid[1], device=device),
                                indexing="ij")
    points = torch.stack([rows.flatten(), cols.flatten()], dim=1).to(torch.float64)
    squared = torch.cdist(points, points).square()
    prior = torch.zeros(points.shape[0] + 1, points.shape[0] + 1, dtype=torch.float64, device=device)
    prior[1:, 1:] = torch.exp(-squared / (2 * sigma**2))
    return prior.to(dtype)


def attention_weights(method: Method, q: Tensor, k: Tensor, grid: tuple[int, int],
                      sigma: float = NACLIP_SIGMA) -> Tensor:
    """[B, heads, L, L] attention of ``method`` for [B, heads, L, d] queries and keys (L = 1 + grid tokens)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    if method.attention == "qk":
        return (scale * q @ k.transpose(-1, -2)).softmax(dim=-1)
    if method.attention == "self":
        eye = torch.eye(q.shape[-2], dtype=q.dtype, device=q.device)
        return eye.expand(*q.shape[:-2], -1, -1)
    if method.attention == "qq+kk":
        return (scale * q @ q.transpose(-1, -2)).softmax(dim=-1) + (scale * k @ k.transpose(-1, -2)).softmax(dim=-1)
    if method.attention == "qq":
        return (scale * q @ q.transpose(-1, -2)).softmax(dim=-1)
    if method.attention == "kk+prior":
        prior = neighbourhood_prior(grid, sigma, q.device, q.dtype)
        return (scale * k @ k.transpose(-1, -2) + prior).softmax(dim=-1)
    raise ValueError(f"unknown attention kind {method.attention!r}")


def attend(method: Method, q: Tensor, k: Tensor, v: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, heads, L, d] attention output: A v (the value path itself for maskclip, without an identity matmul)."""
    if method.attention == "self":
        return v
    return attention_weights(method, q, k, grid) @ v
