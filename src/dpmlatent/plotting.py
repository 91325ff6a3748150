"""Figures: image grids shown with nearest-neighbour upscaling (8x8 pixels stay crisp)."""

from __future__ import annotations

import math

import torch

__all__ = ["image_grid", "show_images"]


def image_grid(images: torch.Tensor, *, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in ``[-1, 1]`` into one ``(H', W')`` (C=1) or ``(H', W', 3)`` array in [0, 1]."""
    from torchvision.utils import make_grid

    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1)
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=0.5)  # (3, H', W')
    return grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)


def show_images(images: torch.Tensor, *, nrow: int | None = None, ax=None, title: str | None = None):
    """Plot an image grid on ``ax`` (a new figure if None); return the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        n = nrow or math.ceil(math.sqrt(len(images)))
        rows = math.ceil(len(images) / n)
        _, ax = plt.subplots(figsize=(0.45 * n + 0.5, 0.45 * rows + 0.5))
    ax.imshow(image_grid(images, nrow=nrow), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax
