"""Intervals and verdicts: how a chapter decides whether a paper's claim reproduces.

One method for the whole book (issue 17):

* **An interval on every number a verdict uses.** :func:`bootstrap_ci` resamples the *inputs*
  (the images, prompts or samples a metric is averaged over) and gives a BCa interval (bias
  corrected and accelerated; Efron 1987, with the acceleration from the jackknife) or a plain
  percentile interval. A set-level statistic (a Fréchet distance, a class histogram) is
  recomputed on every resample. Where a result also depends on the sampler's randomness, pass the
  values as a ``(seeds, inputs)`` table: seeds and inputs are resampled independently (the
  "pigeonhole" bootstrap for crossed designs, Owen 2007), so the interval covers both sources of
  variation. :func:`paired_bootstrap_ci` is the interval for the difference of two methods measured
  on the same inputs with the same seeds (the same resample for both);
  :func:`unpaired_bootstrap_ci` for two independent samples. A Fréchet distance is the exception:
  its finite-sample bias defeats the bootstrap, so it gets the bias-corrected jackknife
  (:func:`jackknife_ci`, :func:`unpaired_jackknife_ci`). Shares of counts use Wilson's
  interval (:func:`wilson_interval`) and Newcombe's for a difference (:func:`difference_of_shares`).
* **A verdict whose words follow from the interval.** :class:`Verdict` carries the claim, the
  metric, the judge (the model that scores the result), the estimate, the interval and ``n``, and
  computes ``reproduces``: ``"yes"`` when the interval lies on the claim's side of the null,
  ``"no"`` when it lies on the other side, ``"inconclusive"`` when it contains the null. A verdict
  whose judge is the model that was optimised (``self_judged=True``) can never be ``"yes"``.
  :func:`verdict_table` prints a list of them (HTML in the book, text in a terminal).
* :func:`across_metrics` combines the verdicts of one claim under several metrics: the common word,
  or ``"depends on the metric"``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import torch

__all__ = ["Interval", "as_share", "wilson_interval", "difference_of_shares", "verdict", "bootstrap_ci",
           "paired_bootstrap_ci", "unpaired_bootstrap_ci", "jackknife_ci", "unpaired_jackknife_ci",
           "Verdict", "verdict_table", "across_metrics"]


@dataclasses.dataclass(frozen=True)
class Interval:
    """``estimate`` with a ``level`` confidence interval ``[low, high]`` from ``n`` inputs (and
    ``seeds`` sampler seeds, 1 when the result does not depend on one); ``method`` names how it was
    computed (``"bca"``, ``"percentile"``, ``"jackknife"``, ``"wilson"``, ``"newcombe"``, or ``""``); ``unit``
    names what ``seeds`` counts in a table's ``"n x seeds"`` column (``"chains"`` where every input, e.g.
    a target, had that many independent chains). It prints to the
    first significant digit of a tenth of its half-width, or of ``resolution`` if that is coarser
    (see :func:`as_share`)."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95
    seeds: int = 1
    method: str = ""
    resolution: float = 0.0
    unit: str = "seeds"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def scaled(self, factor: float) -> "Interval":
        """The interval of ``factor`` times the quantity (e.g. a difference of ink sums in units of
        the inputs' mean ink); ``factor > 0`` keeps ``low <= high``."""
        if not (isinstance(factor, (int, float)) and not isinstance(factor, bool) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a finite number > 0, got {factor!r}")
        return dataclasses.replace(self, estimate=self.estimate * factor, low=self.low * factor,
                                   high=self.high * factor, resolution=self.resolution * factor)

    def __str__(self) -> str:
        from .reporting import fmt  # to the first significant digit of a tenth of the half-width
        u = max((self.high - self.low) / 20, self.resolution, 1e-12)
        return f"{fmt(self.estimate, u)} [{fmt(self.low, u)}, {fmt(self.high, u)}]"


def as_share(interval: Interval) -> Interval:
    """The same interval, printed as a share (or a difference of shares) of its ``n x seeds`` items: at
    the precision :func:`dpmlatent.reporting.fmt_fraction` gives that many items (``0.5 / sqrt(N)``),
    never finer. One item whose label flips on another CPU (a translation that differs in the last
    bits, a classifier at its decision boundary) moves a share by ``1 / N``; its digits must not."""
    if not isinstance(interval, Interval):
        raise TypeError(f"interval must be an Interval, got {type(interval).__name__}")
    return dataclasses.replace(interval, resolution=0.5 / math.sqrt(interval.n * interval.seeds))


def _z(level: float) -> float:
    if not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def _check_count(k, n, name):
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}: n must be a positive integer, got {n!r}")
    if not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"{name}: k must be an integer in [0, n] = [0, {n}], got {k!r}")


def wilson_interval(k: int, n: int, *, level: float = 0.95) -> Interval:
    """Wilson's score interval for a share ``k / n`` (good coverage at small ``n`` and near 0 or 1)."""
    _check_count(k, n, "wilson_interval")
    z, p = _z(level), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return Interval(p, low, high, n, level, method="wilson")


def difference_of_shares(k1: int, n1: int, k2: int, n2: int, *, level: float = 0.95) -> Interval:
    """``k1/n1 - k2/n2`` with Newcombe's hybrid score interval (two independent samples).

    ``L = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)``, ``U = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)``
    with ``[l_i, u_i]`` the Wilson intervals (Newcombe 1998, method 10). ``n`` is ``min(n1, n2)``."""
    a, b = wilson_interval(k1, n1, level=level), wilson_interval(k2, n2, level=level)
    d = a.estimate - b.estimate
    low = d - math.sqrt((a.estimate - a.low) ** 2 + (b.high - b.estimate) ** 2)
    high = d + math.sqrt((a.high - a.estimate) ** 2 + (b.estimate - b.low) ** 2)
    return Interval(d, low, high, min(n1, n2), level, method="newcombe")


def verdict(interval: Interval, *, null: float = 0.0, claim: str = "greater") -> str:
    """The words that follow from ``interval`` for a claim that the quantity is ``"greater"`` (or
    ``"less"``) than ``null``: "reproduces", "does not reproduce" or "inconclusive"."""
    if claim not in ("greater", "less"):
        raise ValueError(f"claim must be 'greater' or 'less', got {claim!r}")
    above, below = interval.low > null, interval.high < null
    if claim == "less":
        above, below = below, above
    return "reproduces" if above else "does not reproduce" if below else "inconclusive"


# ---------------------------------------------------------------------------------------------
# The bootstrap
# ---------------------------------------------------------------------------------------------

_METHODS = ("bca", "percentile")


def _as_values(values, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = values.detach().to("cpu", torch.float64)
    else:
        try:
            t = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a tensor or a sequence of numbers, got {type(values).__name__}") from e
    if t.ndim not in (1, 2) or t.shape[-1] < 2 or t.numel() == 0:
        raise ValueError(f"{name} must have shape (inputs,) or (seeds, inputs) with at least 2 inputs, "
                         f"got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds {int((~torch.isfinite(t)).sum())} non-finite values; drop or fix them first")
    return t


def _check_options(level, n_resamples, method, generator):
    _z(level)
    if not isinstance(n_resamples, int) or n_resamples < 200:
        raise ValueError(f"n_resamples must be an integer >= 200, got {n_resamples!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _counts(n: int, rows: int, generator: torch.Generator) -> torch.Tensor:
    """``(rows, n)`` multinomial counts: how often each of ``n`` items is drawn in each resample."""
    idx = torch.randint(0, n, (rows, n), generator=generator)
    return torch.zeros(rows, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(rows, n, dtype=torch.float64))


def _mean_replicates(x: torch.Tensor, n_resamples: int, generator: torch.Generator) -> torch.Tensor:
    """Bootstrap means of ``x`` (inputs,) or (seeds, inputs); seeds and inputs resampled independently."""
    if x.ndim == 1:
        x = x[None]
    s, n = x.shape
    if s > 1:  # resampling S seeds shrinks their spread by (S - 1) / S: undo it (matters for S = 3)
        centre = x.mean(0, keepdim=True)
        x = centre + math.sqrt(s / (s - 1)) * (x - centre)
    out = torch.empty(n_resamples, dtype=torch.float64)
    chunk = max(1, 2_000_000 // (n + s))
    for i in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - i)
        cs = _counts(s, b, generator) if s > 1 else torch.ones(b, 1, dtype=torch.float64)
        cn = _counts(n, b, generator)
        out[i:i + b] = torch.einsum("bs,sn,bn->b", cs, x, cn) / (s * n)
    return out


def _interval(estimate: float, replicates: torch.Tensor, jackknife: torch.Tensor | None, *, level: float,
              method: str, n: int, seeds: int) -> Interval:
    """Percentile or BCa interval from bootstrap ``replicates`` and (for BCa) jackknife values."""
    reps = replicates.to(torch.float64)
    if float(reps.max() - reps.min()) <= 1e-12 * max(1.0, abs(estimate)):
        return Interval(estimate, estimate, estimate, n, level, seeds, method)
    alpha = (1 - level) / 2
    lo_q, hi_q = alpha, 1 - alpha
    if method == "bca":
        nd, b = NormalDist(), len(reps)
        below = float((reps < estimate).sum() + 0.5 * (reps == estimate).sum()) / b
        z0 = nd.inv_cdf(min(max(below, 0.5 / b), 1 - 0.5 / b))
        d = jackknife.mean() - jackknife
        denom = 6 * float((d ** 2).sum()) ** 1.5
        a = float((d ** 3).sum()) / denom if denom > 0 else 0.0
        def adjust(q):
            zq = nd.inv_cdf(q)
            return nd.cdf(z0 + (z0 + zq) / (1 - a * (z0 + zq)))
        lo_q, hi_q = adjust(lo_q), adjust(hi_q)
    q = torch.quantile(reps, torch.tensor([lo_q, hi_q], dtype=torch.float64))
    return Interval(estimate, float(q[0]), float(q[1]), n, level, seeds, method)


def _jackknife_mean(x: torch.Tensor) -> torch.Tensor:
    """Leave-one-input-out means of ``x`` (inputs,) or (seeds, inputs) (seeds averaged first)."""
    m = x.mean(0) if x.ndim == 2 else x
    n = len(m)
    return (m.sum() - m) / (n - 1)


def _generic(n: int, fn: Callable[[torch.Tensor], float], *, level, n_resamples, method, generator,
             seeds: int = 1) -> Interval:
    """Bootstrap a statistic ``fn(index)`` of a set of ``n`` inputs, recomputed on every resample."""
    estimate = float(fn(torch.arange(n)))
    reps = torch.tensor([float(fn(torch.randint(0, n, (n,), generator=generator))) for _ in range(n_resamples)],
                        dtype=torch.float64)
    if not torch.isfinite(reps).all():
        raise ValueError("the statistic returned a non-finite value on a resample")
    jack = None
    if method == "bca":
        keep = torch.arange(n)
        jack = torch.tensor([float(fn(torch.cat([keep[:i], keep[i + 1:]]))) for i in range(n)], dtype=torch.float64)
    return _interval(estimate, reps, jack, level=level, method=method, n=n, seeds=seeds)


def _check_statistic_inputs(values, name):
    items = values if isinstance(values, (tuple, list)) else (values,)
    n = None
    for i, v in enumerate(items):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor whose first dimension indexes the inputs, got {type(v).__name__}")
        if v.ndim == 0 or (n is not None and len(v) != n):
            raise ValueError(f"{name}: every tensor must share its first dimension (the inputs); got shapes "
                             f"{[tuple(t.shape) for t in items]}")
        n = len(v)
    if n < 2:
        raise ValueError(f"{name} must hold at least 2 inputs, got {n}")
    return items, n


def bootstrap_ci(values, *, statistic: Callable | None = None, level: float = 0.95, n_resamples: int = 2000,
                 method: str = "bca", generator: torch.Generator | None = None) -> Interval:
    """A bootstrap confidence interval over inputs (and seeds).

    Without ``statistic`` the quantity is the mean of ``values``, a tensor or sequence of shape
    ``(inputs,)`` or ``(seeds, inputs)`` (one value per input, e.g. a PSNR per edited image, for
    each sampler seed). With seeds, each resample draws ``seeds`` rows and ``inputs`` columns
    independently with replacement and averages the drawn cells (the pigeonhole bootstrap, which
    covers the variation between inputs *and* between seeds; at least 3 seeds make that
    meaningful). The interval is BCa by default: the percentile interval with its levels moved by
    the bias ``z0 = Phi^-1(#{theta* < theta_hat} / B)`` and the acceleration
    ``a = sum d^3 / (6 (sum d^2)^1.5)`` of the jackknife deviations ``d`` (leave one input out).

    With ``statistic`` the quantity is a set-level statistic: ``values`` is a tensor (or a tuple of
    tensors resampled together) whose first dimension indexes the inputs, and ``statistic(*resampled)``
    returns a number; it is recomputed on every resample (and, for BCa, on every leave-one-out set).

    Args:
        values: see above; finite.
        statistic: ``None`` (the mean) or a callable as above.
        level: in (0, 1).
        n_resamples: >= 200 (2000 by default, enough for a 95% interval's end points).
        method: ``"bca"`` or ``"percentile"``.
        generator: a ``torch.Generator`` for the resampling (default: a fresh one seeded 0, so an
            interval is reproducible).

    Returns:
        :class:`Interval` with ``n`` the number of inputs and ``seeds`` the number of seeds.

    Raises:
        ValueError / TypeError: bad shapes, non-finite values, or options out of range.
    """
    generator = _check_options(level, n_resamples, method, generator)
    if statistic is not None:
        if not callable(statistic):
            raise TypeError(f"statistic must be callable or None, got {type(statistic).__name__}")
        items, n = _check_statistic_inputs(values, "values")
        return _generic(n, lambda i: statistic(*(v[i] for v in items)), level=level,
                        n_resamples=n_resamples, method=method, generator=generator)
    x = _as_values(values, "values")
    reps = _mean_replicates(x, n_resamples, generator)
    jack = _jackknife_mean(x) if method == "bca" else None
    return _interval(float(x.mean()), reps, jack, level=level, method=method, n=x.shape[-1],
                     seeds=x.shape[0] if x.ndim == 2 else 1)


def paired_bootstrap_ci(a, b, *, statistic: Callable | None = None, level: float = 0.95,
                        n_resamples: int = 2000, method: str = "bca",
                        generator: torch.Generator | None = None) -> Interval:
    """Interval for ``mean(a) - mean(b)`` (or ``statistic(a) - statistic(b)``) of two methods measured
    on the **same** inputs (and seeds): every resample draws the same inputs for both, so what the
    inputs share cancels and the interval is narrower than :func:`unpaired_bootstrap_ci`'s.

    ``a`` and ``b`` have the same shape, ``(inputs,)`` or ``(seeds, inputs)`` for the mean; with
    ``statistic`` they are tensors whose first dimension indexes the same inputs. Other arguments as
    in :func:`bootstrap_ci`.
    """
    generator = _check_options(level, n_resamples, method, generator)
    if statistic is not None:
        if not callable(statistic):
            raise TypeError(f"statistic must be callable or None, got {type(statistic).__name__}")
        (ta, tb), n = _check_statistic_inputs((a, b), "(a, b)")
        return _generic(n, lambda i: statistic(ta[i]) - statistic(tb[i]), level=level,
                        n_resamples=n_resamples, method=method, generator=generator)
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must have the same shape (the same inputs and seeds), got "
                         f"{tuple(xa.shape)} and {tuple(xb.shape)}")
    return bootstrap_ci(xa - xb, level=level, n_resamples=n_resamples, method=method, generator=generator)


def unpaired_bootstrap_ci(a, b, *, level: float = 0.95, n_resamples: int = 2000, method: str = "bca",
                          generator: torch.Generator | None = None) -> Interval:
    """Interval for ``mean(a) - mean(b)`` of two **independent** samples (each resampled on its own).

    ``a`` and ``b`` are 1-D (their lengths may differ); ``n`` of the result is the smaller length.
    The BCa acceleration uses the jackknife over both samples (leave out one value of either)."""
    generator = _check_options(level, n_resamples, method, generator)
    xa, xb = _as_values(a, "a"), _as_values(b, "b")
    if xa.ndim != 1 or xb.ndim != 1:
        raise ValueError(f"a and b must be 1-D samples, got shapes {tuple(xa.shape)} and {tuple(xb.shape)}")
    reps = _mean_replicates(xa, n_resamples, generator) - _mean_replicates(xb, n_resamples, generator)
    jack = None
    if method == "bca":
        jack = torch.cat([_jackknife_mean(xa) - xb.mean(), xa.mean() - _jackknife_mean(xb)])
    return _interval(float(xa.mean() - xb.mean()), reps, jack, level=level, method=method,
                     n=min(len(xa), len(xb)), seeds=1)


# ---------------------------------------------------------------------------------------------
# The jackknife (for statistics whose bootstrap is biased: the Frechet distance)
# ---------------------------------------------------------------------------------------------

def _jackknife_parts(estimate, leave_one_out, name: str) -> tuple[float, float, int]:
    if not isinstance(estimate, (int, float)) or not math.isfinite(estimate):
        raise TypeError(f"{name}: estimate must be a finite number, got {estimate!r}")
    if not isinstance(leave_one_out, torch.Tensor) or leave_one_out.ndim != 1 or len(leave_one_out) < 2:
        raise ValueError(f"{name}: leave_one_out must be a 1-D tensor of at least 2 values (one per input left "
                         f"out), got {getattr(leave_one_out, 'shape', type(leave_one_out).__name__)}")
    loo = leave_one_out.detach().to("cpu", torch.float64)
    if not torch.isfinite(loo).all():
        raise ValueError(f"{name}: leave_one_out holds non-finite values")
    n = len(loo)
    corrected = n * estimate - (n - 1) * float(loo.mean())
    variance = (n - 1) / n * float(((loo - loo.mean()) ** 2).sum())
    return corrected, variance, n


def jackknife_ci(estimate: float, leave_one_out: torch.Tensor, *, level: float = 0.95, seeds: int = 1) -> Interval:
    """A bias-corrected jackknife interval for a set-level statistic whose plug-in estimate is biased.

    With ``theta`` the statistic on all ``n`` inputs and ``theta_(i)`` the statistic with input ``i``
    left out (``leave_one_out``, shape ``(n,)``), the estimate is the jackknife's bias-corrected
    ``n theta - (n - 1) mean(theta_(i))`` (Quenouille; it removes the ``1/n`` term of the bias) and the
    interval is that estimate ``+- z se`` with ``se^2 = (n - 1)/n sum (theta_(i) - mean)^2``.

    Why not the bootstrap: a Fréchet distance computed from a few hundred samples in many dimensions
    is biased upward by more than its spread, by an amount that depends on each set's covariance, so
    it does not cancel in a difference of two FDs; a bootstrap resample with repeated inputs is
    biased further still, and its interval can miss the truth every time.
    ``benchmarks/fd_interval_coverage.py`` measures both on features with a known answer: the
    jackknife interval covers at least 95% there, conservatively in 128 dimensions (its ``se``
    exceeds the estimate's spread, as the jackknife variance does for non-linear statistics,
    Efron and Stein 1981).

    Args:
        estimate: the statistic on all inputs (a finite number).
        leave_one_out: ``(n,)`` values, ``n >= 2`` (leave out every sampler seed of an input together,
            so the interval covers seeds too; pass their number as ``seeds``).
        level: in (0, 1).
        seeds: sampler seeds per input (reported, not used in the computation).

    Returns:
        :class:`Interval` (``method="jackknife"``) around the bias-corrected estimate.
    """
    corrected, variance, n = _jackknife_parts(estimate, leave_one_out, "jackknife_ci")
    half = _z(level) * math.sqrt(variance)
    return Interval(corrected, corrected - half, corrected + half, n, level, seeds, "jackknife")


def unpaired_jackknife_ci(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor], *,
                          level: float = 0.95) -> Interval:
    """:func:`jackknife_ci` for ``theta_a - theta_b`` of two **independent** sets: each pair is
    ``(estimate, leave_one_out)``; the bias-corrected estimates are subtracted and their jackknife
    variances added. ``n`` of the result is the smaller set's size."""
    for name, pair in (("a", a), ("b", b)):
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise TypeError(f"{name} must be a pair (estimate, leave_one_out), got {type(pair).__name__}")
    ca, va, na = _jackknife_parts(*a, "unpaired_jackknife_ci(a)")
    cb, vb, nb = _jackknife_parts(*b, "unpaired_jackknife_ci(b)")
    half = _z(level) * math.sqrt(va + vb)
    return Interval(ca - cb, ca - cb - half, ca - cb + half, min(na, nb), level, 1, "jackknife")


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

_WORDS = ("yes", "no", "inconclusive")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One claim of a paper, tested: the words follow from the interval.

    Args:
        claim: the claim in a few words ("diffusion covers rare groups better than the GAN").
        metric: what was measured, with its direction ("success share, rare - full").
        judge: the model (or rule) that scored the results, e.g. ``"classifier-judge"``, or
            ``"pixels"`` for a metric that needs none.
        interval: the estimate and its interval (:class:`Interval`).
        null: the value that means "no effect" (default 0).
        direction: ``"greater"`` if the claim says the quantity exceeds ``null``, ``"less"`` if below.
        self_judged: ``True`` when the judge is the model that defined the energy, loss or selection;
            such a verdict is at best ``"inconclusive"`` and is labelled.

    ``reproduces`` is ``"yes"`` (interval on the claim's side of ``null``), ``"no"`` (on the other
    side) or ``"inconclusive"`` (contains ``null``, or self-judged and not ``"no"``).
    """

    claim: str
    metric: str
    judge: str
    interval: Interval
    null: float = 0.0
    direction: str = "greater"
    self_judged: bool = False
    reproduces: str = dataclasses.field(init=False)

    def __post_init__(self):
        for name in ("claim", "metric", "judge"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"Verdict.{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.interval, Interval):
            raise TypeError(f"Verdict.interval must be an evidence.Interval, got {type(self.interval).__name__}")
        words = verdict(self.interval, null=self.null, claim=self.direction)
        word = {"reproduces": "yes", "does not reproduce": "no", "inconclusive": "inconclusive"}[words]
        if self.self_judged and word == "yes":
            word = "inconclusive"
        object.__setattr__(self, "reproduces", word)

    @property
    def estimate(self) -> float:
        return self.interval.estimate

    @property
    def n(self) -> int:
        return self.interval.n

    @property
    def label(self) -> str:
        """``reproduces`` with the self-judged mark, as a table prints it."""
        return f"{self.reproduces} (self-judged)" if self.self_judged else self.reproduces

    def expect(self, words: str) -> "Verdict":
        """Assert that the verdict is ``words`` (what the chapter's prose says); returns ``self``.

        Raises:
            ValueError: ``words`` is not "yes", "no" or "inconclusive".
            AssertionError: the interval says otherwise (the prose must change with the numbers).
        """
        if words not in _WORDS:
            raise ValueError(f"words must be one of {_WORDS}, got {words!r}")
        if self.reproduces != words:
            raise AssertionError(f"the text says {words!r} but the interval {self.interval} (null {self.null}, "
                                 f"claim {self.direction}) gives {self.label!r} for: {self.claim} [{self.metric}]")
        return self


def across_metrics(verdicts: Sequence[Verdict]) -> str:
    """One claim under several metrics: their common ``reproduces`` word, or ``"depends on the metric"``."""
    if not verdicts or not all(isinstance(v, Verdict) for v in verdicts):
        raise ValueError("verdicts must be a non-empty sequence of Verdict")
    words = {v.reproduces for v in verdicts}
    return words.pop() if len(words) == 1 else "depends on the metric"


def verdict_table(verdicts: Sequence[Verdict], *, title: str | None = None):
    """The chapter's "claim vs our numbers" table (:class:`dpmlatent.reporting.Table`): claim, metric,
    judge, n (inputs x seeds), estimate [interval] at the precision the interval supports, null, verdict."""
    from .reporting import Column, Table

    if not all(isinstance(v, Verdict) for v in verdicts):
        raise TypeError("verdicts must be a sequence of Verdict")
    rows = []
    for v in verdicts:
        i = v.interval
        n = f"{i.n}" if i.seeds == 1 else f"{i.n} x {i.seeds} {i.unit}"
        rows.append([v.claim, v.metric, v.judge, n, f"{i}", f"{'>' if v.direction == 'greater' else '<'} {v.null:g}",
                     v.label])
    level = {v.interval.level for v in verdicts}
    head = f"estimate [{100 * level.pop():g}% CI]" if len(level) == 1 else "estimate [CI]"
    cols = [Column("claim"), Column("metric"), Column("judge"), Column("n", ">"), Column(head, ">"),
            Column("claim says", ">"), Column("reproduces")]
    return Table(cols, rows, title=title)
