"""Comparisons at matched faithfulness: every method computed *at* the faithfulness it is compared at.

An editor or translator trades faithfulness (SSIM to its input) for change, and its strength
moves it along that curve. Comparing methods at one strength, or reading each off a coarse curve,
compares them at different faithfulness or through an interpolation error as large as the effect.
So we compute each method at the level itself:

* a sampler of ``n`` steps has the strengths ``k / n``, the finest grid there is; faithfulness falls
  as ``k`` grows. :func:`match_level` walks ``k`` from a first guess until ``k`` steps give a mean
  faithfulness (over inputs and seeds) at or above the level and ``k + 1`` steps at or below it;
* both neighbours are run on every input with every seed, and every per-input score is read off
  between them with the one weight ``w`` that puts the mean faithfulness exactly on the level,
  ``score(level) = (1 - w) score(k) + w score(k + 1)``, ``w = (f(k) - level) / (f(k) - f(k + 1))``;
* a third neighbour on the first seed checks the interpolation against a directly computed point
  (:meth:`MatchedPoint.interpolation_error`; for a difference of two methods,
  :func:`interpolation_error`);
* :func:`matched_difference` gives the paired bootstrap interval of a score (or the jackknife interval
  of a Frechet distance) between two methods matched at the same level on the same inputs and seeds;
  :func:`checked_difference` gives it only where the interpolation check is below its half-width.

The method is generic: :func:`match_level` takes ``run(k, seed)``, a function that runs ``k`` of
``n`` sampler steps with one seed and returns per-input scores. Chapter 4 uses it through
:func:`dpmlatent.translation.matched_point`, chapter 5 through
:func:`dpmlatent.edit_experiment.matched_edit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from . import metrics

__all__ = ["strength_of_steps", "first_guess", "MatchedPoint", "match_level", "matched_difference",
           "interpolation_error", "checked_difference"]


def strength_of_steps(k: int, n: int) -> float:
    """A strength whose sampler runs exactly ``k`` of ``n`` steps (``int(n * s) == k``, no round-off):
    ``(k + 0.5) / n``, or 1 for ``k >= n``."""
    if not isinstance(k, int) or not isinstance(n, int) or not 1 <= k or n < 1:
        raise ValueError(f"k and n must be integers with 1 <= k and n >= 1, got k={k!r}, n={n!r}")
    return 1.0 if k >= n else (k + 0.5) / n


def first_guess(strengths, faithfulness, level: float, *, anchor: bool = True) -> float:
    """A first guess of the strength at which a method's faithfulness equals ``level``, from a coarse
    sweep (``strengths`` and their mean ``faithfulness``, e.g. SSIM): linear in faithfulness between
    the bracketing points, with strength 0 at faithfulness 1 (no step, the input itself) as an anchor
    (``anchor=False``: the sweep's most faithful strength above it), and the largest strength beyond
    the sweep's least faithful point. Only where :func:`match_level` starts; the match itself is
    computed."""
    import numpy as np

    strengths, faithfulness = list(strengths), list(faithfulness)
    if len(strengths) < (1 if anchor else 2) or len(set(strengths)) != len(strengths) or len(faithfulness) != len(strengths):
        raise ValueError(f"strengths must be distinct, at least {1 if anchor else 2}, one per faithfulness, got "
                         f"{strengths!r} and {faithfulness!r}")
    xs, ys = zip(*sorted(list(zip(faithfulness, strengths)) + ([(1.0, 0.0)] if anchor else [])))
    return float(np.interp(level, xs, ys))


@dataclasses.dataclass
class MatchedPoint:
    """One method read off at a given faithfulness, from two directly computed neighbours.

    ``steps = (k, k + 1)`` are the sampler step counts whose mean faithfulness (over inputs and
    seeds) brackets ``level``; every score is interpolated between them with the one weight
    ``weight`` that makes the mean faithfulness equal ``level``. ``lo`` and ``hi`` hold the two
    neighbours' per-input scores as ``(seeds, inputs)`` tensors, and, when the run returned them,
    ``"features"`` as ``(inputs, seeds, D)`` (for a Frechet distance). ``probe`` holds three
    consecutive step counts on the first seed, for :meth:`interpolation_error`.
    """

    method: str
    level: float
    steps: tuple[int, int]
    num_inference_steps: int
    weight: float
    lo: dict[str, torch.Tensor]
    hi: dict[str, torch.Tensor]
    runs: int                       # sampler runs the search needed (each over all inputs, one seed)
    probe: dict[int, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict, repr=False)
    faithfulness: str = "ssim"

    @property
    def strength(self) -> float:
        return (self.steps[0] + self.weight) / self.num_inference_steps

    @property
    def seeds(self) -> int:
        return self.lo[self.faithfulness].shape[0]

    @property
    def scores(self) -> tuple[str, ...]:
        """The per-input scores this point holds (``"features"`` is not one)."""
        return tuple(k for k in self.lo if k != "features")

    def _check_score(self, score: str, *, frechet: bool = False) -> None:
        if score not in self.scores and not (frechet and score == "frechet"):
            extra = " or 'frechet'" if frechet else ""
            raise ValueError(f"score must be one of {self.scores}{extra}, got {score!r}")

    def _interpolate(self, lo, hi):
        """``lo`` and ``hi`` (the two neighbours' values of anything) read off at the matched faithfulness."""
        return (1 - self.weight) * lo + self.weight * hi

    def values(self, score: str) -> torch.Tensor:
        """``(seeds, inputs)`` values of one per-input score at the matched faithfulness."""
        self._check_score(score)
        return self._interpolate(self.lo[score], self.hi[score])

    def frechet(self, reference: metrics.FrechetReference, index: torch.Tensor | None = None) -> float:
        """FD to ``reference`` at the matched faithfulness (the two neighbours' FDs interpolated), over
        the inputs ``index`` (all by default) with all their seeds' outputs."""
        if "features" not in self.lo:
            raise ValueError(f"{self.method} holds no features; the run must return 'features' for an FD")
        parts = []
        for side in (self.lo, self.hi):
            f = side["features"] if index is None else side["features"][index]
            parts.append(reference(f.reshape(-1, f.shape[-1])))
        return self._interpolate(*parts)

    def frechet_leave_one_out(self, reference: metrics.FrechetReference) -> torch.Tensor:
        """``(inputs,)``: :meth:`frechet` with each input (all its seeds' outputs) left out in turn
        (:meth:`~dpmlatent.metrics.FrechetReference.leave_one_out` on both neighbours, interpolated)."""
        if "features" not in self.lo:
            raise ValueError(f"{self.method} holds no features; the run must return 'features' for an FD")
        return self._interpolate(*(reference.leave_one_out(side["features"]) for side in (self.lo, self.hi)))

    def interpolation_error(self, score: str, reference: metrics.FrechetReference | None = None) -> float:
        """How far linear interpolation in faithfulness misses a directly computed point, on the first
        seed: the score at the middle of three consecutive step counts read off between the outer two,
        minus its direct value, in absolute value. That bracket spans two sampler steps, twice the
        matched point's, so for a smooth curve this over-estimates the matched point's interpolation
        error (about fourfold). ``reference`` (a :class:`~dpmlatent.metrics.FrechetReference`) is
        needed for ``score="frechet"`` and ignored otherwise."""
        if len(self.probe) != 3:
            raise ValueError("this MatchedPoint holds no probe (three consecutive step counts on the first seed)")
        self._check_score(score, frechet=True)
        if score == "frechet" and reference is None:
            raise ValueError("interpolation_error('frechet') needs the FD reference")
        ka, kb, kc = sorted(self.probe)

        def value(k):
            side = self.probe[k]
            return reference(side["features"]) if score == "frechet" else float(side[score].mean())

        fa_, fb_, fc_ = (float(self.probe[k][self.faithfulness].mean()) for k in (ka, kb, kc))
        if fa_ == fc_:
            return 0.0
        va, vb, vc = value(ka), value(kb), value(kc)
        return abs(va + (vc - va) * (fa_ - fb_) / (fa_ - fc_) - vb)

    def bracket_change(self, score: str, reference: metrics.FrechetReference | None = None) -> float:
        """``|mean(hi) - mean(lo)|`` of a score (or of FD with ``score="frechet"``): an upper bound on the
        interpolation error, if the score is monotone across the one-step bracket."""
        self._check_score(score, frechet=True)
        if score == "frechet":
            if reference is None:
                raise ValueError("bracket_change('frechet') needs the FD reference")
            lo = dataclasses.replace(self, weight=0.0).frechet(reference)
            return abs(dataclasses.replace(self, weight=1.0).frechet(reference) - lo)
        return abs(float(self.hi[score].mean() - self.lo[score].mean()))


def match_level(run: Callable[[int, int], dict[str, torch.Tensor]], level: float, *, num_inference_steps: int,
                seeds: tuple[int, ...] = (0, 1, 2), start: float | None = None, name: str = "method",
                faithfulness: str = "ssim", max_moves: int = 12, deterministic: bool = False) -> MatchedPoint:
    """Find where a method's mean ``faithfulness`` equals ``level``, and score it there.

    Args:
        run: ``run(k, seed)`` runs ``k`` of ``num_inference_steps`` sampler steps (strength
            :func:`strength_of_steps`) on all inputs with ``seed`` and returns a dict of per-input
            ``(N,)`` scores that includes ``faithfulness`` (and optionally ``"features"``, ``(N, D)``).
            Faithfulness must fall as ``k`` grows.
        level: the mean faithfulness to match.
        num_inference_steps: ``n`` >= 2.
        seeds: distinct integers; the search uses the first, then all.
        start: the first guess, a strength in [0, 1] (default 0.5).
        name: names the point (``MatchedPoint.method``).
        max_moves: how many steps the search may walk before it gives up.
        deterministic: ``run`` ignores its seed (a deterministic method such as DDIM inversion):
            each ``k`` runs once, with the first seed, and its scores stand for every seed
            (``MatchedPoint.runs`` counts the runs made).

    Returns:
        :class:`MatchedPoint`; a third neighbour (``k + 2`` steps, or ``k - 1`` at the end of the
        schedule) on the first seed is kept as its ``probe``.

    Raises:
        ValueError: bad arguments; ``level`` outside what 1 to ``n`` steps reach; no bracket within
            ``max_moves`` (faithfulness not monotone in ``k`` there).
    """
    if not callable(run):
        raise TypeError(f"run must be callable as run(k, seed), got {type(run).__name__}")
    if not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a faithfulness in (0, 1), got {level!r}")
    if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty tuple of distinct integers, got {seeds!r}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 2:
        raise ValueError(f"num_inference_steps must be an integer >= 2, got {num_inference_steps!r}")
    n = num_inference_steps
    start = 0.5 if start is None else start
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"start must be a strength in [0, 1], got {start!r}")
    if not isinstance(deterministic, bool):
        raise TypeError(f"deterministic must be True or False, got {deterministic!r}")
    cache: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def scores(k: int, seed: int) -> dict[str, torch.Tensor]:
        seed = seeds[0] if deterministic else seed
        if (k, seed) not in cache:
            out = run(k, seed)
            if faithfulness not in out:
                raise ValueError(f"run(k, seed) must return a dict with {faithfulness!r}, got keys {tuple(out)}")
            cache[k, seed] = out
        return cache[k, seed]

    def mean_f(k: int, use: tuple[int, ...]) -> float:
        return float(torch.stack([scores(k, s)[faithfulness].double() for s in use]).mean())

    k = k0 = min(max(int(round(start * n)), 1), n - 1)
    for use in (seeds[:1], seeds):
        for _ in range(max_moves + 1):
            if mean_f(k, use) < level:
                k -= 1
            elif mean_f(k + 1, use) > level:
                k += 1
            else:
                break
            if not 1 <= k <= n - 1:
                raise ValueError(f"{name} does not reach mean {faithfulness} {level} with 1 to {n} steps")
        else:
            raise ValueError(f"no bracket for {faithfulness} {level} within {max_moves} steps of the start "
                             f"(k = {k0}): start closer or raise max_moves, or the {faithfulness} of {name} "
                             "is not monotone in the step count here")
    f_lo, f_hi = mean_f(k, seeds), mean_f(k + 1, seeds)
    weight = 0.0 if f_lo == f_hi else (f_lo - level) / (f_lo - f_hi)

    def gather(kk: int) -> dict[str, torch.Tensor]:
        first = scores(kk, seeds[0])
        side = {c: torch.stack([scores(kk, s)[c].double().cpu() for s in seeds]) for c in first if c != "features"}
        if "features" in first:
            side["features"] = torch.stack([scores(kk, s)["features"].double().cpu() for s in seeds], dim=1)
        return side

    extra = k + 2 if k + 2 <= n else k - 1
    probe = {kk: scores(kk, seeds[0]) for kk in sorted((k, k + 1, extra))}
    return MatchedPoint(name, float(level), (k, k + 1), n, weight, gather(k), gather(k + 1), len(cache), probe,
                        faithfulness)


def matched_difference(a: MatchedPoint, b: MatchedPoint, score: str, *, reference=None, level: float = 0.95,
                       n_resamples: int = 2000, generator: torch.Generator | None = None):
    """``score(a) - score(b)`` at matched faithfulness, with a paired bootstrap interval
    (:mod:`dpmlatent.evidence`).

    For a per-input score the values are ``(seeds, inputs)`` tables resampled over inputs and seeds
    (the pigeonhole bootstrap). For ``score="frechet"`` (needs ``reference``, a
    :class:`~dpmlatent.metrics.FrechetReference`) the interval is the bias-corrected jackknife of
    :func:`~dpmlatent.evidence.jackknife_ci` (each input left out with all its seeds' outputs, both
    FDs recomputed; the estimate is the bias-corrected difference, and ``n_resamples`` and
    ``generator`` are not used): the bootstrap fails for FD (``benchmarks/fd_interval_coverage.py``).
    ``a`` and ``b`` must have been computed on the same inputs with the same seeds.
    """
    from . import evidence

    if not isinstance(a, MatchedPoint) or not isinstance(b, MatchedPoint):
        raise TypeError("a and b must be MatchedPoint s")
    shape_a, shape_b = a.lo[a.faithfulness].shape, b.lo[b.faithfulness].shape
    if shape_a != shape_b:
        raise ValueError(f"a and b must share inputs and seeds, got (seeds, inputs) {tuple(shape_a)} and {tuple(shape_b)}")
    kw = dict(level=level, n_resamples=n_resamples, generator=generator)
    if score == "frechet":
        if not isinstance(reference, metrics.FrechetReference):
            raise TypeError("score='frechet' needs reference=metrics.FrechetReference(real_features)")
        return evidence.jackknife_ci(a.frechet(reference) - b.frechet(reference),
                                     a.frechet_leave_one_out(reference) - b.frechet_leave_one_out(reference),
                                     level=level, seeds=a.seeds)
    return evidence.paired_bootstrap_ci(a.values(score), b.values(score), **kw)


def interpolation_error(a: MatchedPoint, b: MatchedPoint, score: str, *, reference=None) -> float:
    """How far interpolation may move ``matched_difference(a, b, score)``: the sum of both points'
    :meth:`MatchedPoint.interpolation_error` (an over-estimate). A comparison at matched
    faithfulness is read off reliably when this is below its interval's half-width.
    ``reference`` is needed for ``score="frechet"`` and ignored otherwise."""
    if not isinstance(a, MatchedPoint) or not isinstance(b, MatchedPoint):
        raise TypeError("a and b must be MatchedPoint s")
    return a.interpolation_error(score, reference) + b.interpolation_error(score, reference)


def checked_difference(a: MatchedPoint, b: MatchedPoint, score: str, *, reference=None, level: float = 0.95,
                       n_resamples: int = 2000, generator: torch.Generator | None = None):
    """:func:`matched_difference` of ``a`` and ``b``, returned only if it can be read off reliably: the
    interpolation check (:func:`interpolation_error`, an over-estimate of how far reading both points
    between their neighbours may move the difference) must be below the interval's half-width. Raises
    ``ValueError`` naming both methods, the score and the two numbers otherwise (a grid too coarse for
    the effect: match on a finer one)."""
    iv = matched_difference(a, b, score, reference=reference, level=level, n_resamples=n_resamples, generator=generator)
    err = interpolation_error(a, b, score, reference=reference)
    if not err < iv.half_width:
        raise ValueError(f"{a.method} - {b.method} ({score}): the interpolation check {err:.3g} is not below the "
                         f"interval's half-width {iv.half_width:.3g}; match both on a finer grid")
    return iv
