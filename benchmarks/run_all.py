"""`make bench`: every CPU benchmark in turn (GPU modes run when a GPU is present); figures land in results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CPU = ["bench_data.py", "bench_encoder.py", "bench_train.py", "bench_eval.py", "bench_segment.py",
       "bench_training_free.py"]
GPU = [["bench_train.py", "--device", "cuda"], ["bench_eval.py", "--gpu"]]


def main() -> int:
    import torch

    runs = [[name] for name in CPU] + (GPU if torch.cuda.is_available() else [])
    failed = []
    for args in runs:
        print(f"== {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]]).returncode != 0:
            failed.append(" ".join(args))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
