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
           "threshold_at_far", "Verification", "verification_summary", "reference_centres",
           "centre_pairs", "identity_matches", "make", "fit", "save", "load"]

ARCHS = ("cnn", "mlp")


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """Architecture of :class:`IdentityEmbedding`: input ``resolution`` (8 or 16), embedding
    ``dim`` (16 to 64), ``width`` (channels of the CNN, hidden units / 8 of the MLP), ``arch``:
    ``"cnn"`` (convolutions and pooling) or ``"mlp"`` (three layers on the pixels; the independent judge)."""

    resolution: int = 8
    dim: int = 32
    width: int = 32
    arch: str = "cnn"

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
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
        if config.arch == "mlp":
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(r * r, 8 * w), nn.GELU(), nn.Linear(8 * w, 8 * w),
                                      nn.GELU(), nn.Linear(8 * w, config.dim))
            return
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
def verification_pairs(embeddings: torch.Tensor, individuals: torch.Tensor,
                       labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of every pair of distinct images: ``(same, different)``, the pairs of one
    individual and of two. ``embeddings`` ``(N, D)`` unit vectors, ``individuals`` ``(N,)``; with
    ``labels`` ``(N,)`` (the digits) only pairs showing the same digit count."""
    if embeddings.ndim != 2 or individuals.shape != (len(embeddings),):
        raise ValueError(f"embeddings must be (N, D) and individuals (N,), got {tuple(embeddings.shape)}, "
                         f"{tuple(individuals.shape)}")
    if labels is not None and labels.shape != individuals.shape:
        raise ValueError(f"labels must be ({len(embeddings)},), got {tuple(labels.shape)}")
    sims = embeddings @ embeddings.T
    same = individuals[:, None] == individuals[None, :]
    keep = torch.triu(torch.ones_like(same), diagonal=1)
    if labels is not None:
        keep = keep & (labels[:, None] == labels[None, :])
    return sims[same & keep], sims[~same & keep]


@torch.no_grad()
def reference_centres(embed: nn.Module, images: torch.Tensor, individuals: torch.Tensor, labels: torch.Tensor,
                      num_individuals: int) -> torch.Tensor:
    """The reference "gallery": ``(num_individuals, 10, D)``, entry ``[i, d]`` the normalised mean
    embedding of individual ``i``'s images of digit ``d`` (zeros where there are none).
    ``images`` ``(N, 1, R, R)``, ``individuals`` and ``labels`` (digits) ``(N,)`` integers."""
    if individuals.shape != (len(images),) or labels.shape != (len(images),):
        raise ValueError(f"individuals and labels must be ({len(images)},), got {tuple(individuals.shape)}, "
                         f"{tuple(labels.shape)}")
    if individuals.min() < 0 or individuals.max() >= num_individuals or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"individuals must be in [0, {num_individuals}) and labels (digits) in [0, 9]")
    e = embed(images)
    sums = torch.zeros(num_individuals * 10, e.shape[1], dtype=e.dtype, device=e.device)
    sums.index_add_(0, (individuals * 10 + labels).to(e.device), e)
    return F.normalize(sums, dim=1).view(num_individuals, 10, -1)


@torch.no_grad()
def centre_pairs(embeddings: torch.Tensor, individuals: torch.Tensor, labels: torch.Tensor,
                 centres: torch.Tensor, candidates) -> tuple[torch.Tensor, torch.Tensor]:
    """Verification against a gallery: the cosine of every image with the centre of the same digit
    of its own individual (``same``) and of every other individual in ``candidates`` (``different``).
    ``embeddings`` ``(N, D)`` unit vectors of images that were *not* used to make ``centres``
    (:func:`reference_centres`); ``candidates`` the individuals to compare against (each image's own
    individual must be one of them)."""
    cand = torch.as_tensor(list(candidates), device=centres.device)
    if embeddings.ndim != 2 or individuals.shape != (len(embeddings),) or labels.shape != (len(embeddings),):
        raise ValueError(f"embeddings must be (N, D), individuals and labels (N,), got {tuple(embeddings.shape)}, "
                         f"{tuple(individuals.shape)}, {tuple(labels.shape)}")
    if not torch.isin(individuals.to(cand.device), cand).all():
        raise ValueError("every image's individual must be one of the candidates")
    sims = torch.einsum("nd,cnd->nc", embeddings, centres[cand][:, labels].to(embeddings.dtype))  # (N, C)
    own = individuals.to(cand.device)[:, None] == cand[None, :]
    return sims[own], sims[~own]


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


@dataclasses.dataclass(frozen=True)
class Verification:
    """Same-digit verification of an embedding on a set of glyphs: ``same`` / ``different`` the pair
    cosines (:func:`verification_pairs` with labels), ``auc`` their ROC AUC, ``threshold`` the cosine at
    false-accept rate ``far`` and ``tar`` the share of same-individual pairs above it."""

    same: torch.Tensor
    different: torch.Tensor
    auc: float
    far: float
    threshold: float
    tar: float


@torch.no_grad()
def verification_summary(embed: nn.Module, images: torch.Tensor, individuals: torch.Tensor, labels: torch.Tensor,
                         *, far: float = 0.01) -> Verification:
    """Embed ``images`` ``(N, 1, R, R)`` and verify every same-digit pair: :class:`Verification`."""
    p = next(embed.parameters(), None)
    e = embed(images if p is None else images.to(p.device, p.dtype))
    same, diff = verification_pairs(e, individuals.to(e.device), labels.to(e.device))
    t = threshold_at_far(diff, far)
    return Verification(same.cpu(), diff.cpu(), roc_auc(same, diff), far, t, float((same > t).double().mean()))


@torch.no_grad()
def identity_matches(images: torch.Tensor, targets: torch.Tensor, *, digit_judge: nn.Module, embed: nn.Module,
                     centres: torch.Tensor, threshold: float, confidence: float = 0.9) -> torch.Tensor:
    """``(N,)`` bool: image ``n`` is a legible digit drawn by individual ``targets[n]``.

    Two independent tests, both by models that took no part in making the image: the ``digit_judge``
    (a classifier) reads some digit ``d`` with probability ``>= confidence``, and the judge embedding
    ``embed`` puts the image within ``threshold`` (a cosine, e.g. :func:`threshold_at_far` of
    :func:`centre_pairs` negatives) of ``centres[targets[n], d]``, the target's own glyphs of that digit
    (:func:`reference_centres`)."""
    from .metrics import classify

    if targets.shape != (len(images),) or targets.is_floating_point():
        raise ValueError(f"targets must be ({len(images)},) integers, got {tuple(targets.shape)} {targets.dtype}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold!r}")
    probs, _ = classify(digit_judge, images)
    p, digit = probs.max(1)
    param = next(embed.parameters(), None) if isinstance(embed, nn.Module) else None
    e = embed(images if param is None else images.to(param.device, param.dtype))   # read in the judge's dtype
    c = centres[targets.to(centres.device), digit.to(centres.device)].to(e.device, e.dtype)
    return ((p >= confidence).to(e.device) & ((e * c).sum(1) >= threshold)).cpu()


# --- the zoo kind "identity" (see dpmlatent.zoo) ------------------------------------------------

def make(entry, train) -> IdentityEmbedding:
    """A fresh embedding with ``entry.config``'s options, weights from ``entry.seed``."""
    torch.manual_seed(entry.seed)
    return IdentityEmbedding(IdentityConfig(**dict(entry.config)))


def fit(model: IdentityEmbedding, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_identity` on ``train`` (labels = individuals) from ``entry.seed``; the manifest gets
    the verification ROC AUC and the true-accept rate at a 1% false-accept rate on the *held-out*
    faces (:func:`dpmlatent.data.font_split`), over same-digit pairs."""
    from . import data

    result = train_identity(model, train.images, train.labels, steps=steps, seed=entry.seed, progress=progress)
    held = data.font_glyphs(data.font_split().held_out, 6, resolution=model.config.resolution, seed=1)
    v = verification_summary(model, held.images, held.individuals, held.labels, far=0.01)
    result.info["held_out_auc_same_digit"] = round(v.auc, 4)
    result.info["held_out_tar_at_far_1pct"] = round(v.tar, 4)
    return result


def save(model: IdentityEmbedding, folder) -> None:
    """``config.json`` + ``model.safetensors`` (:func:`dpmlatent.zoo.write_config_and_weights`)."""
    from .zoo import write_config_and_weights

    write_config_and_weights(model.config, model, folder)


def load(folder, *, device=None, dtype=None) -> IdentityEmbedding:
    from .zoo import read_config_and_weights

    return read_config_and_weights(folder, IdentityConfig, IdentityEmbedding).to(device=device, dtype=dtype).eval()
