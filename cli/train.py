"""`mixreorg train`: pretraining on one process, several GPUs (torchrun) or several nodes."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    ctx: typer.Context,
    # No -c here: everywhere else -c is --checkpoint.
    config: str = typer.Option("mixreorg_vits16", "--config", help="Preset name or YAML file."),
    data: str = typer.Option(
        "", "--data", help="Training shards: manifest.json, folder, brace pattern or glob ('::' joins several)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config, checkpoints, logs, final model."),
    gpus: int = typer.Option(
        1, "--gpus", help="Processes per node, one per GPU; without GPUs, CPU processes (gloo). >1 starts torchrun."
    ),
    nnodes: int = typer.Option(1, "--nnodes", help="Number of nodes (run the same command on each)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This node's index, 0 to nnodes-1."),
    master_addr: str = typer.Option("", "--master-addr", help="Hostname of node 0 (multi-node runs)."),
    master_port: int = typer.Option(29500, "--master-port", help="Free TCP port on node 0 (multi-node runs)."),
    resume: str = typer.Option(
        None, "--resume", help="'auto' continues from the run folder's latest checkpoint, or give a checkpoint path."
    ),
) -> None:
    """Pretrain MixReorg or GroupViT, or train a stage of Unpair-Seg (--config unpairseg_*). Extra `key=value`
    arguments override the config (train.batch_size=64)."""
    from mixreorg.errors import MixreorgError
    from mixreorg.training.launch import LaunchOptions
    from mixreorg.training.launch import train as launch_train

    if "-c" in ctx.args:
        raise MixreorgError("train has no -c: name the preset or YAML with --config (in the other commands -c is "
                            "--checkpoint)")

    options = LaunchOptions(gpus, nnodes, node_rank, master_addr, master_port)
    # The run itself says how it ended (on stderr and in RUN/train.log); the exit code tells scripts.
    status = launch_train(config, data, out, overrides=ctx.args, resume=resume, options=options)
    if status.get("stopped_by"):
        raise typer.Exit(143 if status["stopped_by"] == "SIGTERM" else 130)
