"""``mixreorg data recaption``: new captions from a ``transformers`` image-to-text model, as Unpair-Seg re-captions
its image-text pairs with a vision-language model before extracting entities (captions become more complete and
better aligned with the image).

Every shard is copied, member for member, into ``--out`` with one more field per sample, ``{field}.txt``, holding the
model's caption; the original ``txt`` stays. The model is any checkpoint ``AutoModelForImageTextToText`` and
``AutoProcessor`` load (BLIP, GIT, LLaVA-style models with ``--prompt``), from the Hugging Face Hub or a folder.
A sample whose image does not decode keeps no new field (stage 2 then counts it as incomplete). Output is written
into a hidden folder and renamed at the end.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from mixreorg.data.shards import atomic_output_dir
from mixreorg.data.verify import IMAGE_KEYS, resolve_shards
from mixreorg.errors import MixreorgError
from mixreorg.utils.progress import progress_bar


class Captioner:
    """A transformers image-to-text model and its processor: PIL images -> captions."""

    def __init__(self, name: str, device: str = "auto", max_new_tokens: int = 40, prompt: str = "") -> None:
        try:
            import transformers
        except ImportError as exc:
            raise MixreorgError("recaption runs a transformers model: pip install transformers") from exc

        from mixreorg.inference.predictor import resolve_device

        self.device = resolve_device(device)
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(name)
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(name).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise MixreorgError(f"cannot load the image-to-text model '{name}' with transformers ({detail}); name a "
                                "Hub model such as Salesforce/blip-image-captioning-large or a folder holding "
                                "one") from exc
        self.max_new_tokens, self.prompt = max_new_tokens, prompt

    def __call__(self, images: list[Image.Image]) -> list[str]:
        import torch

        kwargs = {"text": [self.prompt] * len(images)} if self.prompt else {}
        inputs = self.processor(images=images, return_tensors="pt", **kwargs).to(self.device)
        with torch.no_grad():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        captions = self.processor.batch_decode(tokens, skip_special_tokens=True)
        if self.prompt:  # decoder-only models repeat the prompt before their answer
            captions = [c.split(self.prompt, 1)[-1] if self.prompt in c else c for c in captions]
        return [" ".join(c.split()) for c in captions]


def _samples(url: str) -> Iterator[dict]:
    import webdataset as wds

    yield from wds.tarfile_to_samples(handler=wds.warn_and_continue)([{"url": url}])


def _decode(sample: dict) -> Image.Image | None:
    data = next((sample[k] for k in IMAGE_KEYS if k in sample), None)
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except Exception:  # PIL raises many types for bad bytes
        return None


def recaption_shards(data: str, out: str | Path, model: str, field: str = "recaption", batch_size: int = 8,
                     device: str = "auto", max_new_tokens: int = 40, prompt: str = "") -> dict:
    """Copy the shards of ``data`` into ``out`` with each sample's new caption in ``{field}.txt``; a manifest too."""
    import webdataset as wds

    from mixreorg.data.verify import write_manifest

    if not field or not field.replace("_", "").isalnum() or field in ("txt", "text"):
        raise MixreorgError(f"--field '{field}' must be a plain name other than txt (the new captions go to FIELD.txt)")
    if batch_size < 1 or max_new_tokens < 1:
        raise MixreorgError("--batch-size and --max-new-tokens must be at least 1")
    shards = resolve_shards(data, check_exists=True)
    remote = [url for url in shards.urls if not Path(url).is_file()]
    if remote:
        raise MixreorgError(f"recaption reads local shards; {remote[0]} is not a local file")
    captioner = Captioner(model, device, max_new_tokens, prompt)
    counts = {"samples": 0, "recaptioned": 0, "undecodable": 0}
    entries = []
    with atomic_output_dir(out) as tmp, progress_bar(total=shards.total, desc="recaption", unit="img") as bar:
        for url in shards.urls:
            name = Path(url).name
            written = 0
            with wds.TarWriter(str(tmp / name), encoder=False, mtime=0) as writer:
                batch: list[dict] = []
                for sample in _samples(url):
                    batch.append(sample)
                    if len(batch) == batch_size:
                        written += _flush(batch, captioner, field, writer, counts, bar)
                if batch:
                    written += _flush(batch, captioner, field, writer, counts, bar)
            entries.append({"url": name, "num_samples": written})
        write_manifest(tmp / "manifest.json", entries)
    return {"out": str(out), "shards": len(entries), "field": f"{field}.txt", **counts}


def _flush(batch: list[dict], captioner: Captioner, field: str, writer, counts: dict, bar) -> int:
    images = [_decode(sample) for sample in batch]
    good = [image for image in images if image is not None]
    captions = iter(captioner(good) if good else [])
    for sample, image in zip(batch, images, strict=True):
        record = {key: value for key, value in sample.items() if not key.startswith("__") or key == "__key__"}
        if image is None:
            counts["undecodable"] += 1
        else:
            record[f"{field}.txt"] = next(captions).encode("utf-8")
            counts["recaptioned"] += 1
        writer.write(record)
        counts["samples"] += 1
        bar.update(1)
    batch.clear()
    return len(images)
