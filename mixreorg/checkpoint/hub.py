"""Hugging Face Hub model repositories as checkpoints: ``--checkpoint nvidia/groupvit-gcc-yfcc``.

A repository holds either our format (``config.yaml`` + ``model.safetensors``, uploaded from a run's
``RUN/model`` folder) or a transformers GroupViT folder (``config.json`` + safetensors or
``pytorch_model.bin``, single or sharded). Only the files the loader reads are fetched, one by one with
``huggingface_hub.hf_hub_download``, so they land in the usual Hub cache (``HF_HUB_CACHE`` or
``HF_HOME``, shared with transformers) and are not downloaded again. ``HF_HUB_OFFLINE=1`` reads the
cache only; ``HF_ENDPOINT`` points at a mirror. The returned path is the cached snapshot folder, which
``mixreorg.checkpoint.load_model`` reads like any local folder.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mixreorg.errors import MixreorgError

HUB_PREFIX = "hf-hub:"  # open_clip's spelling; a bare owner/name works too
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
OURS_FILES = ("config.yaml", "model.safetensors")
HF_WEIGHT_CHOICES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                     "pytorch_model.bin.index.json")  # fmt: skip


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision) for 'owner/name', 'owner/name@revision' or 'hf-hub:owner/name'; None otherwise."""
    name = text[len(HUB_PREFIX):] if text.startswith(HUB_PREFIX) else text
    repo, _, revision = name.partition("@")
    if not _REPO_ID.fullmatch(repo) or ".." in repo:
        return None
    return repo, revision or None


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


class _Fetcher:
    """Download (or find in the cache) single files of one repository, with errors a user can act on."""

    def __init__(self, repo: str, revision: str | None) -> None:
        self.repo, self.revision = repo, revision
        self.endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not when huggingface_hub was imported
        self.not_cached: list[str] = []  # files neither cached nor reachable (offline, or no network)
        # After one failure to reach the Hub (huggingface_hub retries for about 20 s first), the other
        # candidate files are looked for in the cache only.
        self.local_only = False

    def _describe(self) -> str:
        return f"'{self.repo}'" + (f" at revision '{self.revision}'" if self.revision else "")

    def get(self, filename: str) -> Path | None:
        """The local path of ``filename``, or None when the repository does not have it (or it is unreachable)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            return Path(hf_hub_download(self.repo, filename, revision=self.revision, endpoint=self.endpoint,
                                        local_files_only=self.local_only))
        except GatedRepoError as exc:
            raise MixreorgError(
                f"the Hub repository {self._describe()} is gated; accept its terms on the Hub and log in "
                "(`hf auth login` or HF_TOKEN)"
            ) from exc
        except RepositoryNotFoundError as exc:
            raise MixreorgError(
                f"no model repository {self._describe()} on the Hugging Face Hub (a private one needs a login: "
                "`hf auth login` or HF_TOKEN); check the name"
            ) from exc
        except RevisionNotFoundError as exc:
            raise MixreorgError(f"the Hub repository '{self.repo}' has no revision '{self.revision}'") from exc
        except LocalEntryNotFoundError:
            self.not_cached.append(filename)
            self.local_only = True
            return None
        except EntryNotFoundError:
            return None

    def unavailable(self, what: str) -> MixreorgError:
        if self.not_cached:
            if _offline():
                return MixreorgError(
                    f"the Hub model {self._describe()} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                    "set; run once with network access (or unset HF_HUB_OFFLINE)"
                )
            return MixreorgError(
                f"could not reach the Hugging Face Hub for {self._describe()} and it is not cached; check the "
                "network, or set HF_ENDPOINT to a mirror"
            )
        return MixreorgError(
            f"the Hub repository {self._describe()} has no {what}; it is not a GroupViT or MixReorg model"
        )


def _fetch_shards(fetch: _Fetcher, index: Path) -> None:
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
        raise MixreorgError(f"{index.name} of the Hub repository '{fetch.repo}' is not a valid weight index") from exc
    for shard in shards:
        if fetch.get(shard) is None:
            raise fetch.unavailable(f"weight shard {shard}")


def download_from_hub(name: str) -> Path:
    """The cached snapshot folder of Hub model ``name`` ('owner/name[@revision]'), fetching what is missing."""
    parsed = parse_hub_id(name)
    if parsed is None:
        raise MixreorgError(f"'{name}' is not a Hub model id; write it as owner/name (optionally @revision)")
    fetch = _Fetcher(*parsed)
    ours = fetch.get(OURS_FILES[0])
    if ours is not None:
        if fetch.get(OURS_FILES[1]) is None:
            raise fetch.unavailable(OURS_FILES[1] + " beside its config.yaml")
        return ours.parent
    config = fetch.get("config.json")
    if config is None:
        raise fetch.unavailable("config.yaml (mixreorg) or config.json (transformers)")
    for weights in HF_WEIGHT_CHOICES:
        found = fetch.get(weights)
        if found is not None:
            if weights.endswith(".index.json"):
                _fetch_shards(fetch, found)
            return config.parent
    raise fetch.unavailable("model.safetensors or pytorch_model.bin")
