"""Losses against straightforward re-computations, and across two real gloo ranks against one process."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mixreorg.losses import image_text_contrastive, mixed_segmentation_loss, multi_label_contrastive


def _naive_itc(image, text, scale):
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    total = 0.0
    for i in range(len(image)):
        row = [math.exp(scale * float(image[i] @ text[j])) for j in range(len(text))]
        col = [math.exp(scale * float(text[i] @ image[j])) for j in range(len(image))]
        total += -math.log(row[i] / sum(row)) - math.log(col[i] / sum(col))
    return total / (2 * len(image))


def _naive_multi_label(image, prompts, scale):
    batch, k, _ = prompts.shape
    image, prompts = F.normalize(image, dim=-1), F.normalize(prompts, dim=-1)
    flat = prompts.reshape(batch * k, -1)
    image_side = 0.0
    for i in range(batch):
        logits = scale * flat @ image[i]
        log_norm = torch.logsumexp(logits, 0)
        image_side += sum(float(log_norm - logits[i * k + p]) for p in range(k)) / k
    prompt_side = 0.0
    for row in range(batch * k):
        logits = scale * image @ flat[row]
        prompt_side += float(torch.logsumexp(logits, 0) - logits[row // k])
    return 0.5 * (image_side / batch + prompt_side / (batch * k))


def test_contrastive_losses_match_naive_sums():
    torch.manual_seed(0)
    image, text, prompts = torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 3, 8)
    scale = torch.tensor(10.0)
    assert image_text_contrastive(image, text, scale).item() == pytest.approx(_naive_itc(image, text, 10.0), rel=1e-5)
    assert multi_label_contrastive(image, prompts, scale).item() == pytest.approx(
        _naive_multi_label(image, prompts, 10.0), rel=1e-5
    )


def _naive_same_word(image, prompts, words, scale):
    batch, k, _ = prompts.shape
    image, flat = F.normalize(image, dim=-1), F.normalize(prompts, dim=-1).reshape(batch * k, -1)
    flat_words = words.reshape(-1).tolist()

    def positive(i: int, column: int) -> bool:
        word = flat_words[column]
        return column // k == i or (word >= 0 and word in words[i].tolist())

    image_side = 0.0
    for i in range(batch):
        log_probs = torch.log_softmax(scale * flat @ image[i], 0)
        targets = [c for c in range(batch * k) if positive(i, c)]
        image_side += -sum(float(log_probs[c]) for c in targets) / len(targets)
    prompt_side = 0.0
    for column in range(batch * k):
        log_probs = torch.log_softmax(scale * image @ flat[column], 0)
        targets = [i for i in range(batch) if positive(i, column)]
        prompt_side += -sum(float(log_probs[i]) for i in targets) / len(targets)
    return 0.5 * (image_side / batch + prompt_side / (batch * k))


def test_same_word_positives_match_a_naive_loop_and_reduce_to_own_without_repeats():
    torch.manual_seed(1)
    image, prompts = torch.randn(6, 8), torch.randn(6, 3, 8)
    scale = torch.tensor(7.0)
    words = torch.tensor([[0, 1, -1], [1, 2, 3], [4, 4, -1], [0, 5, 6], [-1, -1, -1], [2, 7, 8]])
    got = multi_label_contrastive(image, prompts, scale, words=words).item()
    assert got == pytest.approx(_naive_same_word(image, prompts, words, 7.0), rel=1e-5)
    assert got != pytest.approx(multi_label_contrastive(image, prompts, scale).item(), rel=1e-3)
    unique = torch.arange(18).reshape(6, 3)
    assert multi_label_contrastive(image, prompts, scale, words=unique).item() == pytest.approx(
        multi_label_contrastive(image, prompts, scale).item(), rel=1e-6
    )


def test_segmentation_loss_rewards_the_right_source():
    torch.manual_seed(0)
    batch, tokens, segments, dim = 4, 6, 3, 8
    text = F.normalize(torch.randn(batch, dim), dim=-1)
    labels = torch.randint(0, batch, (batch, tokens))
    # Segment s of image b carries the caption of source (b + s) % batch; assign each patch to the right segment.
    segment_emb = torch.stack([torch.stack([text[(b + s) % batch] for s in range(segments)]) for b in range(batch)])
    right = torch.zeros(batch, tokens, segments)
    wrong = torch.zeros(batch, tokens, segments)
    for b in range(batch):
        for n in range(tokens):
            source = int(labels[b, n])
            offset = (source - b) % batch
            if offset >= segments:  # no segment holds that caption: point it anywhere
                offset = 0
                labels[b, n] = b
            right[b, n, offset] = 1
            wrong[b, n, (offset + 1) % segments] = 1
    scale = torch.tensor(50.0)
    good = mixed_segmentation_loss(segment_emb, right, labels, text, scale, group_size=2, text_set="local")
    bad = mixed_segmentation_loss(segment_emb, wrong, labels, text, scale, group_size=2, text_set="local")
    assert good < 0.05 < bad
    # On one process the global caption set is the local one.
    same = mixed_segmentation_loss(segment_emb, right, labels, text, scale, group_size=2, text_set="global")
    torch.testing.assert_close(good, same)


def test_group_text_set_only_competes_within_the_mixing_group():
    torch.manual_seed(0)
    text = torch.randn(4, 8)
    segments = torch.randn(4, 2, 8)
    assignment = torch.softmax(torch.randn(4, 5, 2), dim=-1)
    labels = torch.tensor([[0, 1, 0, 1, 1]] * 2 + [[2, 3, 3, 2, 2]] * 2)
    scale = torch.tensor(5.0)
    grouped = mixed_segmentation_loss(segments, assignment, labels, text, scale, group_size=2, text_set="group")
    first = mixed_segmentation_loss(segments[:2], assignment[:2], labels[:2], text[:2], scale, 2, "local")
    second = mixed_segmentation_loss(segments[2:], assignment[2:], labels[2:] - 2, text[2:], scale, 2, "local")
    torch.testing.assert_close(grouped, (first + second) / 2)


def _all_losses(image, text, prompts, segments, assignment, labels, words, scale):
    return (
        image_text_contrastive(image, text, scale)
        + multi_label_contrastive(image, prompts, scale)
        + multi_label_contrastive(image, prompts, scale, words=words)
        + mixed_segmentation_loss(segments, assignment, labels, text, scale, group_size=2, text_set="global")
    )


def _inputs():
    generator = torch.Generator().manual_seed(0)
    batch = 8
    return dict(
        image=torch.randn(batch, 6, generator=generator),
        text=torch.randn(batch, 6, generator=generator),
        prompts=torch.randn(batch, 3, 6, generator=generator),
        segments=torch.randn(batch, 3, 6, generator=generator),
        assignment=torch.softmax(torch.randn(batch, 5, 3, generator=generator), dim=-1),
        labels=(torch.arange(batch).view(batch, 1) // 2 * 2 + torch.randint(0, 2, (batch, 5), generator=generator)),
        # small ids: words repeat within and across the ranks' halves; -1 is caption padding
        words=torch.randint(-1, 5, (batch, 3), generator=generator),
    )


def _rank_worker(rank: int, world: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    inputs = _inputs()
    half = len(inputs["image"]) // world
    local = {
        k: v[rank * half : (rank + 1) * half].clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()
    }
    local["labels"] = local["labels"] - rank * half
    loss = _all_losses(**local, scale=torch.tensor(8.0))
    # DDP averages gradients over ranks; do the same by hand.
    (loss / world).backward()
    # As numpy arrays, pickled by value: a tensor travels as a shared-memory handle that dies with this process,
    # which may exit before the parent reads the queue.
    grads = {k: v.grad.numpy() for k, v in local.items() if v.grad is not None}
    summed = torch.tensor([loss.item()])
    dist.all_reduce(summed)
    queue.put((rank, float(summed) / world, grads))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_give_the_single_process_loss_and_gradients():
    inputs = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in _inputs().items()}
    loss = _all_losses(**inputs, scale=torch.tensor(8.0))
    loss.backward()
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_rank_worker, args=(r, 2, port, queue)) for r in range(2)]
    for proc in procs:
        proc.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert results[0][1] == pytest.approx(loss.item(), rel=1e-5)
    for rank, _, grads in results:
        for key, grad in grads.items():
            expected = inputs[key].grad[rank * 4 : (rank + 1) * 4]
            torch.testing.assert_close(torch.from_numpy(grad), expected, atol=1e-6, rtol=1e-4)
