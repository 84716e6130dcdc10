"""`mixreorg ARGS` with one fault injected, for the tests of training's failure paths (and a tool to damage shards).

    python tests/faults.py FAULT ARGS...

worker-error   every DataLoader worker raises RuntimeError on its first batch (a bug, not bad data)
enospc-on-N    the N-th checkpoint write fails as a full disk does: part of a file, then ENOSPC
held-save      the first checkpoint write waits until the file named by $MIXREORG_TEST_RELEASE exists, so that a
               test can signal the run, or start a second one, while a save is under way
"""

from __future__ import annotations

import errno
import io
import os
import sys
import tarfile
import time
from pathlib import Path


def rewrite_shard(src: Path, dst: Path, change) -> None:
    """Copy a tar member by member; ``change(name, data)`` returns new bytes, or None to drop the member."""
    with tarfile.open(src) as source, tarfile.open(dst, "w") as target:
        for member in source.getmembers():
            data = change(member.name, source.extractfile(member).read())
            if data is not None:
                info = tarfile.TarInfo(member.name)
                info.size = len(data)
                target.addfile(info, io.BytesIO(data))


def inject(fault: str) -> None:
    from mixreorg.checkpoint import training as checkpoints
    from mixreorg.data import loader

    if fault == "worker-error":
        from torch.utils.data import get_worker_info

        collate = loader.ShardBatchStream._collate

        def failing_collate(self, *args, **kwargs):
            if get_worker_info() is not None:
                raise RuntimeError("injected fault in a loader worker")
            return collate(self, *args, **kwargs)

        loader.ShardBatchStream._collate = failing_collate
        return
    write = checkpoints.write_pretrained
    if fault.startswith("enospc-on-"):
        failing_call, calls = int(fault.removeprefix("enospc-on-")), [0]

        def full_disk(folder, model, config):
            calls[0] += 1
            if calls[0] == failing_call:
                (folder / "model.safetensors").write_bytes(bytes(4096))
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "model.safetensors"))
            write(folder, model, config)

        checkpoints.write_pretrained = full_disk
    elif fault == "held-save":
        release, held = os.environ["MIXREORG_TEST_RELEASE"], [False]

        def held_write(folder, model, config):
            deadline = time.monotonic() + 120
            while not held[0] and not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)  # signals are handled meanwhile, as during a real (slow) write
            held[0] = True
            write(folder, model, config)

        checkpoints.write_pretrained = held_write
    else:
        raise SystemExit(f"unknown fault {fault}")


if __name__ == "__main__":
    inject(sys.argv[1])
    from mixreorg.cli.main import entry

    sys.argv = ["mixreorg", *sys.argv[2:]]
    entry()
