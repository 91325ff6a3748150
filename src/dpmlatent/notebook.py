"""The one setup call at the top of every chapter, and a counter of network calls."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["pick_device", "setup", "count_calls"]


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


@contextlib.contextmanager
def count_calls(*modules: torch.nn.Module):
    """Count the forward calls of ``modules`` while the block runs (forward pre-hooks, removed on
    exit): yields a dict ``{index: calls}`` in the order the modules were given.

        with count_calls(unet) as calls:
            z = dpm_encode(unet, scheduler, x0, ...)
        calls[0]       # U-Net evaluations (each over the whole batch)
    """
    calls = {i: 0 for i in range(len(modules))}
    hooks = [m.register_forward_pre_hook(lambda mod, args, i=i: calls.__setitem__(i, calls[i] + 1))
             for i, m in enumerate(modules)]
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()
