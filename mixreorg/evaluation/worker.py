"""One rank of a distributed evaluation: ``python -m torch.distributed.run ... -m mixreorg.evaluation.worker REQ``.

Started by ``mixreorg.evaluation.run.launch_distributed``; every rank evaluates its share of the images,
the confusion matrices are summed across ranks, and rank 0 writes the report where the launcher reads it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mixreorg.errors import MixreorgError


def main(argv: list[str]) -> int:
    from mixreorg.evaluation.run import EvalRequest, evaluate_here, pick_device
    from mixreorg.training.distributed import detect_env, init_distributed, shutdown_distributed

    job = json.loads(Path(argv[0]).read_text())
    request = EvalRequest(**job["request"])
    env = detect_env()
    try:
        device = pick_device(request.device, env.world_size, env.local_rank)
        init_distributed(env, device)
        report = evaluate_here(request, rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)
        if env.is_main:
            Path(job["report_path"]).write_text(json.dumps(report))
    except MixreorgError as exc:
        print(f"error (rank {env.rank}): {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
