"""The end-of-training summary (per-class scores, confusion matrix, top losses) and the
bundle metadata built from a finished run.

Both the TrainResult and the bundle's ``training`` block carry the same summary, so the
desktop's Results page and someone inspecting a shared ``.loupe`` file see the same facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from loupe.engine.training.loop import Scores
from loupe.engine.training.metrics import (
    confusion_matrix,
    epoch_metrics,
    multi_label_predictions,
    per_class_report,
    top_losses,
)

TOP_LOSSES = 16


def _labels_of(row: torch.Tensor, classes: Sequence[str]) -> list[str]:
    return [classes[i] for i in torch.nonzero(row).flatten().tolist()]


def build_report(
    scores: Scores,
    items: Sequence[Any],
    classes: Sequence[str],
    *,
    multi_label: bool,
    thresholds: Sequence[float],
) -> dict[str, Any]:
    """Per-class precision/recall/F1, confusion matrix and the worst validation images.

    ``items`` are the LabelledItems in the order ``scores`` were computed (valid order).
    """
    if scores.logits.numel() == 0:
        return {"metrics": {}, "per_class": [], "confusion": None, "top_losses": []}
    if multi_label:
        preds = multi_label_predictions(scores.logits, thresholds)
        targets = scores.targets.to(torch.long)
        confusion = None
        probs = torch.sigmoid(scores.logits)
    else:
        preds = scores.logits.argmax(dim=1)
        targets = scores.targets
        confusion = confusion_matrix(preds, targets, len(classes)).tolist()
        probs = torch.softmax(scores.logits, dim=1)
    values, indices = top_losses(scores.losses, TOP_LOSSES)
    worst = []
    for loss, i in zip(values.tolist(), indices.tolist(), strict=True):
        if multi_label:
            actual, predicted = _labels_of(targets[i], classes), _labels_of(preds[i], classes)
            prob = float(probs[i].max())
        else:
            actual, predicted = [classes[int(targets[i])]], [classes[int(preds[i])]]
            prob = float(probs[i, int(preds[i])])
        worst.append(
            {"rel": items[i].item.rel, "actual": actual, "predicted": predicted,
             "loss": float(loss), "prob": prob}
        )
    metrics = epoch_metrics(
        scores.logits, scores.targets, multi_label=multi_label, thresholds=thresholds
    )
    return {
        "metrics": dict(metrics, valid_loss=scores.loss),
        "per_class": per_class_report(preds, targets, classes),
        "confusion": confusion,
        "top_losses": worst,
    }


def training_summary(
    *,
    prepared: Any,
    config: Any,
    run_dir: Any,
    history: Sequence[dict[str, Any]],
    report: dict[str, Any],
    pretrained: str,
    batch_size: int,
) -> dict[str, Any]:
    """The ``training`` block of the bundle: how this model was made and how it scored."""
    spec = prepared.spec
    final = dict(history[-1]) if history else {}
    return {
        "epochs": config.epochs,
        "freeze_epochs": config.freeze_epochs,
        "epochs_run": len(history),
        "final_metrics": final,
        "history": list(history),
        "label_rule": spec.label.spec,
        "split_rule": spec.split.spec,
        "seed": config.seed,
        "lr": config.max_lr,
        "batch_size": batch_size,
        "pretrained": pretrained,
        "run_id": run_dir.name,
        "run_dir": str(run_dir),
        "n_train": len(prepared.plan.train),
        "n_valid": len(prepared.plan.valid),
        "per_class": report.get("per_class", []),
        "confusion": report.get("confusion"),
        "top_losses": report.get("top_losses", []),
    }
