"""A small CNN digit classifier: the book's metric (and, later, a guidance energy); and an MLP
variant (``arch="mlp"``) trained from another seed, the independent judge of results that the CNN
helped produce (``zoo.load("digit-judge")``).

Trained on handwritten + typeset digits (:mod:`dpmlatent.train`), it labels 8x8 images in
``[-1, 1]``. Its penultimate activations (:meth:`DigitClassifier.features`) are the
feature space of the Frechet distance in :mod:`dpmlatent.metrics`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["ClassifierConfig", "DigitClassifier", "ARCHS"]

#: Classifier architectures: a small CNN (the metric and energy) and a pixel MLP (an independent judge).
ARCHS = ("cnn", "mlp")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of :class:`DigitClassifier` (stored as ``config.json``)."""

    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128
    dropout: float = 0.2
    arch: str = "cnn"      # "cnn" (three convolutions) or "mlp" (pixels -> width * 8 -> feature_dim)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")


class DigitClassifier(nn.Module):
    """``(B, 1, 8, 8)`` in ``[-1, 1]`` -> ``(B, num_classes)`` logits."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.body = self._mlp(config) if config.arch == "mlp" else nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GELU(),           # (B, w, 8, 8)
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU(),       # (B, 2w, 8, 8)
            nn.MaxPool2d(2),                                    # (B, 2w, 4, 4)
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GELU(),   # (B, 4w, 4, 4)
            nn.MaxPool2d(2),                                    # (B, 4w, 2, 2)
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(16 * w, config.feature_dim), nn.GELU(),   # (B, feature_dim)
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    @staticmethod
    def _mlp(config: ClassifierConfig) -> nn.Sequential:
        w = config.width
        return nn.Sequential(
            nn.Flatten(),                                        # (B, 64)
            nn.Linear(64, 8 * w), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(8 * w, config.feature_dim), nn.GELU(),     # (B, feature_dim)
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x must have shape (B, 1, 8, 8), got {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(B, feature_dim)``."""
        self._check(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
