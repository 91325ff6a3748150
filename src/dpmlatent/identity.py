"""An identity model for typeface "individuals": the book's stand-in for a face-recognition embedding.

Wu & De la Torre guide with ArcFace embeddings of faces. Our individuals are typefaces
(:func:`dpmlatent.data.font_individuals`): the same face draws every digit, and an embedding
should map all of one face's glyphs close together and other faces' glyphs apart, whatever digit
they show. :class:`IdentityEmbedding` is a small CNN whose output is a unit vector; it is trained
with a CosFace head (large-margin cosine loss, Wang et al. 2018) on the *embedding* individuals
only:

    loss = CE(s * (cos(theta_j) - m * [j = y]),  y),   cos(theta_j) = <e(x), w_j> / |w_j|,

and judged by verification on individuals it never saw: :func:`verification_pairs` collects the
cosine similarities of same-individual and different-individual pairs, :func:`roc_auc` their
area under the ROC curve, and :func:`threshold_at_far` the similarity above which two images are
called "the same individual" at a stated false-accept rate.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .fitting import TrainResult, check_steps, fit as fit_loop

__all__ = ["IdentityConfig", "IdentityEmbedding", "train_identity", "verification_pairs", "roc_auc",
           "threshold_at_far"]


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """Architecture of :class:`IdentityEmbedding`: input ``resolution`` (8 or 16), embedding
    ``dim`` (16 to 64), channel ``width``."""

    resolution: int = 16
    dim: int = 32
    width: int = 32

    def __post_init__(self):
        if self.resolution not in (8, 16):
            raise ValueError(f"resolution must be 8 or 16, got {self.resolution!r}")
        if not isinstance(self.dim, int) or not 16 <= self.dim <= 64:
            raise ValueError(f"dim must be an integer in [16, 64], got {self.dim!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive integer, got {self.width!r}")


class IdentityEmbedding(nn.Module):
    """``(B, 1, R, R)`` in ``[-1, 1]`` -> ``(B, dim)`` unit vectors."""

    def __init__(self, config: IdentityConfig = IdentityConfig()):
        super().__init__()
        self.config = config
        w, r = config.width, config.resolution
        layers = [nn.Conv2d(1, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU()]
        if r == 16:
            layers += [nn.MaxPool2d(2)]                                                  # 8x8
        layers += [nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),          # 4x4
                   nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),      # 2x2
                   nn.Flatten(), nn.Linear(16 * w, 4 * w), nn.GELU(), nn.Linear(4 * w, config.dim)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, r, r):
            raise ValueError(f"x must have shape (B, 1, {r}, {r}), got {tuple(x.shape)}")
        return F.normalize(self.body(x), dim=1)


def train_identity(model: IdentityEmbedding, images: torch.Tensor, individuals: torch.Tensor, *, steps: int,
                   batch_size: int = 128, lr: float = 1e-3, margin: float = 0.2, scale: float = 16.0,
                   seed: int = 0, progress: bool = True) -> TrainResult:
    """Train ``model`` in place with a CosFace head over the individuals present in ``individuals``
    (``(N,)`` integer ids; relabelled ``0..K-1``). AdamW; the head is discarded after training.

    Raises:
        ValueError: shapes, fewer than two individuals, ``margin`` outside ``[0, 1)`` or ``scale <= 0``.
    """
    check_steps(steps, batch_size)
    if individuals.shape != (len(images),) or individuals.is_floating_point():
        raise ValueError(f"individuals must be ({len(images)},) integers, got {tuple(individuals.shape)} {individuals.dtype}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    ids, y = individuals.unique(return_inverse=True)
    if len(ids) < 2:
        raise ValueError("train_identity needs at least two individuals")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    head = nn.Parameter(torch.randn(len(ids), model.config.dim, generator=gen).to(device))
    opt = torch.optim.AdamW(list(model.parameters()) + [head], lr=lr, weight_decay=1e-4)
    images, y = images.to(device), y.to(device)
    model.train()

    def loss_fn():
        idx = torch.randint(len(images), (batch_size,), generator=gen).to(device)
        cos = model(images[idx]) @ F.normalize(head, dim=1).T                       # (B, K)
        logits = scale * (cos - margin * F.one_hot(y[idx], len(ids)))
        loss = F.cross_entropy(logits, y[idx])
        return loss, {"accuracy": (cos.argmax(1) == y[idx]).float().mean().item()}

    losses, history = fit_loop(loss_fn, opt, steps=steps, progress=progress)
    model.eval()
    return TrainResult(model, losses, history)


@torch.no_grad()
def verification_pairs(embeddings: torch.Tensor, individuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of every pair of distinct images: ``(same, different)``, the pairs of one
    individual and of two. ``embeddings`` ``(N, D)`` unit vectors, ``individuals`` ``(N,)``."""
    if embeddings.ndim != 2 or individuals.shape != (len(embeddings),):
        raise ValueError(f"embeddings must be (N, D) and individuals (N,), got {tuple(embeddings.shape)}, "
                         f"{tuple(individuals.shape)}")
    sims = embeddings @ embeddings.T
    same = individuals[:, None] == individuals[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    return sims[same & upper], sims[~same & upper]


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve of scores: ``P(positive > negative) + P(tie) / 2`` (Mann-Whitney),
    by ranks, so ties count half. 1 separates perfectly, 0.5 is chance."""
    if positive.ndim != 1 or negative.ndim != 1 or not len(positive) or not len(negative):
        raise ValueError("positive and negative must be non-empty 1-D tensors")
    scores = torch.cat([positive, negative]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    uniq, inverse = scores.unique(return_inverse=True)                 # average ranks of ties
    summed = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (summed / counts)[inverse]
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def threshold_at_far(negative: torch.Tensor, far: float) -> float:
    """The similarity threshold whose false-accept rate on ``negative`` (different-individual pair
    similarities) is at most ``far``: the ``(1 - far)`` quantile, so that a share ``<= far`` lies above it."""
    if not 0.0 < far < 1.0:
        raise ValueError(f"far must be in (0, 1), got {far!r}")
    if negative.ndim != 1 or not len(negative):
        raise ValueError("negative must be a non-empty 1-D tensor")
    values = negative.double().sort().values
    k = min(len(values) - 1, int(torch.tensor((1.0 - far) * len(values)).ceil()) - 1)
    return float(values[max(k, 0)])
