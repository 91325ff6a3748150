"""Numbers as the book prints them.

Two rules, one helper each, so that no chapter invents its own:

* **Floating-point noise is a bound, not a number.** A round-trip error of ``8.3e-07`` in float32
  is rounding, and its digits change from one CPU to the next. :func:`fmt_bound` prints it as
  ``< 1e-05`` (the noise floor of the dtype, :func:`noise_floor`); a value above the floor is a
  real error and is printed with its digits.
* **No digit beyond the uncertainty.** :func:`fmt` prints a value to the decimal place of the
  first significant digit of its uncertainty (a standard error or an interval's half-width):
  ``fmt(0.6875, 0.067) == "0.69"``, ``fmt(23.71, 0.4) == "23.7"``. :func:`fmt_fraction` does this
  for a share of ``n`` items, with the binomial standard error at its largest,
  ``0.5 / sqrt(n)``, so the precision depends on ``n`` only (48 items: 2 decimals, never 3).
"""

from __future__ import annotations

import math

import torch

__all__ = ["noise_floor", "fmt_bound", "decimals_for", "fmt", "fmt_fraction", "share_column"]

_FLOORS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-1}


def noise_floor(dtype: torch.dtype = torch.float32) -> float:
    """The largest error that is still floating-point noise for an image computation in ``dtype``.

    ``1e-5`` in float32 and ``1e-10`` in float64 (the book's tests require round trips below
    these on every CPU), ``1e-2`` in float16 and ``1e-1`` in bfloat16.

    Raises:
        TypeError: ``dtype`` is not a floating-point torch dtype.
    """
    if dtype not in _FLOORS:
        raise TypeError(f"dtype must be one of {sorted(str(d) for d in _FLOORS)}, got {dtype!r}")
    return _FLOORS[dtype]


def fmt_bound(value: float, *, dtype: torch.dtype = torch.float32, floor: float | None = None,
              relation: bool = False) -> str:
    """``"< 1e-05"`` when ``value`` is at or below the noise floor, else the value (2 significant digits).

    Args:
        value: a non-negative error (a float or a 0-d tensor).
        dtype: the dtype of the computation, which sets the floor (:func:`noise_floor`).
        floor: an explicit floor instead (> 0).
        relation: prefix a value above the floor with ``"= "``, for prose:
            ``f"max |x - x_hat| {fmt_bound(err, relation=True)}"``.

    Raises:
        ValueError: ``value`` is negative or not finite, or ``floor <= 0``.
    """
    value = float(value)
    floor = noise_floor(dtype) if floor is None else float(floor)
    if floor <= 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"value must be a finite error >= 0, got {value}")
    if value <= floor:
        return f"< {floor:.0e}"
    text = f"{value:.2g}" if 1e-3 <= value < 1e4 else f"{value:.1e}"
    return f"= {text}" if relation else text


def decimals_for(uncertainty: float) -> int:
    """Decimal places that end at the first significant digit of ``uncertainty`` (>= 0).

    ``0.067 -> 2``, ``0.4 -> 1``, ``3 -> 0``, ``250 -> 0``.

    Raises:
        ValueError: ``uncertainty`` is not finite and > 0.
    """
    uncertainty = float(uncertainty)
    if not (math.isfinite(uncertainty) and uncertainty > 0):
        raise ValueError(f"uncertainty must be finite and > 0, got {uncertainty}")
    return max(0, -math.floor(math.log10(uncertainty)))


def fmt(value: float, uncertainty: float) -> str:
    """``value`` rounded to the decimal place its ``uncertainty`` supports (see :func:`decimals_for`)."""
    return f"{float(value):.{decimals_for(uncertainty)}f}"


def fmt_fraction(value: float, n: int) -> str:
    """A share of ``n`` items (in [0, 1]) at the precision ``n`` supports: ``0.5 / sqrt(n)``.

    Raises:
        ValueError: ``n < 1`` or ``value`` outside [0, 1].
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"value must be a fraction in [0, 1], got {value}")
    return fmt(value, 0.5 / math.sqrt(n))


def share_column(value: float, n: int | None, width: int, *, name: str = "share") -> str:
    """A table cell: :func:`fmt_fraction` right-aligned in ``width`` characters.

    Raises:
        ValueError: ``n`` is ``None`` (a row built without its sample size cannot say how many
            digits it supports; build rows with the ``evaluate_*`` functions, which record it).
    """
    if n is None:
        raise ValueError(f"{name}: the row does not record how many items the share is over (n is None), "
                         "so its precision is unknown; build rows with the evaluate_* functions")
    return f"{fmt_fraction(value, n):>{width}}"
