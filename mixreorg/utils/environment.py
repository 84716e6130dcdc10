"""A short report of the software stack and hardware, for ``mixreorg info`` and benchmark records."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    """The processor model from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({cpu_name()}, {os.cpu_count()} cores)"


def environment_report() -> dict[str, str]:
    import torch

    from mixreorg import __version__
    from mixreorg.config import available_presets

    return {
        "mixreorg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "open_clip_torch": _version("open_clip_torch"),
        "webdataset": _version("webdataset"),
        "img2dataset": _version("img2dataset"),
        "device": device_name(),
        "cuda": str(torch.cuda.is_available()),
        "presets": ", ".join(available_presets()),
    }
