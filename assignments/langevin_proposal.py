"""Assignment: the Langevin update behind unified guidance (chapter 6, section 2).

Implement ``langevin_proposal`` below, then grade it with ``make grade A=langevin_proposal``.
The reference the grader compares with is ``dpmlatent.guidance.langevin_proposal``.
"""

import torch


def langevin_proposal(z: torch.Tensor, grad: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One step of unadjusted Langevin dynamics for ``p(z) ∝ exp(-U(z))``:

        z' = z - (delta / 2) * grad U(z) + sqrt(delta) * n,    n ~ N(0, I).

    Args:
        z: ``(B, D)`` current codes.
        grad: ``(B, D)`` the energy's gradient ``∇U(z)``.
        step_size: ``delta`` > 0.
        noise: ``(B, D)`` the standard normal draw ``n``.

    Returns:
        ``(B, D)`` the proposal ``z'``.
    """
    raise NotImplementedError("langevin_proposal is not implemented yet: write it in assignments/langevin_proposal.py "
                              "(the docstring gives the equation), then run `make grade A=langevin_proposal`")
