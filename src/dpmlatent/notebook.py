"""The one setup call at the top of every chapter, and a counter of network calls."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["pick_device", "setup", "count_calls", "version_note"]


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
    _explain_failed_checks()
    if not quiet:
        print(f"torch {torch.__version__.split('+')[0]}, diffusers {diffusers.__version__}, "
              f"device: {device.type}, CPU threads: {torch.get_num_threads()}")
    return device


def _pins() -> dict[str, str]:
    """``{package: version}`` that the book pins (this package's exact requirements)."""
    from importlib import metadata

    try:
        reqs = metadata.requires("dpmlatent") or []
    except metadata.PackageNotFoundError:      # run from a source tree without installing
        return {}
    return dict(r.split(";")[0].strip().split("==", 1) for r in reqs if "==" in r and "extra ==" not in r)


def version_note() -> str:
    """What to read after a failed claim check: the versions the book's claims were checked with, and
    those of this runtime that differ from them (pyproject.toml pins them; ``make install``)."""
    from importlib import metadata

    differ = []
    for name, pinned in _pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if have.split("+")[0] != pinned:
            differ.append(f"{name} {have} (checked with {pinned})")
    if differ:
        return ("A check of this chapter failed. The book's numbers and claims were checked with the versions "
                "pinned in pyproject.toml; this runtime differs: " + "; ".join(differ) + ". Other versions "
                "can change numbers slightly; install the pins (`make install`, or "
                "`pip install -r requirements-colab.txt` with the pinned numpy/scipy/scikit-learn on Colab) "
                "to reproduce the book exactly.")
    return ("A check of this chapter failed although every package has the version the book was checked with: "
            "please report it (with the traceback above) on the repository's issue tracker.")


def _explain_failed_checks() -> None:
    """In IPython, follow a failed ``assert`` (a claim check) with :func:`version_note`."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(self, etype, value, tb, tb_offset=None):
        structured = self.showtraceback((etype, value, tb), tb_offset=tb_offset)
        print(version_note())
        return structured

    shell.set_custom_exc((AssertionError,), handler)


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
