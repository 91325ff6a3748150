"""Assignment: spherical interpolation between two Gaussian codes (chapter 1, section 4).

Implement ``slerp`` below, then grade it with ``make grade A=slerp``.
The reference the grader compares with is ``dpmlatent.latent.slerp``.
"""

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation:

        slerp(a, b, w) = sin((1 - w) theta) / sin(theta) * a + sin(w theta) / sin(theta) * b,
        theta = arccos(<a, b> / (|a| |b|)),

    falling back to the straight line ``(1 - w) a + w b`` when ``theta`` is (almost) 0.

    Args:
        a, b: ``(D,)`` flattened codes of equal size; anything else is a ``ValueError``.
        weights: ``(K,)`` interpolation weights in [0, 1].

    Returns:
        ``(K, D)`` codes, on the device and dtype of ``a``.
    """
    raise NotImplementedError("slerp is not implemented yet: write it in assignments/slerp.py "
                              "(the docstring gives the equation), then run `make grade A=slerp`")
