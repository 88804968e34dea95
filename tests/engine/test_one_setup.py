"""One way to score, one way to set up a fit: training's validation, ``evaluate`` of the
saved model and the error analysis give the same per-image losses; the lr finder starts
from the very model and batches ``train`` starts from, without a run folder."""

from __future__ import annotations

import pytest

from loupe.engine.core import paths
from loupe.engine.evaluation.analysis import analyze
from loupe.engine.inference.predict import Predictor
from loupe.engine.training import evaluate, lr_find, train
from loupe.engine.training import loop as loop_module
from tests.engine.test_training_trainer import _config, _make_folder, _prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return _prepared(_make_folder(tmp_path_factory.mktemp("colours"), {"red": 12, "blue": 12}))


def test_validation_evaluate_and_analysis_score_the_same_losses(prepared):
    result = train(prepared, _config(arch="test_resnet", epochs=1))
    last = result.history[-1]
    batch_size = int(last["batch_size"])

    scored = evaluate(result.bundle_path, prepared, device="cpu", batch_size=batch_size)
    assert scored.metrics["loss"] == last["valid_loss"]
    assert scored.top_losses == result.report["top_losses"]

    predictor = Predictor.from_file(result.bundle_path)
    analysis = analyze(predictor, prepared.plan.valid, cam_method=None, batch_size=batch_size)
    assert analysis.metrics["valid_loss"] == last["valid_loss"]
    losses = {row.rel: row.loss for row in analysis.rows}
    assert len(losses) == len(prepared.plan.valid)
    for worst in result.report["top_losses"]:  # per image, from training's last validation
        assert losses[worst["rel"]] == pytest.approx(worst["loss"], rel=1e-6)


def test_lr_find_starts_where_train_starts_and_keeps_no_run(prepared, monkeypatch):
    # No augmentation: the finder draws its random views from other streams than epoch 0.
    config = _config(arch="test_resnet", epochs=1, flip=False, rotate=0.0, lighting=0.0)
    runs_before = set(paths.runs_dir().iterdir())
    found = lr_find(prepared, config, num_it=3)
    assert set(paths.runs_dir().iterdir()) == runs_before, "the lr finder made a run folder"

    first_losses: list[float] = []
    real_step = loop_module.train_step

    def step(ctx, x, y):
        loss = real_step(ctx, x, y)
        first_losses.append(float(loss))
        return loss

    monkeypatch.setattr(loop_module, "train_step", step)
    train(prepared, config)
    # The sweep's first (smoothed) loss is the loss of the first batch, before any step.
    assert found.losses[0] == pytest.approx(first_losses[0], rel=1e-6)
