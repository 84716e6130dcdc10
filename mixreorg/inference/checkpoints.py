"""``--checkpoint`` names: a local file or folder as is, a released checkpoint downloaded once, or a model
repository on the Hugging Face Hub (``owner/name``, see ``mixreorg.checkpoint.hub``).

Names come from ``data_manifests/checkpoints.yaml`` (the official GroupViT releases). A named file is
downloaded (resumable, via mixreorg.data.download) into ``<cache>/checkpoints/``, where ``<cache>`` is
the ``cache_dir`` argument, else ``$MIXREORG_CACHE``, else ``~/.cache/mixreorg``. It appears under its
final name only after every published checksum matched, so a file found there is reused as is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from mixreorg.errors import MixreorgError

CACHE_ENV = "MIXREORG_CACHE"
MANIFEST_ENV = "MIXREORG_CHECKPOINTS_MANIFEST"  # another checkpoints.yaml (a lab's own list, tests)
MANIFEST_NAME = "checkpoints.yaml"


def cache_root(override: str | Path | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mixreorg"


def manifest_path() -> Path:
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return Path(override)
    from mixreorg.data.benchmarks.manifest import manifest_dir

    return manifest_dir() / MANIFEST_NAME


def known_checkpoints(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Name -> entry of the checkpoints manifest."""
    path = Path(path) if path else manifest_path()
    if not path.is_file():
        raise MixreorgError(f"the checkpoint list {path} is missing; reinstall mixreorg or set {MANIFEST_ENV}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MixreorgError(f"{path} is not valid YAML ({exc.__class__.__name__}); fix the file") from exc
    if not isinstance(data, dict) or any(not isinstance(entry, dict) for entry in data.values()):
        raise MixreorgError(f"{path} must map checkpoint names to entries with 'file' and 'urls'")
    for name, entry in data.items():
        if not entry.get("file") or not entry.get("urls"):
            raise MixreorgError(f"{path}: checkpoint '{name}' needs 'file' and 'urls'")
    return data


def _lookup(name: str, entries: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """Match a manifest name, or the release file name with or without its extension."""
    for key, entry in entries.items():
        file_name = str(entry["file"])
        if name in (key, file_name, Path(file_name).stem):
            return key, entry
    return None


def resolve_checkpoint(
    name_or_path: str | Path, cache_dir: str | Path | None = None, manifest: str | Path | None = None
) -> Path:
    """A path that ``mixreorg.checkpoint.load_model`` can read: the given one, the cached download of a released
    name, or the cached snapshot of a Hub repository."""
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return candidate
    entries = known_checkpoints(manifest)
    found = _lookup(str(name_or_path), entries)
    if found is not None:
        return download_checkpoint(*found, cache=cache_root(cache_dir))
    from mixreorg.checkpoint.hub import download_from_hub, parse_hub_id

    if parse_hub_id(str(name_or_path)) is not None:
        try:
            return download_from_hub(str(name_or_path))
        except MixreorgError as exc:
            raise MixreorgError(
                f"checkpoint '{name_or_path}' is not an existing file or folder; as a Hub model: {exc}"
            ) from exc
    raise MixreorgError(
        f"checkpoint '{name_or_path}' is neither an existing file or folder nor a known name; "
        f"known names: {', '.join(sorted(entries))}, or a Hugging Face Hub model as owner/name"
    )


def download_checkpoint(name: str, entry: dict[str, Any], cache: Path) -> Path:
    """The cached copy of ``entry`` in ``cache``/checkpoints, downloaded and verified if absent."""
    from mixreorg.data.download import file_digests, mirrored_url

    target = cache / "checkpoints" / str(entry["file"])
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MixreorgError(
            f"cannot create the checkpoint cache {target.parent} ({exc.strerror}); set {CACHE_ENV} to a writable folder"
        ) from exc
    staging = target.with_name(f".{target.name}.download")
    urls = [str(url) for url in entry["urls"]]
    mirrored = [mirrored_url(url) for url in urls]
    candidates = list(dict.fromkeys(mirrored + urls))  # a configured mirror first, then the official hosts
    errors = []
    for url in candidates:
        try:
            _fetch(url, staging, entry)
            break
        except MixreorgError as exc:
            errors.append(str(exc))
    else:
        raise MixreorgError(f"could not download checkpoint '{name}': {errors[-1]}")
    prefix = entry.get("sha256_prefix")
    if prefix:
        digest = file_digests(staging, ["sha256"], desc=f"verifying {target.name}")["sha256"]
        if not digest.startswith(str(prefix).lower()):
            staging.unlink()
            raise MixreorgError(
                f"the download of '{name}' has sha256 {digest[:8]}..., the release name says {prefix}...; "
                "deleted it. The server sent a different file: check the URL or mirror"
            )
    os.replace(staging, target)
    return target


def _fetch(url: str, dest: Path, entry: dict[str, Any]) -> None:
    from mixreorg.data.download import download_file

    if dest.exists():  # a whole but unverified earlier download: check it again from the start
        dest.unlink()
    download_file(url, dest, size=entry.get("bytes"), sha256=entry.get("sha256"), md5=entry.get("md5"))
