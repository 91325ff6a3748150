"""The one setup call at the top of every chapter."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["pick_device", "setup"]


def pick_device() -> torch.device:
    """The accelerator torch sees (CUDA on Colab, MPS on a Mac), else the CPU."""
    acc = torch.accelerator.current_accelerator(check_available=True)
    return acc if acc is not None else torch.device("cpu")


def setup(seed: int = 0, *, threads: int = 2, quiet: bool = False) -> torch.device:
    """Fix seeds and the CPU thread count (so a re-run reproduces every printed number),
    pick the device, print versions; return the device."""
    import diffusers

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(threads)
    device = pick_device()
    if not quiet:
        print(f"torch {torch.__version__.split('+')[0]}, diffusers {diffusers.__version__}, "
              f"device: {device.type}, CPU threads: {torch.get_num_threads()}")
    return device
