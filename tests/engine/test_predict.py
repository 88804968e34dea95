"""Predictor: top-k, "unknown", multi-label thresholds, batching, the shared loader."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from PIL import Image

from loupe.engine.core.errors import CancelledError, ConfigError, DatasetError
from loupe.engine.core.events import CancelToken, Progress
from loupe.engine.data.cache import ImageCache, presize_for
from loupe.engine.data.transforms import Preprocessing, normalize
from loupe.engine.inference.predict import Predictor
from loupe.engine.training.batches import BatchLoader
from tests.engine.cache_items import Item, item_for
from tests.engine.predict_helpers import (
    BiasNet,
    make_bundle,
    predictor_for,
    save_noise,
    save_rotated_jpeg,
)

LOGITS = (2.0, 0.5, -1.0, 1.0)
CLASSES = ("ant", "bee", "cat", "dog")


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_topk_is_sorted_and_matches_softmax(tmp_path):
    image = save_noise(tmp_path / "x.png")
    predictor = predictor_for(BiasNet(LOGITS), CLASSES)
    prediction = predictor.predict(image, topk=3)

    expected = sorted(zip(CLASSES, _softmax(LOGITS), strict=True), key=lambda kv: -kv[1])
    assert [label for label, _ in prediction.top] == [label for label, _ in expected[:3]]
    for (_, got), (_, want) in zip(prediction.top, expected, strict=False):
        assert got == pytest.approx(want, abs=1e-6)
    probs = [p for _, p in prediction.top]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) < 1.0
    assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-6)
    assert list(prediction.probs) == list(CLASSES)
    assert prediction.label == "ant" and prediction.unknown is False


def test_topk_larger_than_classes_returns_all_summing_to_one(tmp_path):
    prediction = predictor_for(BiasNet(LOGITS), CLASSES).predict(save_noise(tmp_path / "x.png"),
                                                                  topk=10)
    assert len(prediction.top) == len(CLASSES)
    assert sum(p for _, p in prediction.top) == pytest.approx(1.0, abs=1e-6)


def test_unknown_threshold_is_off_by_default_and_applies_when_set(tmp_path):
    image = save_noise(tmp_path / "x.png")
    top = max(_softmax(LOGITS))  # ~0.61
    assert predictor_for(BiasNet(LOGITS), CLASSES).predict(image).unknown is False

    below = predictor_for(BiasNet(LOGITS), CLASSES, unknown_below=top + 0.05).predict(image)
    assert below.unknown is True and below.label is None
    assert below.top[0][0] == "ant"  # the ranking is still reported
    assert below.to_json()["unknown"] is True

    above = predictor_for(BiasNet(LOGITS), CLASSES, unknown_below=top - 0.05).predict(image)
    assert above.unknown is False and above.label == "ant"
    # A threshold chosen after predicting (the desktop's slider) follows the same rule.
    assert [above.unknown_at(t) for t in (None, top - 0.05, top + 0.05)] == [False, False, True]


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_unknown_threshold_must_be_a_probability(bad):
    with pytest.raises(ConfigError, match="unknown"):
        predictor_for(BiasNet(LOGITS), CLASSES, unknown_below=bad)


def test_multi_label_returns_every_label_above_its_own_threshold(tmp_path):
    image = save_noise(tmp_path / "x.png")
    logits = (2.2, -0.4, -1.4)  # sigmoid ~ 0.90, 0.40, 0.20
    predictor = predictor_for(
        BiasNet(logits), ("sky", "tree", "car"), multi_label=True, thresholds=(0.5, 0.3, 0.5)
    )
    prediction = predictor.predict(image)
    assert [label for label, _ in prediction.top] == ["sky", "tree"]
    assert prediction.probs["car"] == pytest.approx(1 / (1 + math.exp(1.4)), abs=1e-6)
    assert prediction.multi_label and not prediction.unknown

    none = predictor_for(BiasNet(logits), ("sky", "tree", "car"), multi_label=True,
                         thresholds=(0.95, 0.95, 0.95)).predict(image)
    assert none.top == () and none.label is None


def test_multi_label_thresholds_default_to_one_half(tmp_path):
    predictor = predictor_for(BiasNet((0.1, -0.1)), ("a", "b"), multi_label=True)
    assert [label for label, _ in predictor.predict(save_noise(tmp_path / "x.png")).top] == ["a"]


def test_thresholds_must_match_classes():
    with pytest.raises(ConfigError, match="one per class"):
        predictor_for(BiasNet((0.0, 0.0)), ("a", "b"), multi_label=True, thresholds=(0.5,))


def test_from_file_matches_the_validation_transform(tmp_path):
    """A file scores exactly as validation scores it: same loader, same crop, same stats."""
    from loupe.engine.data.transforms import eval_tensor_from_path, normalize

    bundle = make_bundle(tmp_path / "m.loupe", size=64)
    image = save_noise(tmp_path / "x.png", size=(97, 80))
    predictor = Predictor.from_file(bundle)
    pre = predictor.preprocessing
    x = normalize(eval_tensor_from_path(image, pre.size, pre.presize), pre.mean, pre.std)
    with torch.inference_mode():
        expected = torch.softmax(predictor.model(x.unsqueeze(0)), dim=1)[0].tolist()
    got = list(predictor.predict(image, topk=2).probs.values())
    assert got == pytest.approx(expected, abs=1e-6)
    assert predictor.classes == ("cat", "dog") and predictor.arch == "test_resnet"
    assert not predictor.model.training


def test_path_and_loaded_image_give_the_same_prediction(tmp_path):
    bundle = make_bundle(tmp_path / "m.loupe")
    image = save_noise(tmp_path / "x.png", size=(90, 70), seed=3)
    predictor = Predictor.from_file(bundle)
    from_path = predictor.predict(image).probs
    from_pil = predictor.predict(Image.open(image)).probs
    assert list(from_path.values()) == pytest.approx(list(from_pil.values()), abs=1e-6)


def test_exif_rotated_file_is_predicted_upright(tmp_path):
    """The loader applies EXIF orientation: a camera-rotated JPEG equals the upright one."""
    bundle = make_bundle(tmp_path / "m.loupe")
    raw = Image.open(save_noise(tmp_path / "raw.png", size=(96, 64), seed=5))
    rotated = save_rotated_jpeg(tmp_path / "rot.jpg", raw, orientation=6)
    upright = raw.transpose(Image.Transpose.ROTATE_270)
    upright_file = tmp_path / "upright.jpg"
    upright.save(upright_file, quality=95)
    predictor = Predictor.from_file(bundle)
    rot, up = predictor.predict(rotated).probs, predictor.predict(upright_file).probs
    assert list(rot.values()) == pytest.approx(list(up.values()), abs=2e-3)
    # ... and not equal to reading the pixels without orientation.
    unrotated = predictor.predict(raw).probs
    assert max(abs(a - b) for a, b in zip(rot.values(), unrotated.values(), strict=True)) > 1e-4


def test_predict_many_batches_equal_single_predictions(tmp_path):
    bundle = make_bundle(tmp_path / "m.loupe")
    paths = [save_noise(tmp_path / f"{i}.png", size=(70 + i, 64), seed=i) for i in range(5)]
    predictor = Predictor.from_file(bundle)
    events = []
    many = predictor.predict_many(paths, batch_size=2, topk=2, on_event=events.append)
    singles = [predictor.predict(p, topk=2) for p in paths]
    assert [p.path for p in many] == paths
    for batched, single in zip(many, singles, strict=True):
        assert list(batched.probs.values()) == pytest.approx(list(single.probs.values()),
                                                             abs=1e-5)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.done for e in progress] == [2, 4, 5]


def test_a_broken_file_is_reported_by_name(tmp_path):
    predictor = predictor_for(BiasNet(LOGITS), CLASSES)
    good = save_noise(tmp_path / "good.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        predictor.predict_many([good, broken])
    outcomes = list(predictor.iter_batches([broken, good], batch_size=4))
    assert isinstance(outcomes[0].result, DatasetError)
    assert outcomes[1].result.label == "ant"


def test_cancel_stops_batched_prediction(tmp_path):
    predictor = predictor_for(BiasNet(LOGITS), CLASSES)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        predictor.predict_many([save_noise(tmp_path / "x.png")], cancel=token)


def test_invalid_topk_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="top-k"):
        predictor_for(BiasNet(LOGITS), CLASSES).predict(save_noise(tmp_path / "x.png"), topk=0)


@dataclass(frozen=True)
class _Labelled:
    item: Item


@pytest.mark.parametrize("resize", ["crop", "squish", "pad"])
def test_a_bundle_predicts_with_its_own_resize_method_exactly_as_validation(tmp_path, resize):
    """Prediction from a saved bundle == the validation batch training computed, per method."""
    bundle = make_bundle(tmp_path / "m.loupe", size=32, resize=resize)
    images = [save_noise(tmp_path / "wide.png", size=(97, 50), seed=1),
              save_noise(tmp_path / "tall.png", size=(40, 90), seed=2)]
    predictor = Predictor.from_file(bundle, warm_up=False)
    pre = predictor.preprocessing
    assert pre.resize == resize
    # the validation side, built as loupe.engine.training.session.Session builds it
    cache = ImageCache(presize_for(32, resize), disk_dir=tmp_path / "spill", resize=resize)
    loader = BatchLoader(cache.get, [_Labelled(item_for(p)) for p in images], torch.zeros(2),
                         batch_size=2, train=False, resize=resize)
    with loader.epoch(0, 32) as batches:
        ((xb, _, _),) = list(batches)
    got = torch.stack([predictor.prepare(p).tensor for p in images])
    assert got.shape == (2, 3, 32, 32)
    assert torch.equal(got, normalize(xb, pre.mean, pre.std))


def test_crop_box_tells_the_overlay_where_the_model_input_lies():
    def box(resize: str) -> tuple[float, ...]:
        pre = Preprocessing.for_size(32, resize=resize)
        return predictor_for(BiasNet(LOGITS), CLASSES, preprocessing=pre).crop_box_for((60, 30))

    # crop: short side 30 -> 37, so the 32 px crop is 32/74 of the width, 32/37 of the height
    assert box("crop") == pytest.approx(
        ((1 - 32 / 74) / 2, (1 - 32 / 37) / 2, (1 + 32 / 74) / 2, (1 + 32 / 37) / 2)
    )
    assert box("squish") == (0.0, 0.0, 1.0, 1.0)
    # pad: 60×30 fits as 32×16 with 8 px of padding above and below (half the image height)
    assert box("pad") == pytest.approx((0.0, -0.5, 1.0, 1.5))
