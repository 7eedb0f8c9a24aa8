import dataclasses
import json
import logging
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader

from nanogpt.model import GPTConfig
from nanogpt.optimizers import adamw
from nanogpt.runs.checkpoint import TrainedOn, check_resumable
from nanogpt.training.callbacks.console import StepLines, StepProgressBar, progress_bar
from nanogpt.training.job import train
from nanogpt.training.module import GPTLightningModule

from .helpers import TINY, column, derived, make_text, read_metrics, run_cli


def test_short_run_lowers_the_loss_and_writes_checkpoints(trained_run):
    run, metrics = trained_run.path, trained_run.metrics
    assert metrics["step"] == 40
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert Path(metrics["best_ckpt"]) == run / "checkpoints" / "best.ckpt"
    assert (run / "config.yaml").is_file()

    rows = read_metrics(run)
    train_loss = column(rows, "train/loss")
    val_loss = column(rows, "val/loss")
    assert [s for s, _ in val_loss] == [10, 20, 30, 40]  # optimizer steps done, as the progress bar counts
    assert train_loss[-1][1] < train_loss[0][1] - 0.5
    assert val_loss[-1][1] < val_loss[0][1]
    assert metrics["best_val_loss"] == pytest.approx(min(v for _, v in val_loss))
    # the headline: best.ckpt on the whole val split (the validations score data.eval_batches=2)
    record = json.loads((run / "result.json").read_text())
    best_step = min(val_loss, key=lambda point: point[1])[0]
    assert metrics["final_val_loss"] == record["final_val_loss"] and record["final_val_step"] == best_step
    assert record["final_val_tokens"] > 2 * 8 * 32 and "final_val_batches" not in record
    ppl = column(rows, "val/ppl")
    assert ppl[-1][1] == pytest.approx(torch.tensor(val_loss[-1][1]).exp().item(), rel=1e-4)
    lrs = column(rows, "lr")
    assert lrs[0][1] == pytest.approx(3e-3 / 6) and max(v for _, v in lrs) == pytest.approx(3e-3, rel=1e-3)

    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["n_layer"] == 2
    assert ckpt["hyper_parameters"]["tokenizer"]["kind"] == "char"

    grad_norms = column(rows, "train/grad_norm")
    assert len(grad_norms) == 40 and all(v > 0 for _, v in grad_norms)

    assert record["status"] == "completed" and record["step"] == 40 and record["wall_time_s"] > 0
    assert record["best_val_loss"] == pytest.approx(metrics["best_val_loss"])
    assert record["metrics"]["val/loss"] == pytest.approx(val_loss[-1][1])
    # the history behind loss.png: val/loss at each validation, train/loss at every step
    assert [s for s, _ in record["history"]["val/loss"]] == [10, 20, 30, 40]
    assert [v for _, v in record["history"]["val/loss"]] == pytest.approx([v for _, v in val_loss])
    assert len(record["history"]["train/loss"]) == 40
    png = run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3  # a decodable image


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_overfitting_one_batch_drives_the_loss_under_half():
    torch.manual_seed(0)
    config = GPTConfig(block_size=32, vocab_size=20, n_layer=2, n_head=2, n_embd=32)
    x = torch.randint(0, 20, (4, 33))
    batch = (x[:, :-1], x[:, 1:])

    module = GPTLightningModule(config, optimizer=partial(adamw, lr=3e-3, weight_decay=0.0))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch] * 150, batch_size=None))
    _, loss = module.model.eval()(*batch)
    assert loss.item() < 0.5


def test_missing_checkpoint_is_refused(cfg_tiny, tmp_path):
    with open_dict(cfg_tiny):
        cfg_tiny.ckpt_path = str(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nope.ckpt does not exist.*last.ckpt"):
        train(cfg_tiny)


def test_a_file_that_is_not_a_checkpoint_is_refused(cfg_tiny, tmp_path):
    bogus = tmp_path / "notes.ckpt"

    def attempt(n: int) -> None:
        with open_dict(cfg_tiny):
            cfg_tiny.ckpt_path = str(bogus)
            cfg_tiny.paths.output_dir = str(tmp_path / f"run{n}")  # a failed run's folder is its own
        train(cfg_tiny)

    bogus.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a readable checkpoint.*written by nanogpt-train"):
        attempt(1)
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match=r"is not a nanogpt checkpoint \(it names no checkpoint format\)"):
        attempt(2)
    # a nanogpt checkpoint of weights only (what sampling needs) cannot resume training
    torch.save({"state_dict": {}, "hyper_parameters": {"format": 1, "model": {}}}, bogus)
    with pytest.raises(ValueError, match=r"holds weights but no training state"):
        attempt(3)
    # a checkpoint of karpathy/nanoGPT's train.py says so
    torch.save({"model": {}, "model_args": {"n_layer": 6}, "iter_num": 5000, "config": {}}, bogus)
    with pytest.raises(
        ValueError, match=r"is a checkpoint of karpathy/nanoGPT's train.py \(iteration 5000\)"
    ):
        attempt(4)


def test_a_resume_that_cannot_continue_the_run_is_refused_naming_the_fix(
    trained_run, cfg_tiny, tmp_path, caplog
):
    last = trained_run.path / "checkpoints" / "last.ckpt"  # 40 steps of cfg_tiny's text
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text(make_text(seed=1))  # the same lines, so the same vocabulary, in another order

    def resume(name: str, **values) -> dict:
        cfg = cfg_tiny.copy()
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / name)
            cfg.ckpt_path = str(last)
            for key, value in values.items():
                OmegaConf.update(cfg, key.replace("__", "."), value)
        return train(cfg)

    with pytest.raises(ValueError, match=r"different model.*resume with model.n_embd=32"):
        resume("wider", model__n_embd=64, trainer__max_steps=80)
    for max_steps in (40, 30):
        with pytest.raises(
            ValueError,
            match=rf"saved at step 40, and trainer.max_steps={max_steps} leaves nothing to train: pass "
            r"trainer.max_steps above 40.*scheduler.decay_steps=",
        ):
            resume(f"max{max_steps}", trainer__max_steps=max_steps)
        # refused before training, not "completed" with the checkpoint's stale best
        result = json.loads((tmp_path / f"max{max_steps}" / "result.json").read_text())
        assert result["status"] == "failed" and "leaves nothing to train" in result["error"]
    with pytest.raises(
        ValueError, match=r"trained on another corpus: .*input.txt.*not .*shuffled.txt.*allow_new_corpus=true"
    ):
        resume("shuffled", data__path=str(shuffled), trainer__max_steps=80)

    # asked for, another corpus is logged; another stream (seed, batch size) is named, old and new
    with caplog.at_level(logging.INFO, logger="nanogpt"):
        metrics = resume(
            "fine_tune",
            data__path=str(shuffled),
            allow_new_corpus=True,
            trainer__max_steps=42,
            seed=7,
            data__batch_size=4,
        )
    assert metrics["step"] == 42
    assert "allow_new_corpus=true" in caplog.text and "goes on training it on" in caplog.text
    assert "data.seed=7" in caplog.text and "1337" in caplog.text
    assert "data.batch_size=4, where" in caplog.text and "had 8" in caplog.text
    # the resumed run went on with the checkpoint's seed, and its config and record say so
    assert OmegaConf.load(tmp_path / "fine_tune" / "config.yaml").seed == 1337
    assert json.loads((tmp_path / "fine_tune" / "result.json").read_text())["seed"] == 1337


def test_a_resumed_run_goes_on_with_the_checkpoints_seed_and_says_so(cfg_tiny, caplog):
    # the checkpoint's generators are restored and its stream goes on, so its seed is the run's
    saved = TrainedOn(corpus_checksum="ab" * 32, corpus_source="a text", seed=1337, batch_size=8)
    with open_dict(cfg_tiny):
        cfg_tiny.seed = 7
    with caplog.at_level(logging.WARNING, logger="nanogpt"):
        cfg = derived(cfg_tiny, 30, resume_from=Path("last.ckpt"), resumed=saved).cfg
    assert cfg.seed == cfg.data.seed == 1337
    assert "asks for data.seed=7" in caplog.text and "goes on with seed 1337" in caplog.text
    assert cfg_tiny.seed == 7  # derive leaves its input alone
    caplog.clear()
    same = derived(cfg, 30, resume_from=Path("last.ckpt"), resumed=saved).cfg
    assert same.seed == 1337 and caplog.text == ""


def test_a_checkpoint_from_before_the_data_record_resumes_with_a_warning(cfg_tiny, tmp_path, caplog):
    module = GPTLightningModule(GPTConfig(block_size=32, vocab_size=30, n_layer=1, n_head=1, n_embd=8))
    old = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "loops": {},
        "optimizer_states": [],
        "global_step": 10,
    }
    path = tmp_path / "old.ckpt"
    torch.save(old, path)
    now = TrainedOn(corpus_checksum="ab" * 32, corpus_source="a text", seed=1337, batch_size=8)
    with caplog.at_level(logging.WARNING, logger="nanogpt"):
        check_resumable(path, module.model.config, now, max_steps=20)
    assert "does not record the data it was trained on" in caplog.text


def test_a_failed_run_never_overwrites_an_earlier_runs_checkpoints(trained_run, cfg_tiny, tmp_path):
    run = trained_run.path
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with open_dict(cfg_tiny):
        cfg_tiny.paths.output_dir = str(run)
    with pytest.raises(FileExistsError, match="already holds another run's result.json"):
        train(cfg_tiny)  # the same run folder
    again = cfg_tiny.copy()
    with open_dict(again):  # a new run folder, but the earlier run's checkpoint folder
        again.paths.output_dir = str(tmp_path / "again")
        again.paths.checkpoint_dir = str(run / "checkpoints")
    with pytest.raises(FileExistsError, match="already holds checkpoints of another run"):
        train(again)
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_model_shape_errors_come_before_any_work(cfg_tiny):
    with open_dict(cfg_tiny):
        cfg_tiny.model.n_embd = 30
        cfg_tiny.model.n_head = 4
    with pytest.raises(ValueError, match="not divisible by model.n_head=4"):
        train(cfg_tiny)
    assert not Path(cfg_tiny.data.data_dir).exists()
    # the run folder records why the run failed, for sweep reports
    result = json.loads((Path(cfg_tiny.paths.output_dir) / "result.json").read_text())
    assert result["status"] == "failed" and "not divisible by model.n_head=4" in result["error"]


@pytest.mark.parametrize("key", ["data.batch_size", "model.block_size"])
def test_non_positive_batch_or_block_size_is_refused(cfg_tiny, key):
    with open_dict(cfg_tiny):
        group, name = key.split(".")
        cfg_tiny[group][name] = 0
    with pytest.raises(ValueError, match=rf"{key} must be a positive integer, got 0"):
        train(cfg_tiny)


def test_cli_trains_into_one_run_folder_and_ends_with_a_summary(tmp_path, text_path):
    args = [*TINY, "trainer.max_steps=10", "trainer.val_check_interval=5", f"data.path={text_path}"]
    args.append(f"compile_cache_dir={tmp_path / 'compile-cache'}")  # nothing compiled there yet
    result = run_cli("nanogpt-train", [*args, "name=cli", "paths.root_dir=."], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "runs" / "cli").iterdir()
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert (run / "config.yaml").is_file() and (run / "csv" / "metrics.csv").is_file()
    assert (run / ".hydra" / "overrides.yaml").is_file()
    assert len(list((tmp_path / "data" / "shakespeare_char").glob("*/meta.json"))) == 1  # the prepared text
    log = (run / "train.log").read_text()
    assert "parameters" in log and "output folder" in log and str(run.name) in log
    # compile=auto: a short run on a cold compile cache trains eagerly, says why, and records it
    assert "compile=auto: not compiling, as this machine has not compiled this training step" in log
    assert OmegaConf.load(run / "config.yaml").compile is False
    # train.log (and the console) end with the summary: how it ended, where its checkpoints are, and
    # the commands that sample from it and continue it
    for text in ("run completed at step 10", "best val/loss", "best.ckpt", "last.ckpt"):
        assert text in log and text in result.stdout
    assert f"nanogpt-sample ckpt_path={run}" in log
    record = json.loads((run / "result.json").read_text())
    assert record["resume"].endswith(f"ckpt_path={run}")
    # two val losses, each saying what it scored: best.ckpt on the whole val split (the headline,
    # result.json's final_val_loss) and the best of the validations, on data.eval_batches
    final, best = record["final_val_loss"], record["best_val_loss"]
    tokens = f"{record['final_val_tokens']:,} tokens"
    assert f"final val/loss  {final:.4f}  best.ckpt (step 10) on the whole val split, {tokens}" in log
    assert f"best val/loss   {best:.4f}  of the validations at step 10, on 2 batches of the val split" in log
    # the hint to train longer gives README's advice: a larger max_steps alone moves the learning rate
    advice = (
        "to train longer on one curve, set scheduler.decay_steps to the final length from the first run on"
    )
    readme = (Path(__file__).parents[1] / "README.md").read_text().replace("`", "")
    assert advice in " ".join(log.split()) and advice in " ".join(readme.lower().split())
    assert "raise trainer.max_steps" not in log
    # stdout is a pipe here, as in a SLURM log or `| tee`: progress comes as plain lines, at the loggers'
    # steps (TINY logs every step) and after each validation, with no escape codes of a redrawn bar
    assert "\x1b" not in result.stdout + result.stderr
    assert re.search(r"^step 5/10  train/loss \d+\.\d{4}  lr \S+  \S+ tok/s  eta \S+$", result.stdout, re.M)
    assert re.search(r"^step 10/10  val/loss \d+\.\d{4}  val/ppl ", result.stdout, re.M)
    # none of Lightning's start-up banners: which accelerators exist, advertisements
    for banner in ("GPU available", "TPU available", "HPU available", "litlogger", "Tip:"):
        assert banner not in result.stdout + result.stderr


# nanogpt-train --help as the console script runs it, then which heavy packages it imported
HELP = """
import json, sys
sys.argv = ["nanogpt-train", "--help"]
from nanogpt.cli.train import cli
try:
    cli()
except SystemExit as exit:
    assert exit.code in (None, 0), exit.code
heavy = ("nanogpt.training.job", "nanogpt.sweeps.study", "lightning", "torch", "torchmetrics", "transformers")
print("IMPORTED", json.dumps([name for name in heavy if name in sys.modules]))
"""


def test_help_lists_the_config_groups_without_importing_the_training_code():
    done = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for group in ("experiment:", "model:", "trainer:", "debug:", "shakespeare_char_cpu", "fdr"):
        assert group in done.stdout
    imported = set(json.loads(done.stdout.rsplit("IMPORTED", 1)[1]))
    assert "nanogpt.training.job" not in imported  # Lightning's seconds of imports wait for a job
    # Hydra's plugin scan imports our Optuna sweeper at every start: it imports no Lightning either
    assert not imported & {"lightning", "torch", "torchmetrics", "transformers"}


def test_the_progress_display_is_a_bar_on_a_terminal_and_lines_elsewhere(monkeypatch):
    assert isinstance(progress_bar("bar"), StepProgressBar)
    assert isinstance(progress_bar("lines"), StepLines)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert isinstance(progress_bar("auto"), StepProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert isinstance(progress_bar("auto"), StepLines)
    # a Jupyter kernel's stdout is no TTY, but it redraws a line as a terminal does
    jupyter_stream = type("OutStream", (), {"__module__": "ipykernel.iostream", "isatty": lambda self: False})
    monkeypatch.setattr(sys, "stdout", jupyter_stream())
    assert isinstance(progress_bar("auto"), StepProgressBar)
    with pytest.raises(ValueError, match="callbacks.progress_bar.style='tty' is not a style; use auto"):
        progress_bar("tty")


def test_a_moved_checkpoint_folder_is_found_by_ckpt_path_run_and_last(cfg_tiny, tmp_path, caplog):
    def run_cfg(name: str, max_steps: int, ckpt_path: str | None = None):
        cfg = cfg_tiny.copy()
        with open_dict(cfg):
            cfg.name = "moved"
            cfg.paths.log_dir = str(tmp_path / "runs")
            cfg.paths.output_dir = str(tmp_path / "runs" / "moved" / name)
            cfg.trainer.max_steps = max_steps
            cfg.scheduler.decay_steps = 40  # one schedule for the whole run, so the parts agree
            cfg.callbacks.bleu = None
            cfg.ckpt_path = ckpt_path
        return cfg

    with pytest.raises(
        FileNotFoundError, match=r"ckpt_path=last: no earlier run of name=moved under .*train one"
    ):
        train(run_cfg("none_yet", 40, "last"))
    first = run_cfg("first", 20)
    with open_dict(first):
        first.paths.checkpoint_dir = str(tmp_path / "elsewhere")
        first.data.final_eval_batches = 1  # a cap for a huge val split
    train(first)
    first_run = Path(first.paths.output_dir)
    assert not (first_run / "checkpoints").exists()
    assert {p.name for p in (tmp_path / "elsewhere").iterdir()} == {"best.ckpt", "last.ckpt"}
    result = json.loads((first_run / "result.json").read_text())
    assert (result["final_val_batches"], result["final_val_tokens"]) == (1, 8 * 32)  # batch 8 x context 32
    assert result["checkpoint_dir"] == str(tmp_path / "elsewhere")
    assert result["resume"].endswith(f"ckpt_path={first_run}")  # the printed command finds them

    # ckpt_path=<run folder> and ckpt_path=last both continue from the moved last.ckpt, at step 20
    for name, ckpt_path in [("by_last", "last"), ("by_folder", str(first_run))]:
        cfg = run_cfg(name, 40, ckpt_path)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nanogpt"):
            assert train(cfg)["step"] == 40
        if ckpt_path == "last":  # the newest run of the experiment, not the failed one or itself
            assert f"resuming the newest run of moved, {first_run}" in caplog.text
        run = Path(cfg.paths.output_dir)
        history = json.loads((run / "result.json").read_text())["history"]["val/loss"]
        assert [s for s, _ in history] == [20, 40]  # the first run's history goes on
        recorded = OmegaConf.load(run / "config.yaml")
        assert recorded.ckpt_path == str(tmp_path / "elsewhere" / "last.ckpt")  # the file it resumed from
        assert [s for s, _ in column(read_metrics(run), "train/loss")] == list(range(21, 41))


def test_config_yaml_is_the_config_that_trained(cfg_tiny, monkeypatch):
    """The derived values (vocabulary from the data, accumulation from the global batch) are in
    config.yaml and the loggers' hyperparameters, and are what the model and trainer used."""
    import nanogpt.training.job

    built = {}

    def spy_build(spec):
        built["spec"] = spec
        built["trainer"], built["module"], _ = out = real_build(spec)
        return out

    real_build = nanogpt.training.job.build
    monkeypatch.setattr(nanogpt.training.job, "build", spy_build)
    with open_dict(cfg_tiny):
        cfg_tiny.data.global_batch_tokens = 2 * 8 * 32  # 2 micro-batches of 8 windows of 32 tokens
        cfg_tiny.trainer.max_steps = 6
        cfg_tiny.callbacks.bleu = None
    assert cfg_tiny.model.vocab_size is None and cfg_tiny.trainer.accumulate_grad_batches == 1
    train(cfg_tiny)
    run = Path(cfg_tiny.paths.output_dir)
    recorded = OmegaConf.load(run / "config.yaml")
    logged = OmegaConf.load(run / "csv" / "hparams.yaml")
    # the loggers got the derived config (and Lightning adds the module's own: tokenizer, format)
    logged = OmegaConf.to_container(logged)
    recorded = OmegaConf.to_container(recorded)
    # the module's own hyperparameters replace `model`: GPTConfig's fields, without init_from (a
    # run's starting point, not a field of the model)
    assert recorded["model"].pop("init_from") is None
    assert {k: logged[k] for k in recorded} == recorded
    recorded = OmegaConf.create(recorded)
    trainer, module = built["trainer"], built["module"]
    assert recorded.trainer.accumulate_grad_batches == trainer.accumulate_grad_batches == 2
    assert recorded.model.vocab_size == module.model.config.vocab_size == len(set(cfg_tiny_text(cfg_tiny)))
    assert OmegaConf.to_container(recorded.model) == dataclasses.asdict(module.model.config)
    # the model config is made once, in the spec, and the module trains that very object
    spec = built["spec"]
    assert module.model.config is spec.model and module.trained_on is spec.trained_on
    assert OmegaConf.to_container(spec.cfg, resolve=True) == OmegaConf.to_container(
        OmegaConf.load(run / "config.yaml")
    )
    assert recorded.compile is False and module.training_forward is None  # compile=auto, a short run


def cfg_tiny_text(cfg) -> str:
    return Path(cfg.data.path).read_text()


def test_a_checkpoint_callback_with_a_folder_of_its_own_is_refused_naming_the_one_key(cfg_tiny, tmp_path):
    with open_dict(cfg_tiny):
        cfg_tiny.callbacks.model_checkpoint.dirpath = str(tmp_path / "elsewhere")
    with pytest.raises(
        ValueError, match=r"callbacks.model_checkpoint.dirpath=.*elsewhere.*set paths.checkpoint_dir="
    ):
        train(cfg_tiny)
    assert not Path(cfg_tiny.paths.output_dir).exists()  # refused before anything was written
