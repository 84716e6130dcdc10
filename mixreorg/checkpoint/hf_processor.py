"""The files ``AutoTokenizer``/``AutoProcessor`` read beside an exported transformers GroupViT folder.

The tokenizer is CLIP's BPE, written from the vocabulary and merges that ship inside open_clip (the ones our
tokenizer uses), so the export needs no download: ``vocab.json`` (token -> id, CLIP's special-token names),
``merges.txt`` and the tokenizer settings. The image processor is transformers' CLIP image processor set to
what our models were trained with: ImageNet mean and std (GroupViT's, not CLIP's), bilinear resizing to the
model's image size and a centre crop of that size.
"""

from __future__ import annotations

import json
from pathlib import Path

from mixreorg.config.schema import ModelConfig
from mixreorg.evaluation.protocols import IMAGENET_MEAN, IMAGENET_STD

START, END = "<|startoftext|>", "<|endoftext|>"  # CLIP's names; open_clip calls them <start_of_text>, <end_of_text>
BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, as transformers stores it


def _vocabulary() -> tuple[dict[str, int], list[str]]:
    """(token -> id, merges in rank order) of open_clip's CLIP BPE."""
    from open_clip.tokenizer import SimpleTokenizer

    base = SimpleTokenizer()
    renames = {"<start_of_text>": START, "<end_of_text>": END}
    vocab = {renames.get(token, token): index for token, index in base.encoder.items()}
    merges = [" ".join(pair) for pair, _ in sorted(base.bpe_ranks.items(), key=lambda item: item[1])]
    return vocab, merges


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_processor_files(folder: str | Path, cfg: ModelConfig) -> list[str]:
    """Write the tokenizer and image-processor files for ``cfg`` into ``folder``; returns notes on what was not."""
    folder = Path(folder)
    _write_image_processor(folder, cfg.vision.image_size)
    vocab, merges = _vocabulary()
    if cfg.text.vocab_size != len(vocab):
        return [f"no tokenizer files: the text encoder has {cfg.text.vocab_size} tokens, CLIP's BPE has {len(vocab)}"]
    _write_json(folder / "vocab.json", vocab)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": END}
    _write_json(folder / "special_tokens_map.json", special)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "CLIPTokenizer",
            "processor_class": "CLIPProcessor",
            "model_max_length": cfg.text.context_length,
            "do_lower_case": True,
            "errors": "replace",
            **special,
        },
    )
    return []


def _write_image_processor(folder: Path, size: int) -> None:
    _write_json(
        folder / "preprocessor_config.json",
        {
            "image_processor_type": "CLIPImageProcessor",
            "processor_class": "CLIPProcessor",
            "do_convert_rgb": True,
            "do_resize": True,
            "size": {"shortest_edge": size},
            "resample": BILINEAR,
            "do_center_crop": True,
            "crop_size": {"height": size, "width": size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [value / 255 for value in IMAGENET_MEAN],
            "image_std": [value / 255 for value in IMAGENET_STD],
        },
    )
