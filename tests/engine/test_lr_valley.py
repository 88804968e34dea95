"""The lr finder's suggestion lands in the steep descent (issue 12), and the sweep tells
a live plot every point as it is measured."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from PIL import Image

from loupe.engine.training.lr_finder import smooth_losses, suggest, valley

NUM_IT = 100
LRS = [1e-7 * (10.0 / 1e-7) ** (i / (NUM_IT - 1)) for i in range(NUM_IT)]


def _fastai_valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's ``valley`` as published (longest decreasing subsequence, its middle):
    kept here only to show the case the new suggestion fixes."""
    n = len(losses)
    lds, max_start, max_end = [1] * n, 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return lrs[max_start + int(sections) + int(sections / 2)]


def _sweep(trend, noise: float, seed: int) -> tuple[list[float], list[float]]:
    """What the finder records: noisy batch losses, smoothed, cut where they explode."""
    rng = random.Random(seed)
    raw = [max(0.01, trend(lr) + rng.gauss(0, noise)) for lr in LRS]
    smooth = smooth_losses(raw)
    best, cut = math.inf, len(smooth)
    for i, value in enumerate(smooth):
        best = min(best, value)
        if value > 4 * best:
            cut = i + 1
            break
    return LRS[:cut], smooth[:cut]


def _curve(descent_from: float, drift: float = 0.06):
    """The issue's shape: a flat start that drifts down a little (a frozen pretrained
    body learns slowly even at tiny rates), a steep fall from ``descent_from`` to the
    lowest loss at 5e-3, then the explosion."""
    bottom, start = math.log10(5e-3), math.log10(descent_from)

    def loss(lr: float) -> float:
        x = math.log10(lr)
        if x < start:
            return 0.75 - drift * (x + 7) / (start + 7)
        top = 0.75 - drift
        if x < bottom:
            return top - (x - start) / (bottom - start) * 0.35
        return top - 0.35 + 3 * (x - bottom) ** 2

    return loss


CASES = [(start, drift, noise, seed) for start in (1e-4, 1e-3) for drift in (0.0, 0.06)
         for noise in (0.02, 0.1) for seed in range(3)]


@pytest.mark.parametrize(("start", "drift", "noise", "seed"), CASES)
def test_the_suggestion_is_in_the_steep_descent(start, drift, noise, seed):
    lrs, losses = _sweep(_curve(start, drift), noise, seed)
    suggestion, _steep = suggest(lrs, losses, NUM_IT)
    # In the real descent: after the flat start, before the lowest loss (5e-3).
    assert start * 0.8 <= suggestion <= 5e-3


def test_fastais_subsequence_valley_lands_in_the_flat_start_of_that_curve():
    """Why the engine does not use fastai's code as is: with a slightly sloping flat
    start its middle of the longest decreasing *subsequence* sits in the flat part
    (1.4e-4 for a descent from 1e-3, as in the issue), where the engine's does not."""
    for seed in range(4):
        lrs, losses = _sweep(_curve(1e-3, 0.06), 0.02, seed)
        lo, hi = NUM_IT // 10, len(lrs) - 5
        assert _fastai_valley(lrs[lo:hi], losses[lo:hi]) < 5e-4
        assert valley(lrs[lo:hi], losses[lo:hi]) > 1e-3


def test_valley_edge_cases():
    assert valley([1e-3], [0.5]) == 1e-3
    assert math.isnan(valley([], []))
    rising = [1e-4, 1e-3, 1e-2]
    assert valley(rising, [0.1, 0.2, 0.3]) == 1e-4  # never fell: the least bad rate
    # A tiny bump inside the descent (noise) does not split it.
    lrs = [10.0 ** (-6 + i / 4) for i in range(20)]
    losses = [1.0] * 4 + [1.0 - 0.08 * k for k in range(1, 11)] + [0.3] * 6
    losses[8] += 0.01
    assert lrs[5] < valley(lrs, losses) < lrs[13]


@pytest.fixture
def colours(tmp_path) -> Path:
    rng = random.Random(2)
    for name, base in (("red", (210, 60, 50)), ("blue", (50, 70, 210))):
        (tmp_path / name).mkdir()
        for i in range(8):
            colour = tuple(min(255, max(0, c + rng.randint(-40, 40))) for c in base)
            Image.new("RGB", (32, 32), colour).save(tmp_path / name / f"{name}{i}.png")
    return tmp_path


def test_lr_find_tells_every_point_as_it_is_measured(colours):
    from loupe.engine.data.dataset import DataSpec, prepare_data
    from loupe.engine.data.labels import parse_label_rule
    from loupe.engine.data.splits import parse_split_rule
    from loupe.engine.training import TrainConfig, lr_find

    spec = DataSpec(colours, parse_label_rule("parent"), parse_split_rule("random:0.25"))
    config = TrainConfig(arch="test_resnet", size=32, batch_size=4, pretrained="none",
                         threads=1)
    points: list[tuple[float, float]] = []
    result = lr_find(prepare_data(spec), config, num_it=8, on_point=lambda *p: points.append(p))
    assert len(points) == len(result.lrs) >= 2
    assert [lr for lr, _ in points] == list(result.lrs)
    assert [loss for _, loss in points] == list(result.losses)
