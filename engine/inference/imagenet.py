"""What the pretrained ImageNet model sees: lesson 1's starting point, before any training.

Transfer learning starts from a model that already names 1000 ImageNet classes. Showing
its top 5 (with an activation map) for a dropped photo lets a newcomer see what the
weights know before Loupe replaces the head with their own classes. The model is the
installed architecture's full ImageNet network (body + 1000-class classifier), loaded
through Loupe's own weights path (store or installed package, never the network), wrapped
in the ordinary :class:`engine.inference.predict.Predictor`, so prediction, activation maps and the
GUI need nothing special. Preprocessing is the weights' own (timm's ``pretrained_cfg``:
input size, crop fraction, mean and std).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from loupe.engine.core.errors import WeightsError

if TYPE_CHECKING:
    from loupe.engine.inference.predict import Predictor

IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (timm ships them), made unique.

    Two synsets share a name each ("crane", "maillot"); the second gets its synset id so
    every label names exactly one class.
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names: list[str] = []
    for index in range(info.num_classes()):
        name = info.index_to_description(index)
        if name in names:
            name = f"{name} ({info.index_to_label_name(index)})"
        names.append(name)
    return tuple(names)


def imagenet_predictor(
    arch: str | None = None, *, device: str = "cpu", unknown_below: float | None = None
) -> Predictor:
    """A Predictor for ``arch``'s full ImageNet model (default: the best installed one).

    Raises WeightsError when no ImageNet weights for ``arch`` are on this machine or the
    weights found have no 1000-class classifier (an imported body-only file).
    """
    import timm

    from loupe.engine.data.transforms import Preprocessing
    from loupe.engine.inference.predict import Predictor
    from loupe.engine.models.architectures import model_data_config, resolve_arch
    from loupe.engine.models.weights import best_installed_arch, find_weights, load_weights

    arch = resolve_arch(arch or best_installed_arch())
    source = find_weights(arch)
    if source is None:
        raise WeightsError(
            f"no pretrained ImageNet weights for {arch} on this machine; the installed "
            "ones are listed by `loupe weights list`"
        )
    state = load_weights(source)
    model = timm.create_model(arch, pretrained=False, num_classes=IMAGENET_CLASSES)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise WeightsError(
            f"the weights for {arch} ({source.describe()}) hold no complete ImageNet "
            f"classifier ({len(missing)} missing, {len(wrong)} wrong-shaped tensors, e.g. "
            f"{(missing + wrong)[0]}); they can be fine-tuned but not asked about ImageNet"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    data = model_data_config(arch, source.tag)
    size = int(data["input_size"][-1])
    preprocessing = Preprocessing(
        size=size,
        presize=int(round(size / float(data.get("crop_pct") or 0.875))),
        mean=data["mean"],
        std=data["std"],
    )
    predictor = Predictor(
        model, classes=imagenet_class_names(), preprocessing=preprocessing, arch=arch,
        device=device, unknown_below=unknown_below,
    )
    predictor.warm_up()
    return predictor
