"""What a run shows and leaves behind: progress, ``train.log``, metrics.jsonl, TensorBoard events, a loss-curve PNG.

Only rank 0 logs. On a terminal, progress is a tqdm bar; off it (a file, a pipe, ``srun``), a plain line every
``train.log_every`` steps. ``train.log`` gets those lines either way, with the start-up summary, checkpoints,
epoch summaries and the error that ended a run. On resume, records after the resumed step (written by the
interrupted run past its last checkpoint) are dropped from metrics.jsonl, so it reads as one continuous run;
``train.log`` keeps the whole history.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
import traceback
from pathlib import Path
from typing import IO

from tqdm import tqdm

from mixreorg.errors import MixreorgError
from mixreorg.utils.io import atomic_path, atomic_write_text
from mixreorg.utils.progress import is_terminal, timestamped

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "loss_curves.png"
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "train.log"


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
        self,
        run_dir: Path,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int,
        global_batch: int,
        log_every: int,
        stream: IO | None = None,
    ) -> None:
        self.run_dir, self.enabled = run_dir, enabled
        self.total_steps, self.global_batch, self.log_every = total_steps, global_batch, max(1, log_every)
        self.stream = sys.stderr if stream is None else stream
        self.history: list[dict] = []
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self.images_per_s = 0.0
        self.bar = None
        self.writer = None
        self._log = None
        if not enabled:
            return
        self._log = open(run_dir / LOG_FILE, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole run
        self.history = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
        atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in self.history))
        self._metrics = open(run_dir / METRICS_FILE, "a")  # noqa: SIM115 - open for the whole run
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events an interrupted run wrote past the checkpoint we resume from.
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)
        if is_terminal(self.stream):
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                            file=self.stream)

    def log_step(self, step: int, epoch: int, record: dict) -> None:
        """``record`` holds loss, terms, lr, grad_norm, skipped...; written every ``log_every`` steps."""
        self._window_steps += 1
        now = time.perf_counter()
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
        if step % self.log_every and not record.get("skipped"):
            return
        elapsed = now - self._window_start
        self.images_per_s = self._window_steps * self.global_batch / elapsed if elapsed > 0 else 0.0
        eta = (self.total_steps - step) * elapsed / self._window_steps if self._window_steps else 0.0
        self._window_start, self._window_steps = now, 0
        full = {"step": step, "epoch": epoch, **record, "images_per_s": round(self.images_per_s, 2)}
        full["time"] = time.time()
        self.history.append(full)
        self._metrics.write(json.dumps(full) + "\n")
        self._metrics.flush()
        for key, value in full.items():
            if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"train/{key}", value, step)
        self._line(step_line(step, self.total_steps, epoch, record, self.images_per_s, eta), show=self.bar is None)
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=f"{self.images_per_s:.1f}", refresh=False
            )

    def message(self, text: str) -> None:
        """A line for the user (above the bar on a terminal) and for train.log."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        self._line(text, show=self.bar is None)

    def error(self, exc: BaseException) -> None:
        """The error that ends the run, into train.log only: the command line prints it already.
        A bug's traceback goes in too."""
        if not self.enabled or self._log is None:
            return
        if isinstance(exc, MixreorgError):
            self._line(f"error: {exc}", show=False)
        elif isinstance(exc, KeyboardInterrupt):
            self._line("interrupted", show=False)
        else:
            self._line("error: " + "".join(traceback.format_exception(exc)).rstrip(), show=False)

    def _line(self, text: str, show: bool) -> None:
        line = timestamped(text)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()
        if show:
            self.stream.write(line + "\n")
            self.stream.flush()

    def log_scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self.enabled and values:
            for key, value in values.items():
                self.writer.add_scalar(f"{prefix}/{key}", value, step)
            record = {"step": step, **{f"{prefix}/{k}": v for k, v in values.items()}, "time": time.time()}
            self._metrics.write(json.dumps(record) + "\n")
            self._metrics.flush()

    def log_epoch_data(self, step: int, epoch: int, counts: dict[str, int], line: str) -> None:
        """One epoch's read and skipped samples: a line, a metrics.jsonl record and TensorBoard scalars."""
        if not self.enabled:
            return
        self.message(line)
        for key, value in counts.items():
            self.writer.add_scalar(f"data/{key}", value, step)
        record = {"step": step, "epoch": epoch, **{f"data/{k}": v for k, v in counts.items()}, "time": time.time()}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def checkpoint_written(self, path: Path | None, seconds: float) -> None:
        """Say so; refresh the loss-curve PNG and flush TensorBoard, so both match the checkpoint on disk."""
        if not self.enabled:
            return
        if path is not None:
            self.message(f"saved checkpoint {path} in {seconds:.1f}s")
        self.writer.flush()
        plot_loss_curves(self.history, self.run_dir / CURVES_FILE)

    def close(self) -> None:
        if not self.enabled or self._log is None:
            return
        if self.bar is not None:
            self.bar.close()
        self.writer.close()
        self._metrics.close()
        self._log.close()
        self._log = None


def step_line(step: int, total: int, epoch: int, record: dict, images_per_s: float, eta_s: float) -> str:
    """'step 20/60 epoch 0 | loss 3.2100 contrastive_loss 2.0100 ... | lr 2.50e-04 | 41.3 img/s | eta 0:00:58'."""
    losses = " ".join(f"{k} {v:.4f}" for k, v in record.items() if k == "loss" or k.endswith("_loss"))
    line = f"step {step}/{total} epoch {epoch} | {losses} | lr {record['lr']:.2e}"
    if "grad_norm" in record:
        line += f" grad_norm {record['grad_norm']:.3f}"
    line += f" | {images_per_s:.1f} img/s | eta {datetime.timedelta(seconds=round(eta_s))}"
    return line + (" | step skipped: loss or gradients not finite" if record.get("skipped") else "")


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
