"""The training-free methods on random-weight open_clip ViTs: each attention against its formula written out element
by element, the last block's composition against the methods' stated changes, plain against open_clip's own forward,
and the refusals (non-ViT towers, unknown names)."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from mixreorg.errors import MixreorgError
from mixreorg.training_free.dense import dense_features, resample_positions
from mixreorg.training_free.methods import METHODS, attention_weights, get_method, neighbourhood_prior

sys.path.insert(0, os.path.dirname(__file__))
from tiny_openclip import CUSTOM_VIT, RESNET, VIT, build  # noqa: E402


def naive_attention(method: str, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int], sigma: float = 5.0):
    """[heads, L, L] weights of one image's [heads, L, d] queries and keys, one element at a time (float64)."""
    heads, length, width = q.shape
    q, k = q.double(), k.double()
    scale = 1 / math.sqrt(width)

    def position(token):  # row, column of a patch token (token 0 is the class token)
        return divmod(token - 1, grid[1])

    def softmax(row):
        top = max(row)
        exps = [math.exp(value - top) for value in row]
        return [value / sum(exps) for value in exps]

    weights = torch.zeros(heads, length, length, dtype=torch.float64)
    for h in range(heads):
        for i in range(length):
            qq = [float(q[h, i] @ q[h, j]) * scale for j in range(length)]
            kk = [float(k[h, i] @ k[h, j]) * scale for j in range(length)]
            qk = [float(q[h, i] @ k[h, j]) * scale for j in range(length)]
            if method == "plain":
                row = softmax(qk)
            elif method == "maskclip":
                row = [1.0 if j == i else 0.0 for j in range(length)]
            elif method == "sclip":
                row = [a + b for a, b in zip(softmax(qq), softmax(kk), strict=True)]
            elif method == "clearclip":
                row = softmax(qq)
            else:  # naclip: key-key plus the Gaussian of the grid distance (none for the class token)
                prior = []
                for j in range(length):
                    if i == 0 or j == 0:
                        prior.append(0.0)
                    else:
                        (r1, c1), (r2, c2) = position(i), position(j)
                        prior.append(math.exp(-((r1 - r2) ** 2 + (c1 - c2) ** 2) / (2 * sigma**2)))
                row = softmax([a + b for a, b in zip(kk, prior, strict=True)])
            weights[h, i] = torch.tensor(row, dtype=torch.float64)
    return weights


def last_block_input(model, images):
    """The tokens open_clip's own forward hands to the last block."""
    captured = {}
    handle = model.visual.transformer.resblocks[-1].register_forward_pre_hook(
        lambda module, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        model.visual(images)
    handle.remove()
    return captured["x"]


def heads_of(block, x):
    """q, k, v [B, heads, L, d] from the block's packed input projection, sliced by hand."""
    attn = block.attn
    width = x.shape[-1]
    h = block.ln_1(x)
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = (h @ w[i * width : (i + 1) * width].t() + b[i * width : (i + 1) * width] for i in range(3))
    split = lambda t: t.reshape(*t.shape[:2], attn.num_heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    if hasattr(attn, "ln_q"):
        q, k = attn.ln_q(q), attn.ln_k(k)
    return q, k, v


@pytest.mark.parametrize("method", list(METHODS))
def test_each_attention_equals_its_formula_written_out(method):
    model = build(VIT)
    images = torch.randn(1, 3, 64, 80)  # a 4 x 5 patch grid: rows and columns cannot be confused
    grid = (4, 5)
    with torch.no_grad():
        from mixreorg.training_free.dense import embed

        x, found = embed(model.visual, images)
        for block in model.visual.transformer.resblocks[:-1]:
            x = block(x)
        q, k, _ = heads_of(model.visual.transformer.resblocks[-1], x)
    assert found == grid
    ours = attention_weights(get_method(method), q, k, grid)[0]
    torch.testing.assert_close(ours.double(), naive_attention(method, q[0], k[0], grid), atol=1e-5, rtol=1e-4)


def test_the_neighbourhood_prior_is_naclips_unit_gaussian():
    prior = neighbourhood_prior((3, 5), sigma=2.0)
    assert prior.shape == (16, 16) and prior[0].abs().sum() == 0 and prior[:, 0].abs().sum() == 0
    assert torch.allclose(prior[1:, 1:].diagonal(), torch.ones(15))  # unit height, not a normalised density
    # patch (0, 0) is token 1, patch (2, 4) is token 15: squared distance 4 + 16
    assert prior[1, 15].item() == pytest.approx(math.exp(-20 / 8))


@pytest.mark.parametrize("name", [VIT, CUSTOM_VIT])
def test_plain_dense_features_are_open_clips_own_forward(name):
    model = build(name)
    images = torch.randn(2, 3, 64, 64)
    model.visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = model.visual(images)
        ours, grid = dense_features(model.visual, images, get_method("plain"))
    assert grid == (4, 4)
    torch.testing.assert_close(ours[:, 0], pooled, atol=1e-5, rtol=1e-5)  # the class token: open_clip's embedding
    torch.testing.assert_close(ours[:, 1:], tokens @ model.visual.proj, atol=1e-5, rtol=1e-5)
    model.visual.output_tokens = False
    with torch.no_grad():
        torch.testing.assert_close(F.normalize(ours[:, 0], dim=-1), model.encode_image(images, normalize=True),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [VIT, CUSTOM_VIT])
@pytest.mark.parametrize("method", ["maskclip", "sclip", "clearclip", "naclip"])
def test_the_last_block_is_changed_as_each_method_states(name, method):
    """out = x + out_proj(A v) (+ FFN) for maskclip and sclip; out_proj(A v) alone for clearclip and naclip; then
    ln_post and the projection, for every token. The earlier blocks are open_clip's own."""
    model = build(name)
    images = torch.randn(2, 3, 64, 64)
    block = model.visual.transformer.resblocks[-1]
    x = last_block_input(model, images)
    with torch.no_grad():
        q, k, v = heads_of(block, x)
        weights = torch.stack([naive_attention(method, q[b], k[b], (4, 4)) for b in range(2)]).float()
        heads = weights @ v
        if getattr(block.attn, "head_scale", None) is not None:
            heads = heads * block.attn.head_scale
        merged = heads.transpose(1, 2).flatten(2)
        merged = block.attn.ln_inner(merged) if hasattr(block.attn, "ln_inner") else merged
        branch = block.ls_1(block.attn.out_proj(merged))
        spec = get_method(method)
        out = x + branch if spec.residual else branch
        if spec.ffn:
            out = out + block.ls_2(block.mlp(block.ln_2(out)))
        expected = model.visual.ln_post(out) @ model.visual.proj
        ours, _ = dense_features(model.visual, images, spec)
    assert spec.residual == spec.ffn == (method in ("maskclip", "sclip"))
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


def test_windows_of_another_size_resample_the_positions_as_the_authors_do():
    model = build(VIT)
    positions = model.visual.positional_embedding
    assert resample_positions(positions, (4, 4)) is positions
    resized = resample_positions(positions, (6, 3))
    assert resized.shape == (1 + 18, positions.shape[1]) and torch.equal(resized[0], positions[0])
    grid = positions[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(6.1 / 4, 3.1 / 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized[1:], expected[0].permute(1, 2, 0).reshape(18, -1))
    with torch.no_grad():
        tokens, found = dense_features(model.visual, torch.randn(1, 3, 96, 48), get_method("naclip"))
    assert found == (6, 3) and tokens.shape == (1, 19, 32)


def test_non_vit_towers_and_unknown_names_are_refused_in_one_line():
    from mixreorg.training_free.backend import TrainingFreeBackend
    from mixreorg.training_free.openclip import parse_model_spec

    with pytest.raises(MixreorgError, match="ModifiedResNet image tower, not one of open_clip's own ViTs"):
        TrainingFreeBackend(build(RESNET), "naclip", name="openclip:RN50:openai")
    with pytest.raises(MixreorgError, match="unknown method 'naclipp'; choose one of: plain, maskclip, sclip"):
        get_method("naclipp")
    with pytest.raises(MixreorgError, match="unknown open_clip model 'ViT-B-61'.*did you mean ViT-B-16"):
        parse_model_spec("openclip:ViT-B-61:openai")
    with pytest.raises(MixreorgError, match="names no pretrained tag.*openclip:ViT-B-16:openai"):
        parse_model_spec("openclip:ViT-B-16")
    with pytest.raises(MixreorgError, match="'opena' is neither a pretrained tag of open_clip's ViT-B-16"):
        parse_model_spec("openclip:ViT-B-16:opena")
    with pytest.raises(MixreorgError, match="write it as openclip:ViT-B-16:openai"):
        parse_model_spec("ViT-B-16:openai")
    spec = parse_model_spec("openclip:ViT-B-16:openai")
    assert (spec.name, spec.pretrained, str(spec)) == ("ViT-B-16", "openai", "openclip:ViT-B-16:openai")
