"""Assignment: one step of DPM-Encoder (chapter 2, section 1).

Implement ``encoder_noise`` below, then grade it with ``make grade A=encoder_noise``.
The reference the grader compares with is ``dpmlatent.encoder.encoder_noise``.
"""

import torch


def encoder_noise(scheduler, model_output: torch.Tensor, t, x: torch.Tensor, target: torch.Tensor,
                  eta: float) -> torch.Tensor:
    """The noise that makes the sampler's step from ``x = x_t`` land exactly on ``target``.

    The stochastic DDIM step is ``x_prev = mu_theta(x_t, t) + sigma_t * eps``; solve it for ``eps``:

        eps = (target - mu_theta(x_t, t)) / sigma_t.

    Read both terms off the scheduler, do not re-derive them: ``mu_theta`` is
    ``scheduler.step(model_output, t, x, eta=eta, variance_noise=zeros).prev_sample`` and ``sigma_t``
    is what the same step adds for ``variance_noise = ones`` with ``model_output = 0`` and ``x = 0``.

    Args:
        scheduler: a ``diffusers.DDIMScheduler`` with its timesteps set.
        model_output: ``(B, C, H, W)`` the U-Net's output at ``(x, t)``.
        t: the current timestep (an int or a 0-d tensor).
        x, target: ``(B, C, H, W)`` the state at ``t`` and the state the step must reach.
        eta: the sampler's eta, in (0, 1].

    Returns:
        ``(B, C, H, W)`` noise ``eps``.
    """
    raise NotImplementedError("encoder_noise is not implemented yet: write it in assignments/encoder_noise.py "
                              "(the docstring gives the equation), then run `make grade A=encoder_noise`")
