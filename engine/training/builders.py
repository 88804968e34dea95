"""Building a :class:`~loupe.engine.training.learner.Learner` or a training
:class:`~loupe.engine.training.session.Session`: fresh or from a run.

A new fit resolves device and weights and builds the model and optimizer; a new run then
creates its run folder, while the lr finder takes the learner as it is (no run folder). A
resumed run rebuilds the same objects from the run's config, data record and last
checkpoint, after checking that the split is still the one it trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from loupe.engine.core.device import DeviceInfo, resolve_device
from loupe.engine.core.errors import TrainingError
from loupe.engine.core.events import CancelToken, EventCallback
from loupe.engine.training import distributed, runs  # H10 distributed
from loupe.engine.training.config import TrainConfig
from loupe.engine.training.learner import Learner
from loupe.engine.training.session import Session
from loupe.engine.training.setup import (
    auto_batch_size,
    data_spec_json,
    load_pretrained,
    rebuild_prepared,
    resolve_arch_choice,
    resolve_lr,
)


def new_optimizer(
    model: torch.nn.Module, lr: float, wd: float, device: DeviceInfo
) -> tuple[torch.optim.AdamW, int]:
    """AdamW over the model's layer groups (one learning rate each, earliest first).

    The fused implementation is used on CPU and CUDA: on a CPU it makes the optimizer
    step about 4× faster than the per-tensor loop (a large share of a small model's step).
    """
    from loupe.engine.models.anatomy import layer_groups

    groups = layer_groups(model)
    fused = device.kind in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        [{"params": g} for g in groups], lr=lr, weight_decay=wd, fused=fused or None
    )
    return optimizer, len(groups)


def _prepare_model(model: torch.nn.Module, device: DeviceInfo) -> torch.nn.Module:
    model = model.to(device.device)
    if device.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _new_fit(prepared: Any, config: TrainConfig) -> dict[str, Any]:
    """Resolve arch, device, weights and rate; build model and optimizer: the
    :class:`Learner` fields every new fit starts from (a run and the lr finder alike)."""
    from loupe.engine.models.architectures import resolve_arch
    from loupe.engine.models.factory import create_model

    config = resolve_arch_choice(config)
    resolve_arch(config.arch)
    device = resolve_device(config.device)
    state, description, tag = load_pretrained(config)
    config = resolve_lr(config, pretrained=state is not None)
    torch.manual_seed(config.seed)
    model = create_model(config.arch, len(prepared.plan.classes), pretrained_state=state)
    model = _prepare_model(model, device)
    optimizer, n_groups = new_optimizer(model, config.max_lr, config.wd, device)
    return {
        "config": config, "device": device, "model": model, "optimizer": optimizer,
        "random_init": state is None, "pretrained": description, "weights_tag": tag,
        "batch_size": config.batch_size or auto_batch_size(device, config.size),
        "n_groups": n_groups,
    }


def build_learner(
    prepared: Any, config: TrainConfig, events: EventCallback, cancel: CancelToken | None
) -> Learner:
    """A new fit without a run folder: what the lr finder sweeps."""
    return Learner(prepared=prepared, events=events, cancel=cancel, **_new_fit(prepared, config))


def build_session(
    prepared: Any, config: TrainConfig, events: EventCallback, cancel: CancelToken | None
) -> Session:
    """A new run: the new fit of :func:`build_learner`, plus its run folder."""
    fit = _new_fit(prepared, config)
    config = fit["config"]
    if not distributed.is_main():  # H10 distributed: rank 0 alone makes the run folder
        shared = distributed.share_run_dir(None)
        return Session(prepared=prepared, events=events, cancel=cancel, run_dir=shared, **fit)
    run_dir = runs.new_run_dir(config.arch)
    lock = runs.RunLock(run_dir).acquire()  # the caller releases it (session.lock)
    try:
        runs.write_json(run_dir, "config.json", config.to_json())
        runs.write_json(run_dir, "data.json", data_spec_json(prepared.spec))
        runs.write_json(run_dir, "manifest.json", prepared.plan.manifest())
        runs.update_record(run_dir, status="running", test_looks=0)
        distributed.share_run_dir(run_dir)  # H10 distributed: the other ranks' run_dir
        return Session(
            prepared=prepared, events=events, cancel=cancel, run_dir=run_dir, lock=lock, **fit
        )
    except BaseException:
        lock.release()
        raise


def restore_session(
    run_dir: Path, prepared: Any | None, events: EventCallback, cancel: CancelToken | None
) -> Session:
    """A session at the end of the run's last finished epoch (see trainer.resume)."""
    from loupe.engine.models.factory import create_model

    config = load_run_config(run_dir)
    if prepared is None:
        prepared = rebuild_prepared(runs.read_json(run_dir, "data.json"), events, cancel)
    _check_same_split(run_dir, prepared)
    model_state, optimizer_state, scalars = runs.load_checkpoint(run_dir)
    best_state = scalars.pop("best_model", None)
    device = resolve_device(config.device)
    model = create_model(config.arch, len(prepared.plan.classes))
    model.load_state_dict(model_state)
    model = _prepare_model(model, device)
    optimizer, n_groups = new_optimizer(model, config.max_lr, config.wd, device)
    optimizer.load_state_dict(optimizer_state)
    history = list(scalars["history"])
    if distributed.is_main():  # H10 distributed: rank 0 writes run files
        runs.rewrite_metrics(run_dir, history)
        runs.update_record(run_dir, status="running", resumed_at_epoch=len(history))
    distributed.announce_resume(scalars, events)  # H10 distributed: on how many processes
    return Session(
        prepared=prepared, config=config, events=events, cancel=cancel, run_dir=run_dir,
        device=device, model=model, optimizer=optimizer,
        random_init=bool(scalars["random_init"]), pretrained=scalars["pretrained"],
        weights_tag=scalars.get("weights_tag"), batch_size=int(scalars["batch_size"]),
        mean=tuple(scalars["mean"]), std=tuple(scalars["std"]), history=history,
        n_groups=n_groups, **_best_so_far(history, model_state, best_state),
    )


def _best_so_far(
    history: list[dict[str, Any]], model_state: dict, best_state: Any
) -> dict[str, Any]:
    """The resumed run's best epoch and its weights (the checkpoint's own weights when the
    best epoch is the last one), so a later stop still keeps the best."""
    epoch = runs.best_epoch(history)
    state = model_state if epoch == len(history) else best_state
    if epoch is None or not isinstance(state, dict):
        return {}
    return {"best_epoch": epoch, "best_state": state}


def load_run_config(run_dir: Path) -> TrainConfig:
    """The run's TrainConfig; a pretrained FILE that has since gone is not an error
    (resuming loads the checkpoint, not the file)."""
    data = runs.read_json(run_dir, "config.json")
    pretrained = data.get("pretrained")
    if isinstance(pretrained, str) and pretrained not in ("auto", "none"):
        if not Path(pretrained).is_file():
            data = dict(data, pretrained="auto")
    return TrainConfig.from_json(data)


def _check_same_split(run_dir: Path, prepared: Any) -> None:
    saved = runs.read_json(run_dir, "manifest.json")
    now = json.loads(json.dumps(prepared.plan.manifest()))
    if saved != now:
        changed = sum(
            len(set(saved.get(k, [])) ^ set(now.get(k, []))) for k in ("train", "valid", "test")
        )
        raise TrainingError(
            f"cannot resume run {run_dir.name}: the data or split changed since it started "
            f"({changed} file(s) moved between sets, or labels changed); resume needs "
            "the same folder, label rule and split"
        )
