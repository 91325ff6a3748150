"""The one training loop of the model zoo: optimiser steps, an EMA of the weights, logging.

Every zoo kind trains through :func:`fit` (its own module says *what* is minimised; this says
*how*): per step ``loss = loss_fn()`` (the function draws its own batch from its own
``torch.Generator``), ``zero_grad``, ``backward``, ``optimizer.step()``, the learning-rate schedule,
an optional ``after_step`` (e.g. a clamp), then the exponential moving average

    theta_ema <- theta_ema + (1 - decay) * (theta - theta_ema)

of the weights an :class:`EMA` tracks, and the logged numbers. The order is fixed, so a training
run is reproducible from its seed (same machine, same thread count).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Callable

import torch
from tqdm.auto import tqdm

__all__ = ["TrainResult", "EMA", "check_steps", "fit"]


@dataclasses.dataclass
class TrainResult:
    """``model``: the trained model (the EMA copy where the kind keeps one) in eval mode;
    ``losses``: the recorded loss per step; ``history``: every logged number per step
    (``{"loss": [...], "kl": [...]}``); ``info``: extra facts for the checkpoint's manifest
    (e.g. a held-out accuracy)."""

    model: object
    losses: list[float]
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)


def check_steps(steps: int, batch_size: int) -> None:
    """``ValueError`` unless ``steps`` and ``batch_size`` are positive integers."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class EMA:
    """Exponential moving averages of ``modules``' weights: frozen eval-mode copies
    (:attr:`copies`, in the order given) updated by :meth:`update`."""

    def __init__(self, modules: list[torch.nn.Module], decay: float):
        if not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.copies = [copy.deepcopy(m).eval().requires_grad_(False) for m in modules]
        self._pairs = [(pe, p) for m, c in zip(modules, self.copies) for pe, p in zip(c.parameters(), m.parameters())]

    @torch.no_grad()
    def update(self) -> None:
        """``theta_ema <- lerp(theta_ema, theta, 1 - decay)`` for every tracked parameter."""
        for p_ema, p in self._pairs:
            p_ema.lerp_(p, 1.0 - self.decay)


def fit(loss_fn: Callable[[], torch.Tensor | tuple[torch.Tensor, dict]], optimizer: torch.optim.Optimizer, *,
        steps: int, lr_schedule=None, ema: EMA | None = None, after_step: Callable[[], None] | None = None,
        record: str = "loss", digits: int = 4, progress: bool = True, desc: str = "training"
        ) -> tuple[list[float], dict[str, list[float]]]:
    """Run ``steps`` optimiser steps of ``loss_fn``.

    Args:
        loss_fn: draws a batch and returns the loss to minimise (a scalar tensor), or
            ``(loss, logs)`` with ``logs`` a dict of floats to record (e.g. ``{"kl": 3.2}``).
        optimizer: steps the parameters ``loss`` depends on.
        lr_schedule: a ``torch.optim.lr_scheduler`` stepped after every optimiser step, or None.
        ema: an :class:`EMA` updated after every step, or None.
        after_step: called after the optimiser and schedule step (e.g. to clamp a parameter).
        record: the logged name returned as the loss curve (``"loss"``: the minimised loss).
        digits: decimals of the running mean shown on the progress bar.
        progress: tqdm bar with the running mean (last 50 steps) of ``record``.

    Returns:
        ``(losses, history)``: ``record`` per step, and every logged name per step.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    history: dict[str, list[float]] = {}
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for _ in bar:
        out = loss_fn()
        loss, logs = out if isinstance(out, tuple) else (out, {})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if lr_schedule is not None:
            lr_schedule.step()
        if after_step is not None:
            after_step()
        if ema is not None:
            ema.update()
        for name, value in {"loss": loss.item(), **logs}.items():
            history.setdefault(name, []).append(float(value))
        if record not in history:
            raise ValueError(f"record must be 'loss' or a name that loss_fn logs ({sorted(history)}), got {record!r}")
        recent = history[record][-50:]
        bar.set_postfix({record: f"{sum(recent) / len(recent):.{digits}f}"}, refresh=False)
    return history[record], history
