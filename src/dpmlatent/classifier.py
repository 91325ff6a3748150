"""A small CNN digit classifier: the book's metric (and, later, a guidance energy); and an MLP
variant (``arch="mlp"``) trained from another seed, the independent judge of results that the CNN
helped produce (``zoo.load("digit-judge")``).

Trained on handwritten + typeset digits (:mod:`dpmlatent.train`), it labels 8x8 images in
``[-1, 1]``. Its penultimate activations (:meth:`DigitClassifier.features`) are the
feature space of the Frechet distance in :mod:`dpmlatent.metrics`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fitting import TrainResult, check_steps, fit as fit_loop

__all__ = ["ClassifierConfig", "DigitClassifier", "ARCHS", "train_classifier", "accuracy",
           "make", "fit", "save", "load"]

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


def train_classifier(model, train, *, steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                     progress: bool = True) -> TrainResult:
    """Cross-entropy training of a classifier on ``train`` (:class:`~dpmlatent.data.ImageData`) with
    +-1 pixel shift augmentation (:func:`dpmlatent.data.random_shift`), AdamW and a cosine learning rate."""
    from .data import random_shift

    check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(len(train.labels), (batch_size,), generator=gen)
        x = random_shift(train.images[idx], gen).to(device)
        return F.cross_entropy(model(x), train.labels[idx].to(device))

    losses, history = fit_loop(loss_fn, opt, steps=steps, lr_schedule=sched, progress=progress)
    return TrainResult(model.eval(), losses, history)


@torch.no_grad()
def accuracy(model, test) -> float:
    """Fraction of ``test`` images whose arg-max label is right."""
    pred = model(test.images.to(next(model.parameters()).device)).argmax(1).cpu()
    return (pred == test.labels).float().mean().item()


# --- zoo hooks (kind "classifier") -------------------------------------------------------------

def make(entry, train) -> DigitClassifier:
    """A fresh classifier with one output per label of ``train`` and ``entry.config``'s options,
    weights from ``entry.seed``."""
    torch.manual_seed(entry.seed)
    return DigitClassifier(ClassifierConfig(num_classes=int(train.labels.max()) + 1, **dict(entry.config)))


def fit(model, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_classifier` from ``entry.seed``; the manifest gets the held-out accuracy."""
    from .train import training_data

    result = train_classifier(model, train, steps=steps, seed=entry.seed, progress=progress)
    result.info["test_accuracy"] = round(accuracy(result.model, training_data(entry.dataset, "test")), 4)
    return result


def save(model: DigitClassifier, folder: Path) -> None:
    """``config.json`` + ``model.safetensors`` (:func:`dpmlatent.zoo.write_config_and_weights`)."""
    from .zoo import write_config_and_weights

    write_config_and_weights(model.config, model, folder)


def load(folder: Path, *, device=None, dtype=None) -> DigitClassifier:
    from .zoo import read_config_and_weights

    return read_config_and_weights(folder, ClassifierConfig, DigitClassifier).to(device=device, dtype=dtype).eval()
