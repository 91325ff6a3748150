"""Sample-quality metrics measured with the zoo classifier.

* confident fraction: share of images the classifier labels with ``max_y p(y|x) >= 0.9``;
* class histogram: share of each arg-max label (mode coverage);
* Frechet distance (Heusel et al. 2017) between Gaussians fitted to classifier features:
  ``FD = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .sampling import sample

__all__ = ["frechet_distance", "classify", "QualityRow", "quality_row", "model_quality", "format_table"]


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``(N_a, D)``, ``(N_b, D)``."""
    from scipy import linalg

    if feats_a.ndim != 2 or feats_b.ndim != 2 or feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError("feats_a and feats_b must be (N, D) with the same D, got "
                         f"{tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    if min(len(feats_a), len(feats_b)) < 2:
        raise ValueError("each feature set needs at least 2 rows")
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real  # sqrtm returns tiny imaginary parts from round-off
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2.0 * covmean))


@torch.no_grad()
def classify(classifier, images: torch.Tensor, *, batch_size: int = 512):
    """Return ``(probs (N, K), features (N, D))`` of ``images`` under ``classifier``."""
    device = next(classifier.parameters()).device
    probs, feats = [], []
    for chunk in images.split(batch_size):
        f = classifier.features(chunk.to(device))
        probs.append(classifier.head(f).softmax(-1).cpu())
        feats.append(f.cpu())
    return torch.cat(probs), torch.cat(feats)


@dataclasses.dataclass
class QualityRow:
    """One line of the zoo quality table."""

    model: str
    confident: float                 # fraction with max p >= threshold
    class_fractions: list[float]     # arg-max label histogram, sums to 1
    frechet: float                   # FD to the held-out real images

    @property
    def min_class(self) -> float:
        return min(self.class_fractions)

    @property
    def max_class(self) -> float:
        return max(self.class_fractions)


def quality_row(name: str, images: torch.Tensor, classifier, real: torch.Tensor, *,
                threshold: float = 0.9) -> QualityRow:
    """Measure ``images`` ``(N, 1, 8, 8)`` against held-out ``real`` images."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    probs, feats = classify(classifier, images)
    _, real_feats = classify(classifier, real)
    k = probs.shape[1]
    hist = torch.bincount(probs.argmax(1), minlength=k).double() / len(probs)
    return QualityRow(name, (probs.max(1).values >= threshold).double().mean().item(),
                      hist.tolist(), frechet_distance(feats, real_feats))


def model_quality(name: str, pipe, classifier, real: torch.Tensor, *, num_samples: int = 512,
                  num_inference_steps: int = 50, seed: int = 0, progress: bool = True) -> QualityRow:
    """Sample ``num_samples`` images with 50-step DDIM (eta=0) and measure them."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(seed)
    images = sample(pipe.unet, scheduler, num_samples, num_inference_steps=num_inference_steps,
                    generator=gen, progress=progress)
    return quality_row(name, images, classifier, real)


def format_table(rows: list[QualityRow]) -> str:
    """A fixed-width text table: confident fraction, min/max class share, FD."""
    lines = [f"{'model':<28} {'p>=0.9':>7} {'min cls':>8} {'max cls':>8} {'FD':>8}"]
    for r in rows:
        lines.append(f"{r.model:<28} {r.confident:>7.3f} {r.min_class:>8.3f} "
                     f"{r.max_class:>8.3f} {r.frechet:>8.2f}")
    return "\n".join(lines)
