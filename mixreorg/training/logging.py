"""What a run shows and leaves behind: a progress bar, metrics.jsonl, TensorBoard events, a loss-curve PNG.

Only rank 0 logs. On resume, records after the resumed step (written by the interrupted run past its
last checkpoint) are dropped, so every file reads as one continuous run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from mixreorg.utils.io import atomic_path, atomic_write_text

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "loss_curves.png"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl`` (a torn last line from a crash is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunLogger:
    def __init__(
        self, run_dir: Path, *, enabled: bool, total_steps: int, start_step: int, global_batch: int, log_every: int
    ) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.global_batch, self.log_every = global_batch, max(1, log_every)
        self.history: list[dict] = []
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self.images_per_s = 0.0
        self.bar = None
        self.writer = None
        if not enabled:
            return
        self.history = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.history))
        self._metrics = open(run_dir / METRICS_FILE, "a")  # noqa: SIM115 - open for the whole run
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events an interrupted run wrote past the checkpoint we resume from.
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def log_step(self, step: int, epoch: int, record: dict) -> None:
        """``record`` holds loss, terms, lr, grad_norm, skipped...; written every ``log_every`` steps."""
        self._window_steps += 1
        now = time.perf_counter()
        if not self.enabled:
            return
        self.bar.update(1)
        if step % self.log_every and not record.get("skipped"):
            return
        elapsed = now - self._window_start
        self.images_per_s = self._window_steps * self.global_batch / elapsed if elapsed > 0 else 0.0
        self._window_start, self._window_steps = now, 0
        full = {"step": step, "epoch": epoch, **record, "images_per_s": round(self.images_per_s, 2)}
        full["time"] = time.time()
        self.history.append(full)
        self._metrics.write(json.dumps(full) + "\n")
        self._metrics.flush()
        for key, value in full.items():
            if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)
        self.bar.set_postfix(
            loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{self.images_per_s:.1f}", refresh=False
        )

    def message(self, text: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def log_scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self.enabled and values:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
            record = {"step": step, **{f"{prefix}/{k}": v for k, v in values.items()}, "time": time.time()}
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()

    def checkpoint_written(self) -> None:
        """Refresh the loss-curve PNG and flush TensorBoard, so both match the checkpoint on disk."""
        if not self.enabled:
            return
        self.writer.flush()
        plot_loss_curves(self.history, self.run_dir / CURVES_FILE)

    def close(self) -> None:
        if not self.enabled:
            return
        self.bar.close()
        self.writer.close()
        self._metrics.close()


def plot_loss_curves(records: list[dict], path: Path) -> None:
    """Total loss and every ``*_loss`` term against the step, plus the learning rate, into one PNG."""
    records = [r for r in records if "loss" in r and not r.get("skipped")]
    if not records:
        return
    # The object API with the Agg canvas: no pyplot (slow to import, global state), no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records]
    keys = ["loss"] + sorted({k for r in records for k in r if k.endswith("_loss")})
    fig = Figure(figsize=(8, 6))
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    for key in keys:
        values = [r.get(key, float("nan")) for r in records]
        ax_loss.plot(steps, values, label=key, linewidth=1.6 if key == "loss" else 1.0)
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(steps, [r.get("lr", float("nan")) for r in records], color="gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
