"""The identity-coverage experiment (Wu & De la Torre, Sec. 5, "individuals"): does a guided diffusion
model reach *individuals* that a guided GAN misses, and does its advantage grow as they get rarer?

The paper guides with ArcFace, ``E(x) = 1 - cos(ArcFace(x), ArcFace(x_ref))``, and shows the claim as
a figure. At the book's scale an individual is a typeface (:func:`dpmlatent.data.font_split`): the
generators (``ddpm-fonts-zipf``, ``gan-fonts-zipf``) saw 40 individuals with Zipf frequencies; the
energy is :func:`dpmlatent.energies.identity_energy` of the ``identity-fonts`` embedding, its
references one glyph of each digit drawn by the target; every chain aims at one target, and many
targets share one batch (chain ``b`` of a seed aims at target ``b % T``).

The verdicts rest on models that took no part in guiding: the ``identity-fonts-judge`` embedding (an
MLP, another seed) and the ``digit-judge``. A chain succeeds when the digit judge reads a digit ``d``
with ``p >= 0.9`` and the identity judge puts the sample within the threshold of the target's own
glyphs of ``d`` (:func:`dpmlatent.identity.identity_matches`); the threshold is set at a 1% false-accept
rate on glyphs of held-out individuals (:func:`calibrate`).

Buckets: ``"frequent"`` (the 8 most frequent generator individuals, 40 to 5 glyphs per digit),
``"rare"`` (every other one of ranks 26 to 40, 1 or 2 glyphs per digit), ``"held-out"`` (8 individuals
of the held-out faces, which no model saw).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from . import data
from .identity import centre_pairs, reference_centres, threshold_at_far

__all__ = ["BUCKETS", "Calibration", "buckets", "references", "calibrate", "chain_targets", "nearest_distance",
           "within_target_diversity"]

BUCKETS = ("frequent", "rare", "held-out")


def buckets(split: data.FontSplit | None = None, *, per_bucket: int = 8) -> dict[str, tuple[int, ...]]:
    """The target individuals of each bucket (indices into :func:`dpmlatent.data.font_names`):
    ``"frequent"`` the ``per_bucket`` most frequent generator individuals, ``"rare"`` ``per_bucket`` of the
    rarest spread evenly over the tail (ranks ``n - 2 per_bucket + 2, ..., n`` in steps of 2), ``"held-out"``
    ``per_bucket`` held-out individuals spread over the held-out faces."""
    split = data.font_split() if split is None else split
    if not isinstance(per_bucket, int) or isinstance(per_bucket, bool) or not 2 <= per_bucket <= len(split.generator) // 4:
        raise ValueError(f"per_bucket must be an integer in [2, {len(split.generator) // 4}], got {per_bucket!r}")
    gen, held = split.generator, split.held_out
    rare = gen[len(gen) - 2 * per_bucket + 1::2]
    step = len(held) / per_bucket
    return {"frequent": tuple(gen[:per_bucket]), "rare": tuple(rare),
            "held-out": tuple(held[math.floor(i * step)] for i in range(per_bucket))}


def references(targets: Sequence[int], *, seed: int = 11, dtype=torch.float64) -> list[torch.Tensor]:
    """The energy's references: one fresh glyph of every digit drawn by each target, ``(10, 1, 8, 8)``
    each (for :func:`dpmlatent.energies.identity_energy`'s list form)."""
    g = data.font_glyphs(targets, 1, seed=seed)
    return [g.images[g.individuals == t].to(dtype) for t in targets]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The identity judge's gallery and threshold.

    ``centres``: ``(110, 10, D)`` :func:`~dpmlatent.identity.reference_centres` of the judge (8 fresh glyphs
    per digit of every individual); ``threshold``: the cosine at ``far`` false accepts on held-out probes;
    ``tar``: the share of held-out probes accepted by their own individual at that threshold (how often a
    *real* glyph of the target passes: the ceiling of any success rate); ``n_same`` / ``n_different``: the
    probe pairs behind them."""

    centres: torch.Tensor
    threshold: float
    far: float
    tar: float
    n_same: int
    n_different: int


@torch.no_grad()
def calibrate(judge: torch.nn.Module, split: data.FontSplit | None = None, *, far: float = 0.01,
              gallery_per_digit: int = 8, probes_per_digit: int = 2, seed: int = 12) -> Calibration:
    """Build the judge's gallery of every individual from ``gallery_per_digit`` fresh glyphs per digit
    (draw ``seed``), and set the "same individual" threshold at false-accept rate ``far`` from
    probes of the held-out individuals (draw ``seed + 1``) against every other held-out individual's
    centre of the same digit (:func:`~dpmlatent.identity.centre_pairs`)."""
    split = data.font_split() if split is None else split
    p = next(judge.parameters())
    every = range(len(data.font_names()))
    gallery = data.font_glyphs(every, gallery_per_digit, seed=seed)
    centres = reference_centres(judge, gallery.images.to(p.device, p.dtype), gallery.individuals, gallery.labels,
                                len(data.font_names()))
    probes = data.font_glyphs(split.held_out, probes_per_digit, seed=seed + 1)
    same, diff = centre_pairs(judge(probes.images.to(p.device, p.dtype)), probes.individuals.to(p.device),
                              probes.labels.to(p.device), centres, split.held_out)
    t = threshold_at_far(diff, far)
    return Calibration(centres, t, far, float((same >= t).double().mean()), len(same), len(diff))


def chain_targets(targets: Sequence[int], chains_per_seed: int, seeds: int) -> torch.Tensor:
    """``(chains_per_seed * seeds,)`` int64: the target of every chain of a coverage run (seed-major;
    within a seed, chain ``b`` aims at ``targets[b % T]``)."""
    targets = list(targets)
    if not targets or chains_per_seed % len(targets):
        raise ValueError(f"chains_per_seed ({chains_per_seed}) must be a multiple of the number of targets "
                         f"({len(targets)})")
    return torch.tensor(targets).repeat(chains_per_seed // len(targets) * seeds)


def nearest_distance(images: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64: each image's L2 distance to its nearest image in ``train`` (pixels in
    ``[-1, 1]``): a sample much closer to the training set than fresh glyphs of the same individual
    would be a copy."""
    a = images.flatten(1).double().cpu()
    b = train.flatten(1).double().cpu()
    return torch.cdist(a, b).min(1).values


def within_target_diversity(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance among the images of each target that has at least two, ``(k,)``
    float64 (one value per such target): the spread of what guidance found for one individual."""
    if targets.shape != (len(images),):
        raise ValueError(f"targets must be ({len(images)},), got {tuple(targets.shape)}")
    out = []
    for t in targets.unique():
        x = images[targets == t].flatten(1).double()
        if len(x) >= 2:
            d = torch.cdist(x, x)
            out.append(d.sum() / (len(x) * (len(x) - 1)))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)
