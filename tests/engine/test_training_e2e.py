"""End to end: the bundled sample actually learns; the CLI commands (train, resume,
evaluate --test, lr-find) print what design.md promises; the lr finder suggests a rate
where the loss falls."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.cli import main
from loupe.engine.core.resources import sample_dir
from loupe.engine.data.dataset import DataSpec, prepare_data
from loupe.engine.data.labels import parse_label_rule
from loupe.engine.data.splits import parse_split_rule
from loupe.engine.training import TrainConfig, evaluate, lr_find, train
from loupe.engine.training.lr_finder import plot_lr_find


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    rng = random.Random(1)
    for name, base in (("red", (210, 60, 50)), ("blue", (50, 70, 210))):
        (root / name).mkdir()
        for i in range(20):
            colour = tuple(min(255, max(0, c + rng.randint(-50, 50))) for c in base)
            Image.new("RGB", (40, 40), colour).save(root / name / f"{name}{i}.png")
    return root


def test_the_bundled_sample_actually_learns():
    """Animals (Capitalised names) vs food (lowercase), from random init, 48 px.

    timm's tiny ``test_resnet`` (0.4 M parameters) keeps this to seconds on a CPU;
    the run is deterministic for its seed, so the bound is not a coin toss."""
    spec = DataSpec(sample_dir(), parse_label_rule("upper"), parse_split_rule("random:0.2"))
    prepared = prepare_data(spec)
    valid = prepared.plan.valid
    majority = max(sum(li.labels == (c,) for li in valid) for c in prepared.plan.classes)
    chance_error = 1 - majority / len(valid)  # always answering the larger class
    config = TrainConfig(arch="test_resnet", epochs=16, size=48, batch_size=32, lr=1e-2,
                         pretrained="none", seed=42, threads=2)
    result = train(prepared, config)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"] - 0.1
    assert last["error_rate"] <= 0.3
    assert last["error_rate"] < chance_error - 0.1
    from loupe.engine.models.bundle import load_bundle

    loaded = load_bundle(result.bundle_path)
    assert loaded.meta.classes == prepared.plan.classes
    assert loaded.meta.training["label_rule"] == "upper"
    # the bundle scores the validation set exactly as training did
    scored = evaluate(result.bundle_path, prepared)
    assert scored.metrics["error_rate"] == pytest.approx(last["error_rate"])


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


TRAIN_ARGS = ("--arch", "resnet18", "--pretrained", "none", "--size", "32", "--bs", "8",
              "--freeze-epochs", "0", "--threads", "1")


def test_cli_train_json_lines_resume_and_evaluate_test(colours, tmp_path, capsys):
    out_file = tmp_path / "colours.loupe"
    code, out, err = _cli(
        capsys, "train", str(colours), *TRAIN_ARGS, "--epochs", "2", "--test-fraction", "0.2",
        "--out", str(out_file), "--json",
    )
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [set(line) for line in lines[:2]] == [
        {"epoch", "train_loss", "valid_loss", "error_rate", "seconds"}
    ] * 2
    assert [line["epoch"] for line in lines[:2]] == [1, 2]
    assert lines[-1]["model"] == str(out_file) and out_file.is_file()
    assert lines[-1]["error_rate"] == lines[1]["error_rate"]
    assert "RANDOM INITIALISATION" in err and "WARNING" in err

    code, out, err = _cli(capsys, "evaluate", str(out_file), str(colours), "--test-fraction",
                          "0.2", "--test", "--json")
    first = json.loads(out)
    assert code == 0 and first["split"] == "test" and first["test_looks"] == 1
    assert first["warnings"] == []
    code, out, _ = _cli(capsys, "evaluate", str(out_file), str(colours), "--test-fraction",
                        "0.2", "--test", "--json")
    second = json.loads(out)
    assert second["test_looks"] == 2 and "2 times" in second["warnings"][0]
    assert second["metrics"] == first["metrics"]
    code, out, _ = _cli(capsys, "evaluate", str(out_file), str(colours), "--test-fraction", "0.2")
    assert "valid set" in out and "precision" in out and "test-set looks" not in out

    from loupe.engine.models.bundle import read_bundle_meta
    from loupe.engine.training.scoring import test_looks

    run = Path(read_bundle_meta(out_file).training["run_dir"])
    assert json.loads((run / "run.json").read_text())["test_looks"] == 2
    assert test_looks(out_file) == 2  # reading the count does not add a look
    assert test_looks(out_file) == 2
    # without data options, evaluate uses the run's own (its test fraction from data.json)
    code, out, _ = _cli(capsys, "evaluate", str(out_file), str(colours), "--test", "--json")
    assert code == 0 and json.loads(out)["n_images"] == first["n_images"]
    code, _, err = _cli(capsys, "evaluate", str(out_file), str(colours), "--test",
                        "--test-fraction", "0.3")
    assert code == 1 and "trained with --test-fraction 0.2" in err  # would hold train images
    before = out_file.read_bytes()
    code, out, err = _cli(capsys, "train", str(colours), "--resume", run.name, "--json")
    assert code == 1 and "already finished" in err and str(out_file) in err
    assert out_file.read_bytes() == before  # a finished run's model is never rewritten

    from loupe.engine.training import runs

    runs.update_record(run, status="cancelled")  # as if it had been interrupted
    code, out, err = _cli(capsys, "train", str(colours), "--resume", run.name, "--json")
    assert code == 0
    assert json.loads(out.splitlines()[-1])["model"] == str(out_file)
    assert "ignored" not in err
    runs.update_record(run, status="cancelled")
    code, out, err = _cli(capsys, "train", str(colours), "--resume", run.name, "--seed", "7")
    assert code == 0 and "--seed 7 ignored: a resumed run keeps" in err
    runs.update_record(run, status="cancelled")
    code, out, err = _cli(capsys, "train", str(tmp_path), "--resume", run.name)
    assert code == 1 and "trained on" in err


def test_cli_train_prints_the_epoch_table(colours, capsys):
    code, out, err = _cli(capsys, "train", str(colours), *TRAIN_ARGS, "--epochs", "1")
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("epoch"))
    assert header.split() == ["epoch", "train_loss", "valid_loss", "error_rate", "time"]
    row = out.splitlines()[out.splitlines().index(header) + 1].split()
    assert row[0] == "1" and len(row) == 5 and ":" in row[4]
    assert "Saved model:" in out


def test_cli_train_ctrl_c_stops_cleanly_keeps_the_checkpoint_and_says_how_to_resume(
    colours, capsys, monkeypatch
):
    import os
    import signal

    from loupe.engine.training import loop as loop_module

    real_step, calls = loop_module.train_step, []

    def step(ctx, x, y):
        calls.append(1)
        if len(calls) == 5:  # first batch of epoch 2 (32 train images, batch 8)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(ctx, x, y)

    monkeypatch.setattr(loop_module, "train_step", step)
    code, out, err = _cli(capsys, "train", str(colours), *TRAIN_ARGS, "--epochs", "3")
    assert code == 130 and "Traceback" not in err
    assert len(calls) == 5  # stopped at the next batch, not at the end of training
    line = err.strip().splitlines()[-1]
    run = Path(out.split("Run folder: ")[1].splitlines()[0])
    assert "checkpoint of epoch 1" in line and f"--resume {run.name}" in line
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_lr_find_suggests_a_rate_where_the_loss_falls(colours, tmp_path, capsys):
    spec = DataSpec(colours, parse_label_rule("parent"), parse_split_rule("random:0.2"))
    config = TrainConfig(arch="test_resnet", size=32, batch_size=8, pretrained="none", threads=1)
    result = lr_find(prepare_data(spec), config, num_it=60)
    assert 2 < len(result.lrs) <= 60
    assert result.lrs == tuple(sorted(result.lrs))
    assert 1e-7 <= result.suggestion < 10
    at = result.lrs.index(result.suggestion)
    assert result.losses[at] < result.losses[0]
    png = plot_lr_find(result, tmp_path / "lr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, _ = _cli(capsys, "lr-find", str(colours), "--arch", "test_resnet", "--pretrained",
                        "none", "--size", "32", "--bs", "8", "--threads", "1",
                        "--plot", str(tmp_path / "cli.png"))
    assert code == 0 and "Suggested learning rate:" in out
    assert (tmp_path / "cli.png").is_file()
