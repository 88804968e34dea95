"""One-cycle learning rates (fastai's ``fit_one_cycle``) on torch's OneCycleLR.

fastai's defaults: warm up over ``pct_start`` of the steps from ``max_lr / div`` to
``max_lr`` while beta1 falls 0.95 → 0.85, then cosine-anneal to ``max_lr / div_final``
while beta1 rises back. Discriminative learning rates are one ``max_lr`` per parameter
group (early layers smaller), spaced geometrically like fastai's ``slice(lo, hi)``.

A schedule is fully described by (max_lrs, total_steps, pct_start, div) plus the step
reached, so checkpoints store only the step and :func:`one_cycle` fast-forwards — which
also lets an out-of-memory retry rebuild it for a new number of batches per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DIV_FINAL = 1e5  # fastai: final lr = max_lr / 1e5


@dataclass(frozen=True)
class Cycle:
    """One ``fit_one_cycle`` call: ``epochs`` at peak rates ``max_lrs`` (one per group)."""

    epochs: int
    max_lrs: tuple[float, ...]
    pct_start: float = 0.25
    div: float = 25.0


def discriminative_lrs(lr: float, groups: int, lr_mult: float = 100.0) -> tuple[float, ...]:
    """``slice(lr / lr_mult, lr)`` over ``groups`` groups, geometric, earliest smallest."""
    if groups <= 1:
        return (lr,)
    low = lr / lr_mult
    step = (lr / low) ** (1 / (groups - 1))
    return tuple(low * step**i for i in range(groups))


def one_cycle(
    optimizer: torch.optim.Optimizer,
    cycle: Cycle,
    steps_per_epoch: int,
    start_step: int = 0,
) -> torch.optim.lr_scheduler.OneCycleLR:
    """A OneCycleLR for ``cycle`` already advanced to ``start_step`` optimizer steps.

    On a fresh optimizer (``start_step == 0``) it also writes initial/max/min lr into the
    param groups; a resumed optimizer carries them in its saved state, which is what
    OneCycleLR's ``last_epoch`` needs to continue.
    """
    total = max(1, cycle.epochs * max(1, steps_per_epoch))
    if len(cycle.max_lrs) != len(optimizer.param_groups):
        raise ValueError(
            f"{len(cycle.max_lrs)} learning rates for {len(optimizer.param_groups)} groups"
        )
    pct_start = cycle.pct_start
    if abs(pct_start * total - 1) < 1e-9:
        # OneCycleLR divides by zero when the warm-up ends exactly at step 0 (e.g. 4
        # steps at 0.25); half a step more warm-up avoids it and changes nothing else.
        pct_start += 0.5 / total
    kwargs: dict[str, Any] = {
        "max_lr": list(cycle.max_lrs),
        "total_steps": total,
        "pct_start": pct_start,
        "div_factor": cycle.div,
        "final_div_factor": DIV_FINAL / cycle.div,
        "anneal_strategy": "cos",
        "cycle_momentum": True,
        "base_momentum": 0.85,
        "max_momentum": 0.95,
    }
    if start_step <= 0 or "initial_lr" not in optimizer.param_groups[0]:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **kwargs)
        if start_step <= 0:
            return scheduler
    start = min(start_step, total)
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, last_epoch=start - 1, **kwargs)


def current_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(g["lr"]) for g in optimizer.param_groups]


