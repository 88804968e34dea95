"""Activation maps: right region, one forward, original-size overlays, filters, channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from loupe.engine.core.errors import ConfigError
from loupe.engine.data.imageio import load_rgb
from loupe.engine.data.transforms import Preprocessing
from loupe.engine.inference.cam import (
    CAM_METHODS,
    DEFAULT_COLORMAP,
    CamResult,
    colormap_lut,
    compute_cam,
    conv_layers,
    filters_figure,
    first_conv_filters,
    input_outline,
    render_overlay,
    save_overlay,
    top_activating,
)
from loupe.engine.inference.predict import Predictor
from tests.engine.predict_helpers import (
    ColourNet,
    make_bundle,
    predictor_for,
    save_colour,
    save_noise,
    save_rotated_jpeg,
)

CORNER_PRE = Preprocessing(size=32, presize=37, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
SQUARE = slice(3, 12)  # rows/cols of the deciding square in the 37×37 picture
CLASSES = ("blue", "red")


class TinyCNN(nn.Module):
    """Two stride-2 convolutions: an 8×8 map at 32 px, then average pool and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def _corner_picture(rng: np.random.Generator, label: int) -> np.ndarray:
    """Grey noise everywhere; the class is the colour of a square in the top-left corner."""
    grey = rng.integers(40, 216, (37, 37, 1), dtype=np.uint8)
    picture = np.repeat(grey, 3, axis=2)
    picture[SQUARE, SQUARE] = (0, 0, 255) if label == 0 else (255, 0, 0)
    return picture


def _as_input(pictures: np.ndarray) -> torch.Tensor:
    """Same view the predictor takes: center 32×32 of the 37×37 picture, normalized."""
    x = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0
    x = x[:, :, 2:34, 2:34]
    return (x - 0.5) / 0.25


@pytest.fixture(scope="module")
def corner_model() -> TinyCNN:
    """Trained in-test on the corner task: 60 steps of 32 tiny images, a few seconds."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = TinyCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        labels = rng.integers(0, 2, 32)
        batch = _as_input(np.stack([_corner_picture(rng, int(y)) for y in labels]))
        loss = nn.functional.cross_entropy(model(batch), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture
def corner_predictor(corner_model) -> Predictor:
    import copy

    return Predictor(copy.deepcopy(corner_model), classes=CLASSES, preprocessing=CORNER_PRE)


def _corner_files(tmp_path, count=6):
    rng = np.random.default_rng(123)
    files = []
    for index in range(count):
        label = index % 2
        path = tmp_path / f"{CLASSES[label]}_{index}.png"
        Image.fromarray(_corner_picture(rng, label)).save(path)
        files.append((path, CLASSES[label]))
    return files


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_map_concentrates_on_the_deciding_corner(corner_predictor, tmp_path, method):
    for path, label in _corner_files(tmp_path):
        result = compute_cam(corner_predictor, path, method=method, layer="features")
        assert result.prediction.label == label
        heat = result.heatmap
        assert heat.shape == (8, 8)
        assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0, abs=1e-4)
        corner_share = heat[:4, :4].sum() / heat.sum()
        assert corner_share > 0.5, f"{method}: only {corner_share:.0%} of the map in the corner"
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        assert peak[0] < 4 and peak[1] < 4


def test_one_forward_gives_prediction_and_map_without_recording_early_layers(
    corner_predictor, tmp_path
):
    path, _ = _corner_files(tmp_path, 1)[0]
    model = corner_predictor.model
    forwards, early_grad = [], []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    model.features[0].register_forward_hook(
        lambda _m, _i, out: early_grad.append(out.requires_grad)
    )
    result = compute_cam(corner_predictor, path, layer="features")
    assert len(forwards) == 1
    assert early_grad == [False]  # the graph (and the backward pass) starts at the target layer
    plain = corner_predictor.predict(path)
    assert list(result.prediction.probs.values()) == pytest.approx(
        list(plain.probs.values()), abs=1e-5
    )
    assert all(p.grad is None for p in model.parameters())


def test_target_class_is_selectable(corner_predictor, tmp_path):
    path, label = _corner_files(tmp_path, 2)[1]  # a red one
    default = compute_cam(corner_predictor, path, layer="features")
    other = compute_cam(corner_predictor, path, layer="features", target="blue")
    assert default.label == label == "red" and other.label == "blue"
    assert other.class_index == 0
    assert not np.allclose(default.heatmap, other.heatmap)
    by_index = compute_cam(corner_predictor, path, layer="features", target=0)
    assert np.allclose(by_index.heatmap, other.heatmap)
    with pytest.raises(ConfigError, match="classes are: blue, red"):
        compute_cam(corner_predictor, path, layer="features", target="green")


def test_an_overlay_never_overwrites_its_own_input_image(corner_predictor, tmp_path):
    path, _ = _corner_files(tmp_path, 1)[0]
    before = path.read_bytes()
    result = compute_cam(corner_predictor, path, layer="features")
    with pytest.raises(ConfigError, match="refusing to overwrite the input image"):
        save_overlay(result, path)
    with pytest.raises(ConfigError, match="refusing to overwrite the input image"):
        save_overlay(result, path.parent / ".." / path.parent.name / path.name)
    assert path.read_bytes() == before
    assert save_overlay(result, tmp_path / "map.png").is_file()


def test_unknown_layer_is_named_and_inference_mode_callers_still_get_a_map(
    corner_predictor, tmp_path
):
    path, _ = _corner_files(tmp_path, 1)[0]
    with pytest.raises(ConfigError, match="no layer named 'featurez'; did you mean: features"):
        compute_cam(corner_predictor, path, layer="featurez")
    with torch.inference_mode():
        result = compute_cam(corner_predictor, path, layer="features")
    assert result.heatmap[:4, :4].sum() > result.heatmap[4:, 4:].sum()


def test_unknown_method_lists_the_choices(corner_predictor, tmp_path):
    path, _ = _corner_files(tmp_path, 1)[0]
    with pytest.raises(ConfigError, match="gradcam, gradcampp, scorecam, layercam"):
        compute_cam(corner_predictor, path, method="magic", layer="features")


def test_overlay_is_at_the_original_size_and_only_colours_what_the_model_saw(tmp_path):
    predictor = Predictor.from_file(make_bundle(tmp_path / "m.loupe", size=64))
    path = save_noise(tmp_path / "wide.png", size=(300, 120))
    result = compute_cam(predictor, path)
    assert result.layer == "layer4" and result.heatmap.shape == (2, 2)
    overlay = np.asarray(render_overlay(result, opacity=0.6))
    original = np.asarray(load_rgb(path))
    assert overlay.shape == original.shape == (120, 300, 3)
    # The model saw the central 120×120 square (64 of 74 px after resizing, centred).
    assert np.array_equal(overlay[:, :80], original[:, :80])
    assert np.array_equal(overlay[:, -80:], original[:, -80:])
    assert not np.array_equal(overlay[:, 100:200], original[:, 100:200])
    transparent = np.asarray(render_overlay(result, opacity=0.0))
    assert np.array_equal(transparent, original)


def test_overlay_of_an_exif_rotated_photo_is_upright_and_full_size(tmp_path):
    predictor = Predictor.from_file(make_bundle(tmp_path / "m.loupe", size=32))
    stored = Image.open(save_noise(tmp_path / "raw.png", size=(120, 80)))
    path = save_rotated_jpeg(tmp_path / "phone.jpg", stored, orientation=6)  # shows 80×120
    result = compute_cam(predictor, path)
    left, top, right, bottom = result.crop_box
    margin = (1 - 32 / 37) / 2  # the short side keeps 32 of its 37 resized pixels
    assert (left, right) == pytest.approx((margin, 1 - margin))
    assert top > 0.15 and bottom < 0.85  # the long side (now vertical) loses more
    out = save_overlay(result, tmp_path / "out" / "phone_cam.png", opacity=0.5)
    overlay = np.asarray(Image.open(out))
    original = np.asarray(load_rgb(path))
    assert overlay.shape == original.shape == (120, 80, 3)
    assert np.array_equal(overlay[:15], original[:15])  # above the crop: untouched
    assert not np.array_equal(overlay[40:80], original[40:80])


def test_squish_overlay_covers_the_whole_image(tmp_path):
    """The model saw all of a squished image: the map is stretched back over all of it."""
    predictor = Predictor.from_file(make_bundle(tmp_path / "m.loupe", size=32, resize="squish"))
    path = save_noise(tmp_path / "wide.png", size=(150, 60))
    result = compute_cam(predictor, path)
    assert result.crop_box == (0.0, 0.0, 1.0, 1.0)
    overlay = np.asarray(render_overlay(result, opacity=0.6)).astype(int)
    original = np.asarray(load_rgb(path)).astype(int)
    assert overlay.shape == original.shape == (60, 150, 3)
    assert (np.abs(overlay - original).sum(axis=(0, 2)) > 0).all(), "every column coloured"
    assert (np.abs(overlay - original).sum(axis=(1, 2)) > 0).all(), "every row coloured"


def test_pad_overlay_drops_the_part_of_the_map_on_the_padding():
    """A 60×30 picture padded to a square: the map's top and bottom quarters lie on padding."""
    pre = Preprocessing.for_size(32, resize="pad")
    predictor = predictor_for(ColourNet(), CLASSES, preprocessing=pre)
    image = Image.new("RGB", (60, 30), (128, 128, 128))
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:2] = heat[6:] = 1.0  # hot only where the padding is
    result = CamResult(
        prediction=predictor.predict(image), heatmap=heat, class_index=0, label="blue",
        method="gradcam", layer="features", crop_box=predictor.prepare(image).crop_box,
        source=None,
    )
    overlay = np.asarray(render_overlay(result, image, opacity=1.0)).astype(int)
    cold = colormap_lut(DEFAULT_COLORMAP)[0].astype(int)
    assert overlay.shape == (30, 60, 3)
    # rows away from the image's top and bottom edge (where the map blends over half a map
    # pixel) show the cold part of the map, across the full width
    assert np.abs(overlay[8:22] - cold).max() == 0


def test_heatmap_at_resizes_the_raw_map(corner_predictor, tmp_path):
    path, _ = _corner_files(tmp_path, 1)[0]
    result = compute_cam(corner_predictor, path, layer="features")
    big = result.heatmap_at(32, 32)
    assert big.shape == (32, 32) and big[:16, :16].sum() > big[16:, 16:].sum()


def test_vit_maps_have_the_patch_grid_shape(tmp_path):
    predictor = Predictor.from_file(make_bundle(tmp_path / "v.loupe", arch="test_vit", size=160))
    grid = tuple(predictor.model.patch_embed.grid_size)
    result = compute_cam(predictor, save_noise(tmp_path / "x.png", size=(200, 180)))
    assert result.heatmap.shape == grid
    assert result.layer.endswith("norm1") and np.isfinite(result.heatmap).all()


def test_first_conv_filters_picture(corner_model):
    filters = first_conv_filters(corner_model)
    assert filters.shape == (16, 3, 3, 3)
    assert filters.min() == pytest.approx(0.0) and filters.max() == pytest.approx(1.0)
    weights = corner_model.features[0].weight.detach()
    first = (weights[0] - weights[0].min()) / (weights[0].max() - weights[0].min())
    assert np.allclose(filters[0], first.permute(1, 2, 0).numpy(), atol=1e-6)
    figure = filters_figure(filters)
    (image,) = [image for axis in figure.axes for image in axis.images]  # one mosaic
    mosaic = np.asarray(image.get_array())
    assert mosaic.shape == (2 * 4 - 1, 8 * 4 - 1, 4)  # 16 filters of 3×3, 8 a row, 1 px gaps
    assert np.allclose(mosaic[:3, :3, :3], filters[0]) and np.allclose(mosaic[:3, :3, 3], 1)
    assert np.allclose(mosaic[4:7, 28:31, :3], filters[15])


def test_top_activating_images_for_a_channel(tmp_path):
    predictor = predictor_for(ColourNet(), ("blue", "red"))
    reds = {level: save_colour(tmp_path / f"r{level}.png", (level, 30, 30))
            for level in (60, 220, 140, 100)}
    ranked = top_activating(predictor, list(reds.values()), "features.0", 0, count=3,
                            batch_size=3)
    assert [a.path for a in ranked] == [reds[220], reds[140], reds[100]]
    assert ranked[0].score == pytest.approx(220 / 255, abs=1e-4)
    assert ("features.0", 2) in conv_layers(predictor.model)
    with pytest.raises(ConfigError, match="2 channels"):
        top_activating(predictor, list(reds.values()), "features.0", 5)
    with pytest.raises(ConfigError, match="no layer named"):
        top_activating(predictor, list(reds.values()), "features.9", 0)


def test_filter_mosaic_tiles_every_filter_in_place():
    import numpy as np

    from loupe.engine.inference.activations import filter_mosaic

    filters = np.random.default_rng(0).random((10, 3, 3, 3))
    mosaic = filter_mosaic(filters, columns=4, pad=1)
    assert mosaic.shape == (3 * 4 - 1, 4 * 4 - 1, 4)
    for index in range(10):
        top, left = (index // 4) * 4, (index % 4) * 4
        assert np.array_equal(mosaic[top:top + 3, left:left + 3, :3], filters[index])
    assert mosaic[:, 3, 3].max() == 0.0  # gaps stay transparent
    assert mosaic[8:, 8:, 3].max() == 0.0  # the two unused cells are empty


def test_score_cam_reports_each_forward_and_stops_when_cancelled(corner_predictor, tmp_path):
    """Score-CAM runs one forward per chunk of channels (seconds to minutes on a CPU): the
    engine reports each and checks the cancel token, so the desktop shows a bar and a
    Cancel button that works."""
    from loupe.engine.core.errors import CancelledError
    from loupe.engine.core.events import CancelToken, Finished, Progress, Started
    from loupe.engine.inference import cam as cam_module

    path, _ = _corner_files(tmp_path, 1)[0]
    model = corner_predictor.model
    forwards: list[int] = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    events: list = []
    result = compute_cam(corner_predictor, path, method="scorecam", layer="features",
                         on_event=events.append)
    progress = [e for e in events if isinstance(e, Progress)]
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    # 32 channels in chunks (8 on a CPU): prediction, baseline, one forward per chunk.
    total = 2 + -(-32 // cam_module.scorecam_chunk(corner_predictor.device))
    assert total > 3  # several steps: Cancel is checked between them
    assert [(e.done, e.total) for e in progress] == [(i, total) for i in range(1, total + 1)]
    assert len(forwards) == total  # the count is the model's real number of forwards
    assert result.heatmap[:4, :4].sum() > result.heatmap[4:, 4:].sum()

    token, seen = CancelToken(), []

    def cancel_after_first(event) -> None:
        seen.append(event)
        if isinstance(event, Progress) and event.done == 2:
            token.cancel()  # as the Cancel button does, from another thread

    hooks_before = (len(model._forward_hooks), len(model.features._forward_hooks))
    with pytest.raises(CancelledError):
        compute_cam(corner_predictor, path, method="scorecam", layer="features",
                    on_event=cancel_after_first, cancel=token)
    assert max(e.done for e in seen if isinstance(e, Progress)) == 2
    assert not any(isinstance(e, Finished) for e in seen)
    # Every hook the map added is gone: the next map and prediction are unaffected.
    assert (len(model._forward_hooks), len(model.features._forward_hooks)) == hooks_before
    again = compute_cam(corner_predictor, path, method="gradcam", layer="features")
    assert again.heatmap[:4, :4].sum() > again.heatmap[4:, 4:].sum()


def test_gradient_maps_report_one_step(corner_predictor, tmp_path):
    from loupe.engine.core.events import Progress

    path, _ = _corner_files(tmp_path, 1)[0]
    events: list = []
    compute_cam(corner_predictor, path, layer="features", on_event=events.append)
    assert [(e.done, e.total) for e in events if isinstance(e, Progress)] == [(1, 1)]


def test_maps_use_a_perceptual_colormap_dark_to_bright():
    """Not the rainbow ``jet``: lightness rises with the value, so the map reads in grey."""
    lut = colormap_lut().astype(float)
    lightness = lut @ np.array([0.2126, 0.7152, 0.0722])
    assert DEFAULT_COLORMAP != "jet"
    assert np.all(np.diff(lightness) > -1.0)  # monotonic (to rounding)
    assert lightness[-1] - lightness[0] > 150


def test_crop_maps_outline_the_region_the_model_saw(tmp_path):
    """crop: the center crop is outlined; squish and pad saw the whole picture: no outline."""
    crop = Predictor.from_file(make_bundle(tmp_path / "c.loupe", size=64))
    path = save_noise(tmp_path / "wide.png", size=(300, 120))
    result = compute_cam(crop, path)
    box = input_outline(result.crop_box)
    assert box is not None and 0.3 < box[0] < 0.35 and 0.65 < box[2] < 0.7
    assert 0.05 < box[1] < 0.1 and 0.9 < box[3] < 0.95  # 64 of 74 px: a bit off each side
    plain = np.asarray(render_overlay(result, opacity=0.5)).astype(int)
    framed = np.asarray(render_overlay(result, opacity=0.5, outline=True)).astype(int)
    left, top, bottom = round(box[0] * 300), round(box[1] * 120), round(box[3] * 120)
    assert (framed[top:bottom, left] == 255).all()  # a white border down the crop's left
    assert np.array_equal(framed[:, : left - 3], plain[:, : left - 3])  # outside: untouched
    for resize in ("squish", "pad"):
        other = Predictor.from_file(make_bundle(tmp_path / f"{resize}.loupe", size=64,
                                                resize=resize))
        assert input_outline(compute_cam(other, path).crop_box) is None
