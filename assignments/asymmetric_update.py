"""Assignment: the asymmetric reverse step of Asyrp (chapter 7, section 3).

Implement ``asymmetric_update`` below, then grade it with ``make grade A=asymmetric_update``.
The reference the grader compares with is ``dpmlatent.hspace.asymmetric_update``.
"""

import torch


def asymmetric_update(scheduler, model_output: torch.Tensor, edited_output: torch.Tensor, t, x: torch.Tensor,
                      noise: torch.Tensor, eta: float) -> torch.Tensor:
    """One step of the asymmetric reverse process from the plain and the edited model outputs:

        x_{t-1} = sqrt(abar_prev) * P_t(eps_edit) + sqrt(1 - abar_prev - sigma_t^2) * eps + sigma_t * noise,
        P_t(e)  = (x_t - sqrt(1 - abar_t) * e) / sqrt(abar_t),

    where ``eps = model_output`` (the frozen model's prediction), ``eps_edit = edited_output`` (the
    prediction with the shifted h-space), ``abar_t = scheduler.alphas_cumprod[t]``, ``abar_prev`` that
    of the previous timestep (``t - scheduler.config.num_train_timesteps // num_inference_steps``; when it
    is negative use ``scheduler.final_alpha_cumprod``) and
    ``sigma_t = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)``.
    Only the clean-image term takes the edit; the direction term and the noise keep the plain ``eps``.
    (The grader's scheduler predicts epsilon and does not clip.)

    Args:
        scheduler: a ``diffusers.DDIMScheduler`` with its timesteps set (``scheduler.num_inference_steps``).
        model_output, edited_output, x, noise: ``(B, C, H, W)``.
        t: the current timestep (an int or a 0-d tensor).
        eta: the sampler's eta in [0, 1].

    Returns:
        ``(B, C, H, W)`` the state at the previous timestep.
    """
    raise NotImplementedError("asymmetric_update is not implemented yet: write it in assignments/asymmetric_update.py "
                              "(the docstring gives the equation), then run `make grade A=asymmetric_update`")
