"""The coverage experiment (Wu & De la Torre, Sec. 5): do guided diffusion models reach rare
sub-populations that guided GANs miss?

Both kinds of model are maps ``x = G(z)`` from a Gaussian code, so the *same* energy and the *same*
sampler (:func:`dpmlatent.guidance.guide`) guide both. Trained on digits in which one class is rare
(``"handwritten-rare"``: sevens are 2% of the data), each model is guided towards that class, and
we measure over the same number of samples and seeds:

* **success**: the judge (the zoo's digit classifier) reads the target class with ``p >= 0.9``;
* the **energy** before and after guidance;
* **diversity**: the mean pairwise L2 distance among the successful samples (a model that reaches
  the class by collapsing onto one image scores low).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from . import metrics
from .guidance import Guided, guide
from .reporting import Column, Table, fmt_fraction

__all__ = ["CoverageRow", "mean_pairwise_distance", "coverage_row", "coverage_experiment", "format_coverage_table"]


@dataclasses.dataclass
class CoverageRow:
    """One (model, energy) line of the coverage table."""

    model: str
    energy: str
    num_samples: int
    success_before: float   # share of the unguided samples G(z0) read as the target (p >= threshold)
    success: float          # the same after guidance
    energy_before: float    # mean E(G(z0))
    energy_after: float     # mean E(G(z)) of the final codes
    diversity: float        # mean pairwise L2 distance among the successful guided samples (nan if < 2)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of ``images`` ``(N, ...)``; ``nan`` for fewer than 2."""
    if len(images) < 2:
        return math.nan
    flat = images.reshape(len(images), -1).double()
    d = torch.cdist(flat, flat)
    n = len(flat)
    return (d.sum() / (n * (n - 1))).item()


def _success(judge, images: torch.Tensor, target: int, threshold: float) -> torch.Tensor:
    probs, _ = metrics.classify(judge, images)
    return probs[:, target] >= threshold


def coverage_row(model: str, energy: str, images_before: torch.Tensor, guided: Guided, judge, target: int, *,
                 threshold: float = 0.9) -> CoverageRow:
    """Score one guided run: ``images_before`` = ``G(z0)``, ``guided`` = :func:`~dpmlatent.guidance.guide`'s output."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    ok = _success(judge, guided.images, target, threshold)
    return CoverageRow(model, energy, len(guided.images),
                       _success(judge, images_before, target, threshold).double().mean().item(),
                       ok.double().mean().item(), guided.energies[0].mean().item(), guided.energies[-1].mean().item(),
                       mean_pairwise_distance(guided.images[ok.to(guided.images.device)]))


def coverage_experiment(models: dict[str, tuple[Callable, object, float]], energies: dict[str, tuple[float, Callable]],
                        *, judge, target: int, steps: int, threshold: float = 0.9, seed: int = 0,
                        grid: float | None = None, progress: bool = True) -> tuple[list[CoverageRow], dict]:
    """Guide every model with every energy from the same codes and seed.

    Args:
        models: name -> ``(G, z0, step_size)``: the generator, its start codes (a batch of ``N``
            Gaussian codes: a tensor for a GAN, a ``LatentCode`` for a diffusion model) and the
            Langevin step size for its code space.
        energies: name -> ``(weight, E)``.
        judge: classifier of the success criterion; ``target``: its class index.
        steps: Langevin iterations per run. grid: rounds the chains' codes (see
            :func:`~dpmlatent.guidance.langevin`; makes float64 runs reproducible across CPUs).

    Returns:
        The rows, and ``{(model, energy): Guided}`` (plus ``{(model, None): G(z0)}``, the unguided samples).
    """
    rows, runs = [], {}
    for name, (g, z0, step_size) in models.items():
        with torch.no_grad():
            before = g(z0)
        runs[name, None] = before
        for energy_name, (weight, energy) in energies.items():
            out = guide(g, energy, z0, weight=weight, steps=steps, step_size=step_size,
                        generator=torch.Generator().manual_seed(seed), grid=grid, progress=progress)
            runs[name, energy_name] = out
            rows.append(coverage_row(name, energy_name, before, out, judge, target, threshold=threshold))
    return rows, runs


def format_coverage_table(rows: list[CoverageRow]) -> Table:
    """:class:`CoverageRow` s as a :class:`~dpmlatent.reporting.Table` (HTML in a notebook, text in
    ``print``; name columns as wide as the longest name).

    Shares are printed at the precision their number of samples supports
    (:func:`~dpmlatent.reporting.fmt_fraction`: 48 samples, 2 decimals)."""
    cols = [Column("model"), Column("energy"), Column("N", ">", 4), Column("success before", ">"),
            Column("after", ">", 6), Column("E before", ">"), Column("E after", ">", 8), Column("diversity", ">")]
    return Table(cols, [[r.model, r.energy, f"{r.num_samples}", fmt_fraction(r.success_before, r.num_samples),
                         fmt_fraction(r.success, r.num_samples), f"{r.energy_before:.3f}", f"{r.energy_after:.3f}",
                         f"{r.diversity:.2f}"] for r in rows])
