"""`mixreorg train`: schedule, parameter groups, mixing plans, bad steps, run outputs and clear input errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mixreorg.checkpoint import find_latest
from mixreorg.config import load_config
from mixreorg.data.synthetic import generate_corpus
from mixreorg.errors import MixreorgError
from mixreorg.model import build_model
from mixreorg.model.mixing import sample_mixing_plan
from mixreorg.training.distributed import DistEnv, detect_env
from mixreorg.training.launch import LaunchOptions, torchrun_command, train
from mixreorg.training.logging import read_metrics
from mixreorg.training.methods import global_mixing_plan
from mixreorg.training.optim import WarmupCosineSchedule, param_groups, scaled_lr
from mixreorg.training.periodic_eval import PeriodicEval
from mixreorg.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from cli_runner import run_cli  # noqa: E402

MIXREORG = Path(sys.executable).with_name("mixreorg")
FAST = ["train.batch_size=8", "train.log_every=1", "data.workers=0"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("corpus") / "synth"
    generate_corpus(root, train_size=64, eval_size=4, image_size=64, shard_size=16)
    return str(root / "train" / "manifest.json")


def test_schedule_is_linear_warmup_then_cosine_at_the_absolute_step():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    schedule = WarmupCosineSchedule(optimizer, base_lr=1.0, warmup_lr=0.1, min_lr=0.01, warmup_steps=4, total_steps=20)
    lrs = []
    for _ in range(22):
        lrs.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert lrs[:4] == pytest.approx([0.1, 0.325, 0.55, 0.775])
    # timm without warmup_prefix: the cosine is evaluated at t, not t - warmup.
    assert lrs[4] == pytest.approx(0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * 4 / 20)))
    assert lrs[10] == pytest.approx(0.01 + 0.5 * 0.99)
    assert lrs[20] == lrs[21] == pytest.approx(0.01)
    # Its state is the step alone, restored exactly.
    fresh = WarmupCosineSchedule(optimizer, base_lr=1.0, warmup_lr=0.1, min_lr=0.01, warmup_steps=4, total_steps=20)
    fresh.load_state_dict({"step_index": 10})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lrs[10])
    assert scaled_lr(1.6e-3, 1024) == pytest.approx(4e-4)


def test_weight_decay_skips_norms_biases_and_temperatures_only():
    model = build_model("tiny", ["model.projection.num_layers=2"])  # GroupViT's projector, with its BatchNorm
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    skipped = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert {"logit_scale", "multi_label_logit_scale", "image_projector.linear_hidden.1.weight"} <= skipped
    assert all(n.endswith(".bias") or model.get_parameter(n).ndim <= 1 for n in skipped)
    # As in GroupViT: position embeddings and group tokens are decayed like weights.
    assert {"image_encoder.pos_embed", "image_encoder.layers.0.group_token"} <= decayed
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05


def test_each_rank_mixes_its_slice_of_one_plan_for_the_global_batch():
    cpu = torch.device("cpu")
    whole = global_mixing_plan(DistEnv(), 16, 64, 4, cpu, seed=7)
    slices = [global_mixing_plan(DistEnv(rank=r, local_rank=r, world_size=2), 8, 64, 4, cpu, seed=7) for r in (0, 1)]
    assert torch.equal(torch.cat([s.perm for s in slices]), whole.perm)
    # Labels index the local batch, so rank 1's are offset by the contrastive loss, not here.
    assert torch.equal(slices[1].labels, whole.labels[8:] - 8)
    assert not torch.equal(whole.perm, sample_mixing_plan(16, 64, 4, cpu, torch.Generator().manual_seed(8)).perm)


def test_a_non_finite_step_changes_nothing_and_a_finite_one_updates():
    torch.manual_seed(0)
    cfg = load_config("tiny", ["train.batch_size=8"])
    trainer = Trainer(cfg, DistEnv(), torch.device("cpu"), warmup_steps=0, total_steps=10)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    images, texts = torch.randn(8, 3, 64, 64), torch.randint(1, 4000, (8, 4, 32))
    poisoned = images.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    result = trainer.train_step([(poisoned, texts)])
    assert result.skipped and not math.isfinite(result.loss)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed on a skipped step"
    assert not trainer.optimizer.state
    result = trainer.train_step([(images, texts)])
    assert not result.skipped and math.isfinite(result.loss) and trainer.step_count == 2
    assert not torch.equal(trainer.model.logit_scale, before["logit_scale"])


def test_same_word_positives_use_the_loaders_word_ids():
    torch.manual_seed(0)
    images, texts = torch.randn(8, 3, 64, 64), torch.randint(1, 4000, (8, 4, 32))
    unique, repeated = torch.arange(24).reshape(8, 3), torch.tensor([[1, 2, 3], [1, 4, 5]] * 4)
    terms = {}
    for name, positives, batch in (
        ("own", "own", (images, texts)),
        ("unique", "same_word", (images, texts, unique)),
        ("repeated", "same_word", (images, texts, repeated)),
    ):
        cfg = load_config("tiny_groupvit", ["train.batch_size=8", f"loss.multi_label_positives={positives}"])
        trainer = Trainer(cfg, DistEnv(), torch.device("cpu"), warmup_steps=0, total_steps=10)
        terms[name] = trainer.train_step([batch]).terms
    assert terms["unique"]["multi_label_loss"] == pytest.approx(terms["own"]["multi_label_loss"], rel=1e-5)
    assert terms["repeated"]["multi_label_loss"] != pytest.approx(terms["own"]["multi_label_loss"], rel=1e-3)
    assert terms["repeated"]["contrastive_loss"] == pytest.approx(terms["own"]["contrastive_loss"], rel=1e-6)
    with pytest.raises(ValueError, match="needs the prompt word ids"):
        trainer.train_step([(images, texts)])


def test_diverging_run_stops_after_max_bad_steps_and_keeps_the_last_good_checkpoint(manifest, tmp_path):
    run = tmp_path / "run"
    status = train("tiny", manifest, run, overrides=[*FAST, "train.max_steps=2", "train.save_every=2"])
    assert status["step"] == 2
    for name in ("config.yaml", "metrics.jsonl", "loss_curves.png", "status.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    # Continue at an absurd learning rate: one huge update, then non-finite losses until the run gives up.
    lr = [f"train.{k}=1.0e+30" for k in ("base_lr", "warmup_lr", "min_lr")]
    more = [*FAST, "train.max_steps=10", "train.save_every=2", "train.max_bad_steps=2", *lr]
    with pytest.raises(MixreorgError, match=r"NaN/inf for 2 steps in a row.*last good checkpoint is .*step_000000002"):
        train("tiny", manifest, run, overrides=more, resume="auto")
    assert find_latest(run).name == "step_000000002"
    records = read_metrics(run)
    assert [r["skipped"] for r in records if r["step"] > 2][-2:] == [True, True]


def test_unknown_preset_is_one_clear_line_from_the_cli(tmp_path):
    done = subprocess.run(
        [str(MIXREORG), "train", "--config", "no_such_preset", "--data", "x", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: unknown preset 'no_such_preset'") and "tiny" in done.stderr


def test_bad_training_numbers_are_one_line_from_the_cli_and_leave_no_folder(manifest, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--config", "tiny", "--data", manifest, "--out", str(run), "train.base_lr=-1"],
                             monkeypatch, capsys)
    assert code == 2 and err == "error: train.base_lr must be greater than 0, got -1.0\n"
    assert not run.exists()


@pytest.mark.parametrize(
    ("overrides", "data", "options", "message"),
    [
        (["train.no_such_key=1"], None, LaunchOptions(), "unknown config key 'train.no_such_key'"),
        ([], "/no/such/shards/{000..003}.tar", LaunchOptions(), "4 of 4 shards do not exist"),
        (["train.batch_size=6"], None, LaunchOptions(), "batch_size=6 .* not divisible by the mixing group"),
        ([], None, LaunchOptions(gpus=5), "4 shards cannot feed 5 ranks"),
        (["train.precision=fp8"], None, LaunchOptions(), "train.precision must be one of"),
        (["train.base_lr=-1"], None, LaunchOptions(), r"train.base_lr must be greater than 0, got -1"),
        (["train.betas=[0.9,1.5]"], None, LaunchOptions(), r"train.betas must be two numbers in \[0, 1\)"),
        (["data.max_bad_fraction=2"], None, LaunchOptions(), r"data.max_bad_fraction must be in \[0, 1\]"),
        (["loss.multi_label_positives=all"], None, LaunchOptions(), "multi_label_positives must be one of own, same"),
        ([], None, LaunchOptions(nnodes=2), "needs --master-addr"),
    ],
)
def test_bad_input_fails_before_any_process_starts(manifest, tmp_path, overrides, data, options, message):
    with pytest.raises(MixreorgError, match=message):
        train("tiny", data or manifest, tmp_path / "run", overrides=overrides, options=options)
    assert not (tmp_path / "run").exists()


def test_empty_shard_and_existing_run_are_refused(manifest, tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "00000.tar").write_bytes(b"")
    with pytest.raises(MixreorgError, match="unreadable or empty"):
        train("tiny", str(tmp_path / "shards"), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoints" / "step_000000001"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "config.yaml", "training_state.pt"):
        (checkpoint / name).write_bytes(b"x")
    with pytest.raises(MixreorgError, match="already holds a run.*--resume auto"):
        train("tiny", manifest, tmp_path / "run", overrides=FAST)


def test_torchrun_command_standalone_and_multi_node(tmp_path):
    single = torchrun_command(LaunchOptions(gpus=8), "tiny", "d/", tmp_path, None, ["train.epochs=2"])
    assert single[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=8" in single and single[-1] == "train.epochs=2"
    assert single[single.index("-m", 3) + 1] == "mixreorg.training.worker"
    multi = torchrun_command(LaunchOptions(4, 2, 1, "node0", 29400), "tiny", "d/", tmp_path, "auto", [])
    assert "--standalone" not in multi
    assert {"--nnodes=2", "--node-rank=1", "--master-addr=node0", "--master-port=29400"} <= set(multi)
    assert multi[-2:] == ["--resume", "auto"]


def test_rank_comes_from_torchrun_or_an_srun_step_but_not_a_batch_script(monkeypatch):
    for key in ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "WORLD_SIZE", "RANK", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(key, raising=False)
    assert detect_env() == DistEnv()
    # An sbatch script is SLURM task 0 of the allocation, but not an srun step of several tasks.
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert detect_env() == DistEnv()
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert detect_env() == DistEnv(rank=5, local_rank=1, world_size=8, launcher="slurm")
    for key, value in {"TORCHELASTIC_RUN_ID": "x", "RANK": "3", "LOCAL_RANK": "3", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(key, value)
    assert detect_env() == DistEnv(rank=3, local_rank=3, world_size=4, launcher="torchrun")


def test_a_process_that_already_is_a_rank_never_launches_again(manifest, tmp_path, monkeypatch):
    for key, value in {"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(MixreorgError, match="already one rank"):
        train("tiny", manifest, tmp_path / "run", options=LaunchOptions(gpus=2))


def test_periodic_zero_shot_eval_logs_miou_and_a_missing_set_is_refused_up_front(manifest, tmp_path, monkeypatch):
    root = str(Path(manifest).parents[1])
    run = tmp_path / "run"
    evaluation = ["train.eval_every=2", "train.eval_dataset=synthetic", f"train.eval_data_root={root}"]
    train("tiny", manifest, run, overrides=[*FAST, "train.max_steps=2", *evaluation])
    scores = [r for r in read_metrics(run) if "eval/synthetic/miou" in r]
    assert [r["step"] for r in scores] == [2] and 0.0 <= scores[0]["eval/synthetic/miou"] <= 100.0
    missing = [*evaluation[:2], f"train.eval_data_root={tmp_path / 'nowhere'}"]
    with pytest.raises(MixreorgError, match="synthetic"):
        train("tiny", manifest, tmp_path / "other", overrides=[*FAST, *missing])
    monkeypatch.setattr("mixreorg.training.periodic_eval._evaluation_api", lambda: None)
    with pytest.warns(UserWarning, match="without periodic evaluation"):
        hook = PeriodicEval(load_config("tiny", evaluation).train, DistEnv(), torch.device("cpu"))
    assert not hook.due(2)
