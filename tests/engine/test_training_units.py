"""Unit tests of the training building blocks: metrics, schedule, config, augmentation,
batch loader and checkpoint flattening. Pure tensors, no data layer, no model files."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass

import pytest
import torch

from loupe.engine.core.errors import ConfigError
from loupe.engine.training import TrainConfig
from loupe.engine.training import metrics as M
from loupe.engine.training.augment import Augment
from loupe.engine.training.batches import (
    SQUARE_MIN_SCALE,
    BatchLoader,
    random_crop_box,
    random_square_box,
    train_crop,
)
from loupe.engine.training.lr_finder import steepest, suggest, valley
from loupe.engine.training.runs import flatten_optimizer, unflatten_optimizer
from loupe.engine.training.schedule import Cycle, discriminative_lrs, one_cycle

# -- metrics ------------------------------------------------------------------------------


def test_accuracy_and_error_rate():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    targets = torch.tensor([0, 0, 0, 1])
    assert M.accuracy(logits, targets) == pytest.approx(0.75)
    assert M.error_rate(logits, targets) == pytest.approx(0.25)


def test_multi_label_accuracy_uses_per_class_thresholds():
    logits = torch.logit(torch.tensor([[0.7, 0.2], [0.4, 0.9]]))
    targets = torch.tensor([[1, 0], [1, 1]])
    # default 0.5: decisions [1,0],[0,1] -> 3 of 4 right
    assert M.accuracy_multi(logits, targets) == pytest.approx(0.75)
    # threshold 0.3 on class 0 turns the 0.4 into a (correct) positive
    assert M.accuracy_multi(logits, targets, [0.3, 0.5]) == pytest.approx(1.0)
    assert M.f1_multi(logits, targets, [0.3, 0.5]) == pytest.approx(1.0)


def test_f1_multi_is_macro_average():
    logits = torch.logit(torch.tensor([[0.9, 0.9], [0.1, 0.1]]))
    targets = torch.tensor([[1, 0], [0, 0]])
    # class 0: p=1, r=1, f1=1; class 1: predicted once wrongly, no positives -> f1=0
    assert M.f1_multi(logits, targets) == pytest.approx(0.5)


def test_per_class_report_and_confusion_matrix():
    preds = torch.tensor([0, 0, 1, 1, 2, 0])
    targets = torch.tensor([0, 1, 1, 1, 2, 2])
    cm = M.confusion_matrix(preds, targets, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 2, 0], [1, 0, 1]]
    rows = {r["class"]: r for r in M.per_class_report(preds, targets, ["a", "b", "c"])}
    assert rows["a"]["precision"] == pytest.approx(1 / 3)
    assert rows["a"]["recall"] == pytest.approx(1.0)
    assert rows["b"]["precision"] == pytest.approx(1.0)
    assert rows["b"]["recall"] == pytest.approx(2 / 3)
    assert rows["b"]["f1"] == pytest.approx(0.8)
    assert rows["c"]["support"] == 2


def test_top_losses_largest_first():
    values, indices = M.top_losses(torch.tensor([0.1, 2.0, 0.5, 3.0]), 2)
    assert indices.tolist() == [3, 1]
    assert values.tolist() == pytest.approx([3.0, 2.0])


# -- schedule -----------------------------------------------------------------------------


def test_discriminative_lrs_span_lr_over_100_to_lr():
    lrs = discriminative_lrs(1e-3, 3)
    assert lrs[0] == pytest.approx(1e-5)
    assert lrs[1] == pytest.approx(1e-4)
    assert lrs[2] == pytest.approx(1e-3)


def _optimizer():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.AdamW([{"params": [a]}, {"params": [b]}], lr=1.0)


def test_one_cycle_peaks_per_group_and_fast_forwards():
    cycle = Cycle(epochs=2, max_lrs=(1e-4, 1e-2), pct_start=0.25)
    opt = _optimizer()
    sched = one_cycle(opt, cycle, steps_per_epoch=10)
    seen = []
    for _ in range(12):
        opt.step()
        sched.step()
        seen.append([g["lr"] for g in opt.param_groups])
    assert max(s[1] for s in seen) == pytest.approx(1e-2, rel=1e-3)
    assert max(s[0] for s in seen) == pytest.approx(1e-4, rel=1e-3)
    # a new scheduler on the same optimizer state, advanced to step 12, agrees
    opt2 = _optimizer()
    opt2.load_state_dict(opt.state_dict())
    one_cycle(opt2, cycle, steps_per_epoch=10, start_step=12)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx(seen[-1])
    assert opt2.param_groups[0]["betas"][0] == pytest.approx(opt.param_groups[0]["betas"][0])


# -- config -------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_bad_values():
    cfg = TrainConfig(arch="resnet18", epochs=3, lr=2e-3, device="cpu")
    assert TrainConfig.loads(cfg.dumps()) == cfg
    assert TrainConfig().max_lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="device 'tpu'.*auto, cpu, cuda, mps"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="epochs 0"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="pretrained 'imagenet'.*'auto', 'none'"):
        TrainConfig(pretrained="imagenet")
    with pytest.raises(ConfigError, match="lr -1"):
        TrainConfig(lr=-1)
    with pytest.raises(ConfigError, match="unknown training setting.*colour"):
        TrainConfig.from_json({"colour": "red"})
    with pytest.raises(ConfigError, match=r"\.loupe"):
        TrainConfig(out="model.pkl")


def test_resize_defaults_to_one_constant_and_rejects_unknown_methods():
    from loupe.engine.data.resize import DEFAULT_RESIZE, RESIZE_METHODS

    assert RESIZE_METHODS == ("crop", "squish", "pad")
    assert TrainConfig().resize == DEFAULT_RESIZE == "pad"
    assert TrainConfig.loads(TrainConfig(resize="pad").dumps()).resize == "pad"
    with pytest.raises(ConfigError, match="'stretch' is not one of: crop, squish, pad"):
        TrainConfig(resize="stretch")


def test_a_config_saved_before_resize_existed_loads_as_crop(tmp_path):
    """Old runs trained with crop: resuming them must not switch to the new default."""
    from loupe.engine.training.builders import load_run_config

    old = {k: v for k, v in TrainConfig(arch="resnet18").to_json().items() if k != "resize"}
    assert TrainConfig.from_json(old).resize == "crop"
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert load_run_config(tmp_path).resize == "crop"


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_cli_resize_flag_reaches_the_config(command):
    from loupe.engine.cli import build_parser
    from loupe.engine.cli.train_cmd import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args([command, "ROOT"])).resize == "pad"
    for method in ("crop", "squish", "pad"):
        args = parser.parse_args([command, "ROOT", "--resize", method])
        assert config_from_args(args).resize == method
    with pytest.raises(SystemExit):
        parser.parse_args([command, "ROOT", "--resize", "stretch"])


# -- augmentation -------------------------------------------------------------------------


def test_flip_only_mirrors_some_images_exactly():
    x = torch.rand(16, 3, 8, 8)
    out = Augment(flip=True, rotate=0, lighting=0)(x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x, strict=True)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert any(flipped) and any(same)


def test_augment_is_reproducible_and_stays_in_range():
    x = torch.rand(4, 3, 16, 16)
    aug = Augment(flip=True, rotate=15, lighting=0.3)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


# -- batch loader -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    item: int


def _loader(train: bool, seed: int = 0, n: int = 10, bs: int = 4) -> BatchLoader:
    images = {i: torch.full((3, 20, 30), i, dtype=torch.uint8) for i in range(n)}
    return BatchLoader(images.__getitem__, [_Item(i) for i in range(n)], torch.arange(n),
                       batch_size=bs, train=train, seed=seed)


def test_train_batches_are_shuffled_cropped_and_deterministic():
    loader = _loader(train=True)
    assert len(loader) == 2  # 10 // 4, the incomplete batch is dropped
    with loader.epoch(0, 12) as batches:
        first = list(batches)
    with _loader(train=True).epoch(0, 12) as batches:
        again = list(batches)
    assert [tuple(x.shape) for x, _, _ in first] == [(4, 3, 12, 12)] * 2
    assert first[0][0].dtype == torch.uint8
    for (x1, y1, i1), (x2, _y2, i2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(i1, i2)
        # targets follow their images: image i is filled with value i
        assert x1[:, 0, 0, 0].tolist() == y1.tolist()
    with loader.epoch(1, 12) as batches:
        other = [i.tolist() for _, _, i in batches]
    assert other != [i.tolist() for _, _, i in first]


def test_crop_box_stays_inside_the_image():
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_crop_box(rng, 37, 50)
        assert 0 <= top and top + h <= 37 and 0 <= left and left + w <= 50


def test_square_training_crops_zoom_gently_and_stay_inside():
    rng = random.Random(0)
    sides = []
    for _ in range(200):
        top, left, h, w = random_square_box(rng, 40, 40)
        assert h == w and 0 <= top <= 40 - h and 0 <= left <= 40 - w
        sides.append(h)
    assert min(sides) >= math.floor(40 * math.sqrt(SQUARE_MIN_SCALE)) and max(sides) == 40
    assert len(set(sides)) > 3, "the zoom is random"


def test_squish_training_crops_keep_both_edges_that_crop_would_cut():
    """A squished square with coloured left/right edges: every training crop keeps both."""
    u8 = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    u8[1:, :, :8] = 0  # left quarter red
    u8[:2, :, -8:] = 0  # right quarter blue
    rng = random.Random(1)
    for _ in range(50):
        x = train_crop(u8, 16, rng, "squish")
        assert x.shape == (3, 16, 16)
        assert int(x[0, :, 0].min()) > 200 and int(x[2, :, 0].max()) < 60  # red at the left
        assert int(x[2, :, -1].min()) > 200 and int(x[0, :, -1].max()) < 60  # blue at the right
    crops = [train_crop(u8, 16, rng, "crop") for _ in range(50)]
    assert any(int(c[1, :, 0].min()) > 200 for c in crops), "crop's zoom can lose an edge"


def test_eval_batches_of_a_square_cache_are_the_whole_square():
    images = {i: torch.full((3, 24, 24), i, dtype=torch.uint8) for i in range(4)}
    images[0][:, :, 0] = 200  # a marked left column survives only if nothing is cut off
    loader = BatchLoader(images.__getitem__, [_Item(i) for i in range(4)], torch.arange(4),
                         batch_size=4, train=False, resize="pad")
    with loader.epoch(0, 24) as batches:
        ((x, _, _),) = list(batches)
    assert torch.equal(x[0], images[0].float() / 255)


def test_closing_an_epoch_early_stops_the_producer_thread():
    loader = _loader(train=True, n=40, bs=2)
    batches = loader.epoch(0, 8)
    iterator = iter(batches)
    next(iterator)
    batches.close()
    assert not batches._thread.is_alive()


# -- checkpoints and lr finder -------------------------------------------------------------


def test_optimizer_state_flattens_to_tensors_and_json_and_back():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    import json

    restored = unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=5.0)
    opt2.load_state_dict(restored)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.99)
    assert torch.equal(opt2.state[model.weight]["exp_avg"], opt.state[model.weight]["exp_avg"])


def test_valley_and_steep_on_a_known_curve():
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]
    # flat, then a descent between 1e-4 and 1e-2, then an explosion
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        base = 2.0 if x < -4 else (2.0 - (x + 4) * 0.9 if x < -2 else 0.2 + (x + 2) ** 2)
        losses.append(base)
    v, s = suggest(lrs, losses, 100)
    assert 1e-4 < v < 1e-2
    assert 1e-4 <= s < 1e-2
    assert valley([1.0, 2.0], [1.0, 0.5]) in (1.0, 2.0)
    assert steepest([1.0, 10.0, 100.0], [3.0, 1.0, 0.9]) == 1.0


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 8])
def test_one_cycle_handles_tiny_step_counts(steps):
    for pct in (0.25, 0.3, 0.99):
        opt = _optimizer()
        sched = one_cycle(opt, Cycle(epochs=1, max_lrs=(1e-3, 1e-2), pct_start=pct), steps)
        for _ in range(steps):
            opt.step()
            sched.step()
        assert all(math.isfinite(g["lr"]) for g in opt.param_groups)



def test_test_looks_counts_per_bundle_without_a_run_folder(tmp_path):
    """A bundle from elsewhere (no run folder here) is counted in a per-bundle record,
    and reading the count never adds a look."""
    from loupe.engine.training.scoring import record_test_look, test_looks
    from tests.engine.predict_helpers import make_bundle

    bundle = make_bundle(tmp_path / "elsewhere.loupe")
    assert test_looks(bundle) == 0
    training = {"run_dir": str(tmp_path / "missing-run")}
    assert record_test_look(bundle, training) == 1
    assert record_test_look(bundle, training) == 2
    assert test_looks(bundle) == 2
    assert test_looks(bundle) == 2


def _tree_digest(folder) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_model_naming_a_folder_outside_the_runs_dir_never_writes_there(tmp_path, capsys):
    """A crafted bundle whose training.run_dir names a run-like folder outside
    ``paths.runs_dir()``: evaluate --test counts nothing, warns once, and the folder's
    files are byte for byte unchanged."""
    from loupe.engine.cli import main
    from loupe.engine.training.scoring import record_test_look, test_looks
    from tests.engine.predict_helpers import make_bundle, save_colour

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("{}", encoding="utf-8")
    (victim / "run.json").write_text('{"test_looks": 7}', encoding="utf-8")
    before = _tree_digest(victim)
    root = tmp_path / "images"
    for name, rgb in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
        for i in range(6):
            save_colour(root / name / f"{name}{i}.png", (rgb[0], rgb[1] + 10 * i, rgb[2]))
    bundle = make_bundle(tmp_path / "crafted.loupe", size=32, training={"run_dir": str(victim)})

    code = main(["evaluate", str(bundle), str(root), "--test-fraction", "0.3", "--test",
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["test_looks"] is None
    assert len(result["warnings"]) == 1 and "not counted" in result["warnings"][0]
    assert str(victim) in result["warnings"][0]
    assert record_test_look(bundle, {"run_dir": str(victim)}) is None
    assert test_looks(bundle) == 0
    assert _tree_digest(victim) == before
    # a symlink inside the runs dir pointing out of it is outside too
    from loupe.engine.core import paths

    link = paths.runs_dir() / "sneaky"
    link.symlink_to(victim, target_is_directory=True)
    assert record_test_look(bundle, {"run_dir": str(link)}) is None
    assert _tree_digest(victim) == before
