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

And one way to show a table of results: :class:`Table` renders as an HTML table in the book and
JupyterLab, and as aligned plain text in a terminal, in ``print`` and in the stored text output
that nbval compares. Every ``format_*_table`` of the package and
:func:`dpmlatent.evidence.verdict_table` return one.
"""

from __future__ import annotations

import dataclasses
import html
import math

import torch

__all__ = ["noise_floor", "fmt_bound", "decimals_for", "fmt", "fmt_mean", "fmt_fraction", "share_column",
           "Column", "Table"]

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


def fmt_mean(values: torch.Tensor) -> str:
    """The mean of ``values`` (``(N,)``, ``N >= 2``) at the precision of its standard error
    ``std / sqrt(N)`` (:func:`fmt`)."""
    values = torch.as_tensor(values).flatten().double()
    if len(values) < 2:
        raise ValueError(f"values must hold at least 2 numbers for a standard error, got {len(values)}")
    return fmt(values.mean(), float(values.std() / math.sqrt(len(values))))


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


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: its header, its alignment (``"<"`` text, ``">"`` numbers) and a minimum width."""

    name: str
    align: str = "<"
    width: int = 0

    def __post_init__(self):
        if self.align not in ("<", ">"):
            raise ValueError(f"Column.align must be '<' or '>', got {self.align!r}")
        if not isinstance(self.width, int) or self.width < 0:
            raise ValueError(f"Column.width must be an integer >= 0, got {self.width!r}")


class Table:
    """Rows of already formatted cells (strings) under :class:`Column` s.

    ``str(table)`` is the plain text (columns separated by one space, each as wide as its widest
    cell or its minimum width); in a notebook the table displays as HTML (``_repr_html_``) with the
    text as its ``text/plain`` fallback. ``title`` becomes the HTML caption (and a first text line).

    Raises:
        TypeError: a column is not a :class:`Column` or a cell is not a string.
        ValueError: a row's length differs from the number of columns.
    """

    def __init__(self, columns, rows, *, title: str | None = None):
        self.columns = [c if isinstance(c, Column) else self._bad_column(c) for c in columns]
        self.rows = [list(r) for r in rows]
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(f"row {i} has {len(r)} cells, the table has {len(self.columns)} columns")
            for cell in r:
                if not isinstance(cell, str):
                    raise TypeError(f"row {i}: cells must be formatted strings, got {type(cell).__name__} {cell!r}")
        self.title = title

    @staticmethod
    def _bad_column(c):
        raise TypeError(f"columns must be reporting.Column, got {type(c).__name__} {c!r}")

    def widths(self) -> list[int]:
        return [max([c.width, len(c.name)] + [len(r[j]) for r in self.rows]) for j, c in enumerate(self.columns)]

    def __str__(self) -> str:
        w = self.widths()
        def line(cells):
            return " ".join(f"{cell:{c.align}{wj}}" for cell, c, wj in zip(cells, self.columns, w)).rstrip()
        lines = ([self.title] if self.title else []) + [line([c.name for c in self.columns])]
        return "\n".join(lines + [line(r) for r in self.rows])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        esc = html.escape
        def style(c):
            return ' style="text-align: right"' if c.align == ">" else ' style="text-align: left"'
        head = "".join(f"<th{style(c)}>{esc(c.name)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td{style(c)}>{esc(cell)}</td>" for cell, c in zip(r, self.columns))
                       + "</tr>" for r in self.rows)
        caption = f"<caption>{esc(self.title)}</caption>" if self.title else ""
        return (f'<table class="dpmlatent-table">{caption}<thead><tr>{head}</tr></thead>'
                f"<tbody>{body}</tbody></table>")

