"""h-space: the U-Net bottleneck of a frozen diffusion model as a semantic latent space
(Kwon, Jeong & Uh 2023, "Diffusion models already have a semantic latent space", Asyrp).

``h_t`` is the output of ``unet.mid_block`` at step ``t`` (for the zoo's 8x8 models a
``(B, 64, 2, 2)`` tensor). Shifting it, ``h_t -> h_t + dh_t``, changes the noise prediction
``eps_theta(x_t | dh_t)``. A DDIM-type step splits into the predicted clean image ``P_t`` and the
direction back to ``x_t``, ``D_t``:

    x_{t-1} = sqrt(abar_{t-1}) P_t(eps) + D_t(eps) + sigma_t z,   P_t(eps) = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).

If the shifted prediction enters both terms, the two changes largely cancel. **Asyrp's asymmetric
reverse process** feeds it to ``P_t`` only (Kwon et al., Eq. 6):

    x_{t-1} = sqrt(abar_{t-1}) P_t(eps_theta(x_t | dh_t)) + D_t(eps_theta(x_t)) + sigma_t z,

during the *editing interval* ``t >= t_edit``, and takes plain steps after it.

Every step here is the scheduler's own ``step`` (DDIM with any eta, or DDPM; every prediction
type, clipping and thresholding): :func:`asymmetric_step` takes the plain step and swaps its
clean-image term ``sqrt(abar_{t-1}) P_t`` for the shifted model's, both read off the scheduler's
step; with ``dh = 0`` it is exactly the plain step. Decoding a latent code of :mod:`dpmlatent.latent`
(:func:`asyrp_decode`) therefore edits a real image encoded by DPM-Encoder (stochastic, any eta)
or by DDIM inversion (Asyrp's own setting, eta = 0).

:func:`learn_delta_h` learns ``dh`` for a loss on the predicted clean images, e.g. the
directional CLIP loss of :func:`directional_clip_loss`, as Asyrp does: one UNet evaluation per
sample, at a random step of the editing interval (or, for per-step directions, at every step),
along the images' own trajectories.

Directions that need no text model (issue 21): :func:`pca_directions` (the principal axes of ``h_t``
over many images: global), :func:`jacobian_directions` (the singular vectors of ``dh_t / dx_t`` at one
image, exactly or by power iteration: image-specific, the pullback view of Park et al. 2023) and
:func:`mean_difference_direction` (mean ``h`` of one judged group minus another's: supervised);
:func:`principal_angles` compares subspaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from .encoder import perfect_model_output
from .latent import (LatentCode, _ddpm_noise, check_scheduler, denoiser_output, sampling_timesteps,
                     step_with_noise, unclipped_copy, without_clipping)

__all__ = ["bottleneck", "noised_bottleneck", "shift_bottleneck", "timestep_embedding", "module_shift",
           "predicted_x0", "step_weights", "asymmetric_step", "asymmetric_update", "edit_steps",
           "asyrp_decode", "record_trajectory", "frozen", "HDirection", "learn_delta_h",
           "directional_clip_loss", "pca_directions", "jacobian_directions", "principal_angles",
           "mean_difference_direction"]


def _mid_block(unet) -> torch.nn.Module:
    block = getattr(unet, "mid_block", None)
    if block is None:
        raise ValueError(f"{type(unet).__name__} has no mid_block: h-space is the output of the U-Net's middle block")
    return block


def bottleneck(unet, x: torch.Tensor, t, *, cond=None) -> torch.Tensor:
    """``h_t``: the output of ``unet.mid_block`` when the UNet is run at ``(x, t)``
    (``cond``: ``encoder_hidden_states`` of a conditional UNet). Shape e.g. ``(B, 64, 2, 2)``."""
    seen = []
    handle = _mid_block(unet).register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        denoiser_output(unet, x, t, cond=cond)
    finally:
        handle.remove()
    return seen[0]


def noised_bottleneck(unet, scheduler, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """``h_t`` of clean images: :func:`bottleneck` at ``x_t = scheduler.add_noise(x0, noise, t)`` (one
    training timestep ``t`` for the whole batch); the features of chapters 8 and 9's linear probes."""
    xt = scheduler.add_noise(x0, noise, torch.full((len(x0),), t))
    return bottleneck(unet, xt, torch.tensor(t))


@contextlib.contextmanager
def shift_bottleneck(unet, delta_h):
    """Inside the ``with`` block every UNet call uses ``h + delta_h`` in place of its bottleneck ``h``
    (``delta_h`` broadcasts against ``h``: ``(C, H, W)``, ``(1, C, H, W)`` or ``(B, C, H, W)``).

    ``delta_h`` may also be a callable ``h -> dh`` (an h-dependent shift, Asyrp's ``f_t(h_t)``:
    :func:`module_shift`); the UNet then uses ``h + delta_h(h)``."""
    if not isinstance(delta_h, torch.Tensor) and not callable(delta_h):
        raise TypeError(f"delta_h must be a tensor or a callable h -> delta_h, got {type(delta_h).__name__}")

    def hook(module, args, out):
        shift = delta_h if isinstance(delta_h, torch.Tensor) else delta_h(out)
        try:
            return out + shift.to(out.dtype)
        except RuntimeError as err:
            raise ValueError(f"delta_h of shape {tuple(shift.shape)} does not broadcast against the bottleneck "
                             f"h of shape {tuple(out.shape)}") from err
    handle = _mid_block(unet).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def predicted_x0(scheduler, model_output: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
    """``P_t``: the clean image the scheduler's step predicts from ``model_output`` at ``(x, t)``
    (its ``pred_original_sample``: every prediction type, clipped or thresholded as the step does)."""
    if isinstance(scheduler, DDIMScheduler):
        return scheduler.step(model_output, t, x, eta=0.0).pred_original_sample
    with _ddpm_noise(torch.zeros_like(x)):
        return scheduler.step(model_output, t, x).pred_original_sample


def _clean_part(scheduler, y: torch.Tensor, t, eta: float) -> torch.Tensor:
    """``sqrt(abar_prev) * y``: the step's clean-image term for a predicted clean image ``y``,
    computed by the scheduler's own step at ``x' = add_noise(y, 0, t)`` with the ideal output there
    (zero noise part, so the step returns its clean-image term only)."""
    zeros = torch.zeros_like(y)
    x = scheduler.add_noise(y, zeros, torch.full((len(y),), int(t), device=y.device, dtype=torch.long))
    return step_with_noise(scheduler, perfect_model_output(scheduler, y, x, t), t, x, zeros, eta)


def step_weights(scheduler, t, eta: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w_P, w_D)``: how a change of the model's output moves the step from ``t`` through its two
    terms, ``sqrt(abar_prev) P_t`` and ``D_t`` of the DDIM split (chapter 7, eq. ddim-split).

    For an epsilon model and DDIM these are ``w_P = -sqrt(abar_prev (1 - abar_t) / abar_t)`` and
    ``w_D = sqrt(1 - abar_prev - sigma_t^2)``; the symmetric step moves by ``(w_P + w_D) d_out``, the
    asymmetric (Asyrp) step by ``w_P d_out``. Both are read off the scheduler's own step (its slope in
    the model output at ``x = 0``, no noise, clipping off; ``w_P`` through :func:`predicted_x0` and
    the clean-image term), so every prediction type and schedule is covered. The scheduler must have
    its timesteps set. Returns two tensors like ``like``.
    """
    sched = without_clipping(scheduler)
    one, zero = torch.ones_like(like), torch.zeros_like(like)
    total = step_with_noise(sched, one, t, zero, zero, eta) - step_with_noise(sched, zero, t, zero, zero, eta)
    w_p = (_clean_part(sched, predicted_x0(sched, one, t, zero), t, eta)
           - _clean_part(sched, predicted_x0(sched, zero, t, zero), t, eta))
    return w_p, total - w_p


def asymmetric_step(unet, scheduler, x: torch.Tensor, t, delta_h: torch.Tensor | None, noise: torch.Tensor, *,
                    eta: float, cond=None, asymmetric: bool = True, space: str = "h") -> torch.Tensor:
    """One step of Asyrp's asymmetric reverse process (see the module docstring):

        x_{t-1} = step(eps, t, x) + sqrt(abar_prev) * (P_edit - P),

    the scheduler's plain step with its clean-image term ``sqrt(abar_prev) P_t`` swapped for the
    shifted model's ``sqrt(abar_prev) P_edit``; the direction term and the injected noise stay those
    of the plain prediction. ``P``, ``P_edit``: :func:`predicted_x0` (clipped or thresholded as the
    scheduler does); ``sqrt(abar_prev) * P`` is taken from the scheduler's own step as well. With
    ``delta_h=None`` or zero this is exactly the plain step.

    Args:
        x: ``(B, C, H, W)`` state at ``t``; noise: like ``x`` (ignored where ``sigma_t = 0``).
        delta_h: the shift of the bottleneck (broadcasts against ``h``), or None.
        eta: the sampler's eta (0: DDIM; 1 with a ``DDPMScheduler``).
        asymmetric: False takes the whole step with the shifted model (both terms: the
            symmetric baseline that Asyrp argues against).
        space: ``"h"`` shifts the bottleneck; ``"eps"`` adds ``delta_h`` (a tensor like ``x``, or
            broadcasting against it) to the model's output itself, the baseline of Asyrp's robustness
            experiment (the same step, the shift made in the output space instead of h-space).
    """
    if space not in ("h", "eps"):
        raise ValueError(f"space must be 'h' or 'eps', got {space!r}")
    if space == "eps" and delta_h is not None and not isinstance(delta_h, torch.Tensor):
        raise TypeError(f"an 'eps' shift must be a tensor, got {type(delta_h).__name__}")
    model_in = scheduler.scale_model_input(x, t)

    def shifted_output(out=None):
        if space == "eps":
            return (denoiser_output(unet, model_in, t, cond=cond) if out is None else out) + delta_h.to(x.dtype)
        with shift_bottleneck(unet, delta_h):
            return denoiser_output(unet, model_in, t, cond=cond)

    if not asymmetric and delta_h is not None:
        return step_with_noise(scheduler, shifted_output(), t, x, noise, eta)
    out = denoiser_output(unet, model_in, t, cond=cond)
    plain = step_with_noise(scheduler, out, t, x, noise, eta)
    if delta_h is None:
        return plain
    return asymmetric_update(scheduler, out, shifted_output(out), t, x, noise, eta, plain=plain)


def asymmetric_update(scheduler, model_output: torch.Tensor, edited_output: torch.Tensor, t, x: torch.Tensor,
                      noise: torch.Tensor, eta: float, *, plain: torch.Tensor | None = None) -> torch.Tensor:
    """Asyrp's asymmetric step from the two model outputs (the part of :func:`asymmetric_step` after the
    U-Net): the plain step with its clean-image term swapped for the edited one,

        x_{t-1} = sqrt(abar_prev) P_t(eps_edit) + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t * noise
                = step(eps, t, x) + sqrt(abar_prev) (P_t(eps_edit) - P_t(eps)),

    ``P_t(e) = (x_t - sqrt(1 - abar_t) e) / sqrt(abar_t)`` for an epsilon model (in general
    :func:`predicted_x0`, clipped as the scheduler does). ``model_output`` (``eps``, the plain
    prediction), ``edited_output`` (``eps_edit``, the shifted model's), ``x`` (``x_t``) and ``noise``:
    ``(B, C, H, W)``; ``plain``: the plain step if already computed. Returns a tensor like ``x``.
    """
    if plain is None:
        plain = step_with_noise(scheduler, model_output, t, x, noise, eta)
    x0, x0_edit = predicted_x0(scheduler, model_output, t, x), predicted_x0(scheduler, edited_output, t, x)
    return plain + _clean_part(scheduler, x0_edit, t, eta) - _clean_part(scheduler, x0, t, eta)


def edit_steps(timesteps: torch.Tensor, t_edit: int) -> int:
    """How many of the sampler's ``timesteps`` (descending) lie in the editing interval ``t >= t_edit``."""
    if isinstance(t_edit, bool) or not isinstance(t_edit, int) or t_edit < 0:
        raise ValueError(f"t_edit must be a non-negative integer timestep, got {t_edit!r}")
    n = int((timesteps >= t_edit).sum())
    if n == 0:
        raise ValueError(f"t_edit={t_edit} is above every timestep of the sampler (the largest is "
                         f"{int(timesteps.max())}): no step would be edited")
    return n


def timestep_embedding(unet, t, like: torch.Tensor) -> torch.Tensor:
    """The UNet's own embedding of timestep ``t``, ``unet.time_embedding(unet.time_proj(t))``: ``(1, D)``
    on ``like``'s device, in the UNet's dtype (what its resnet blocks receive; Asyrp's ``temb``)."""
    dtype = next(unet.parameters()).dtype
    t = torch.as_tensor(t, device=like.device).reshape(1)
    return unet.time_embedding(unet.time_proj(t).to(dtype))


def module_shift(unet, shift: torch.nn.Module, t, *, scale: float = 1.0) -> Callable[[torch.Tensor], torch.Tensor]:
    """``h -> scale * shift(h, temb_t)``: an h-space shift *module* at timestep ``t`` as the callable
    that :func:`shift_bottleneck` takes. ``shift(h, temb)`` returns ``dh`` like ``h``, given ``h``
    ``(B, C, H, W)`` and the UNet's timestep embedding ``temb`` ``(1, D)`` (:func:`timestep_embedding`):
    Asyrp's implicit function ``f_t`` (:class:`dpmlatent.asyrp.DeltaBlock`) or a constant
    (:class:`dpmlatent.asyrp.ConstantShift`)."""
    if not isinstance(shift, torch.nn.Module):
        raise TypeError(f"shift must be a torch.nn.Module taking (h, temb), got {type(shift).__name__}")

    def f(h: torch.Tensor) -> torch.Tensor:
        return scale * shift(h, timestep_embedding(unet, t, h))
    return f


def _per_step(delta_h, n_edit: int) -> list:
    if isinstance(delta_h, (torch.Tensor, torch.nn.Module)):      # one shift (or shift module) for every step
        return [delta_h] * n_edit
    if isinstance(delta_h, (list, tuple)) and all(isinstance(d, torch.Tensor) for d in delta_h):
        if len(delta_h) != n_edit:
            raise ValueError(f"delta_h holds {len(delta_h)} per-step shifts for an editing interval of {n_edit} steps")
        return list(delta_h)
    raise TypeError("delta_h must be a tensor (one shift for every edited step), a list of tensors (one per step) "
                    f"or an h-space shift module (dpmlatent.asyrp.DeltaBlock), got {type(delta_h).__name__}")


def asyrp_decode(unet, scheduler, z: LatentCode, delta_h, *, t_edit: int, eta: float, scale: float = 1.0,
                 asymmetric: bool = True, cond=None, t_boost: int | None = None,
                 generator: torch.Generator | None = None, space: str = "h", progress: bool = False) -> torch.Tensor:
    """Decode the latent code ``z`` with ``h -> h + scale * delta_h`` during the editing interval
    ``t >= t_edit`` (asymmetric steps, :func:`asymmetric_step`) and plain steps after it.

    With ``scale = 0`` (and no ``t_boost``) this is :func:`dpmlatent.latent.decode` (the code's own
    image). ``z`` comes from :func:`dpmlatent.encoder.dpm_encode` (stochastic, the same ``eta``) or
    :func:`dpmlatent.encoder.ddim_invert` (``eta = 0``), or :func:`dpmlatent.latent.sample_latent`.

    Args:
        delta_h: one tensor for every edited step, a list of tensors (one per edited step), or an
            h-space shift module ``shift(h, temb)`` (Asyrp's ``f_t``, :class:`dpmlatent.asyrp.DeltaBlock`),
            evaluated at every edited step on that step's ``h`` and timestep.
        t_edit: the smallest timestep that is edited (Asyrp's editing interval ``[T, t_edit]``).
        scale: multiplies the shift (Asyrp's linearity: negative scales edit the other way).
        asymmetric: False shifts the model for the whole step (the symmetric baseline).
        t_boost: Asyrp's quality boosting: every step from a timestep ``t < t_boost`` is stochastic
            (DDIM with ``eta = 1``, fresh noise from ``generator``) in place of ``z``'s own step.
            Needs a ``DDIMScheduler``; None (default): no boosting.
        generator: the CPU generator of the boosting noise (drawn in float64, the same on every CPU).
        space: ``"h"`` (default) or ``"eps"``: ``delta_h`` is added to the model's output instead of
            the bottleneck (a tensor like the images; :func:`asymmetric_step`).
    """
    check_scheduler(scheduler, eta)
    if space not in ("h", "eps"):
        raise ValueError(f"space must be 'h' or 'eps', got {space!r}")
    if t_boost is not None:
        if isinstance(t_boost, bool) or not isinstance(t_boost, int) or t_boost < 0:
            raise ValueError(f"t_boost must be a non-negative integer timestep or None, got {t_boost!r}")
        if not isinstance(scheduler, DDIMScheduler):
            raise ValueError("t_boost needs a DDIMScheduler (its eta = 1 steps); a DDPMScheduler is stochastic already")
    timesteps = sampling_timesteps(scheduler, z.num_inference_steps)
    if not torch.equal(timesteps[len(timesteps) - len(z.timesteps):].cpu(), z.timesteps.cpu()):
        raise ValueError("z.timesteps do not match this scheduler's timesteps: was z made with another scheduler?")
    shifts = _per_step(delta_h, edit_steps(z.timesteps, t_edit))
    x = z.x_start
    for i, (t, noise) in enumerate(tqdm(list(zip(z.timesteps, z.noises)), desc="asyrp", disable=not progress)):
        dh = None
        if i < len(shifts) and scale != 0:
            dh = module_shift(unet, shifts[i], t, scale=scale) if isinstance(shifts[i], torch.nn.Module) \
                else scale * shifts[i]
        step_eta = eta
        if t_boost is not None and int(t) < t_boost:
            step_eta = 1.0
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)
        x = asymmetric_step(unet, scheduler, x, t, dh, noise, eta=step_eta, cond=cond, asymmetric=asymmetric,
                            space=space)
    return x


class _Enough(Exception):
    """Raised by :func:`record_trajectory`'s callback once it has every state it was asked for."""


@torch.no_grad()
def record_trajectory(unet, scheduler, z: LatentCode, *, eta: float, cond=None,
                      num_states: int | None = None) -> torch.Tensor:
    """The states ``x_t`` that decoding ``z`` passes through, one per timestep *before* its step:
    ``(S, B, C, H, W)`` for ``S = len(z.timesteps)`` (the training data of :func:`learn_delta_h`), or
    only the first ``S = num_states`` (``1 <= num_states <= len(z.timesteps)``; decoding stops there:
    the states of an editing interval cost its steps only)."""
    from .latent import decode

    total = len(z.timesteps)
    if num_states is None:
        num_states = total
    if isinstance(num_states, bool) or not isinstance(num_states, int) or not 1 <= num_states <= total:
        raise ValueError(f"num_states must be an integer in [1, {total}] or None, got {num_states!r}")
    states = [z.x_start]

    def keep(i, t, x):
        states.append(x)
        if len(states) >= num_states:
            raise _Enough

    if num_states > 1:
        try:
            decode(unet, scheduler, z, eta=eta, cond=cond, callback=keep)
        except _Enough:
            pass
    return torch.stack(states[:num_states])


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Inside the ``with`` block no parameter of ``module`` records gradients; afterwards the ones that
    did are trainable again (learning a shift of a frozen UNet's bottleneck)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p in trainable:
            p.requires_grad_(True)


@dataclasses.dataclass
class HDirection:
    """A learned h-space edit: ``delta_h`` (one tensor, or one per edited step), the editing
    interval's ``t_edit`` and sampler length it was learned for, and the training losses."""

    delta_h: torch.Tensor | list[torch.Tensor]
    t_edit: int
    num_inference_steps: int
    losses: list[float]


def learn_delta_h(unet, scheduler, trajectories: torch.Tensor, timesteps: torch.Tensor, loss_fn: Callable, *,
                  t_edit: int, num_inference_steps: int, per_step: bool = False, iterations: int = 300,
                  batch_size: int = 16, lr: float = 0.05, init_std: float = 0.05,
                  generator: torch.Generator | None = None, progress: bool = True) -> HDirection:
    """Learn ``delta_h`` for ``loss_fn`` on the predicted clean images (Asyrp's training, with a
    direction per step or one global direction; the frozen UNet is not changed).

    Each iteration draws ``batch_size`` images and one step ``t >= t_edit`` of their recorded
    trajectories, predicts the clean image with and without the shift (``P_edit``, ``P``;
    :func:`predicted_x0` of a copy of the scheduler without clipping or thresholding, whose
    gradients would vanish on saturated pixels) and takes an Adam step on ``loss_fn(P_edit, P).mean()``.
    With ``per_step=True`` every iteration does this at *every* step of the interval, each step's
    ``delta_h[k]`` on its own ``batch_size`` images (the losses summed, one Adam step), so each
    per-step direction is trained as long as a global one: ``iterations`` updates from
    ``batch_size`` images each (every iteration is one UNet call on ``n_edit * batch_size`` images). The
    unshifted ``P`` of every recorded state in the interval is computed once, before the first
    iteration (it costs the memory of those states once more).

    Args:
        trajectories: ``(S, N, C, H, W)``: the states ``x_t`` of ``N`` images at the sampler's
            ``S`` timesteps, e.g. recorded with ``decode(..., callback=...)`` from their codes.
        timesteps: the ``S`` timesteps (descending) of those states.
        loss_fn: ``loss_fn(p_edit, p) -> (B,)``, e.g. :func:`directional_clip_loss`.
        per_step: one ``delta_h`` per edited step (Asyrp's ``dh_t``) instead of one for all, each
            trained at every iteration (see above).
        init_std: ``delta_h`` starts at ``N(0, init_std^2)`` drawn from ``generator`` (a CPU
            generator; not at 0, where the directional loss has no gradient direction).
    """
    if trajectories.ndim != 5 or len(trajectories) != len(timesteps):
        raise ValueError(f"trajectories must be (S, N, C, H, W) with S = len(timesteps) = {len(timesteps)}, "
                         f"got {tuple(trajectories.shape)}")
    for name, v in (("iterations", iterations), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std}")
    n_edit = edit_steps(timesteps, t_edit)
    # The loss reads the *unclipped* prediction: through the scheduler's clipping (clip_sample,
    # thresholding) the gradient of every saturated pixel is zero, and the background of a digit
    # is saturated, so no shift could learn to add ink there.
    scheduler = unclipped_copy(scheduler, num_inference_steps)     # the step's own schedule
    h = bottleneck(unet, trajectories[0, :1], timesteps[0])
    # A small random start: at delta = 0 the directional loss's cosine has no direction (its gradient
    # blows up), and from an exact zero every element of delta moves in lockstep.
    # Drawn in float64 and then cast: float32 torch.randn differs in its last bits between CPU
    # kernels (AVX2, AVX-512, scalar), float64 does not, so the start is the same on every machine.
    shape = (n_edit if per_step else 1, *h.shape[1:])
    start = init_std * torch.randn(shape, generator=generator, dtype=torch.float64)
    delta = start.to(device=h.device, dtype=h.dtype).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    losses = []          # per iteration: the loss (with per_step, the mean over the steps' losses)
    with frozen(unet):                                              # gradients reach delta only
        _train(unet, scheduler, trajectories, timesteps, loss_fn, delta, opt, losses, n_edit=n_edit, per_step=per_step,
               iterations=iterations, batch_size=batch_size, generator=generator, progress=progress)
    learned = delta.detach()
    return HDirection(list(learned) if per_step else learned[0], t_edit, num_inference_steps, losses)


def _train(unet, scheduler, trajectories, timesteps, loss_fn, delta, opt, losses, *, n_edit, per_step, iterations,
           batch_size, generator, progress) -> None:
    n_images = trajectories.shape[1]
    b = min(batch_size, n_images)

    def predict(x, t):
        return predicted_x0(scheduler, denoiser_output(unet, scheduler.scale_model_input(x, t), t), t, x)

    # The unshifted predictions P of every recorded state in the interval do not depend on delta:
    # computed once, in chunks of the training batch, not again at every iteration.
    with torch.no_grad():
        plain = torch.stack([torch.cat([predict(trajectories[k, i:i + b].to(delta.device), timesteps[k])
                                        for i in range(0, n_images, b)]) for k in range(n_edit)])
    for _ in tqdm(range(iterations), desc="learn delta_h", disable=not progress):
        opt.zero_grad()
        if per_step:
            # every step of the interval trains its own delta[k] on b images at every iteration:
            # each per-step direction gets as much training as the global one
            draws = [(k, k, torch.randint(n_images, (b,), generator=generator)) for k in range(n_edit)]
        else:                                 # (step, which direction, images): the one direction, a random step
            idx = torch.randint(n_images, (b,), generator=generator)
            draws = [(int(torch.randint(n_edit, (1,), generator=generator)), 0, idx)]
        # All drawn steps in one UNet call (per-sample timesteps and shifts): the loss is the sum of
        # the steps' mean losses, so the gradient is that of one backward pass per step, summed.
        steps = [k for k, _, _ in draws]
        x = torch.cat([trajectories[k, idx] for k, _, idx in draws]).to(delta.device)
        x_in = torch.cat([scheduler.scale_model_input(x[i * b:(i + 1) * b], timesteps[k]) for i, k in enumerate(steps)])
        t = torch.cat([timesteps[k].reshape(1).expand(b) for k in steps]).to(delta.device)
        shift = delta[[j for _, j, _ in draws]].repeat_interleave(b, dim=0)
        with shift_bottleneck(unet, shift):
            out = denoiser_output(unet, x_in, t)
        p_edit = torch.cat([predicted_x0(scheduler, out[i * b:(i + 1) * b], timesteps[k], x[i * b:(i + 1) * b])
                            for i, k in enumerate(steps)])
        plain_drawn = torch.cat([plain[k, idx.to(plain.device)] for k, _, idx in draws])
        per_draw = loss_fn(p_edit, plain_drawn).view(len(draws), b).mean(1)       # each step's mean loss
        per_draw.sum().backward()
        opt.step()
        losses.append(float(per_draw.detach().sum()) / len(draws))


def directional_clip_loss(model, tokenizer, source_prompts: str | Sequence[str], target_prompts: str | Sequence[str], *,
                          recon_weight: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Asyrp's loss (after StyleGAN-NADA): ``1 - cos(f(P_edit) - f(P), d_text) + recon_weight * mean|P_edit - P|``.

    ``f`` is an open_clip image embedding (:func:`dpmlatent.energies.clip_embed_images`), ``d_text``
    the mean over prompt pairs of ``f_txt(target) - f_txt(source)``: several pairs, e.g. "a
    handwritten three" -> "a bold handwritten three" for every digit, give one direction that
    does not depend on the digit. Returns ``loss(p_edit, p) -> (B,)``.
    """
    from .clip import clip_embed_images, clip_embed_text

    src = [source_prompts] if isinstance(source_prompts, str) else list(source_prompts)
    tgt = [target_prompts] if isinstance(target_prompts, str) else list(target_prompts)
    if len(src) != len(tgt) or not src:
        raise ValueError(f"source_prompts and target_prompts must pair up, got {len(src)} and {len(tgt)}")
    if not recon_weight >= 0:
        raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
    with torch.no_grad():
        direction = (clip_embed_text(model, tokenizer, tgt) - clip_embed_text(model, tokenizer, src)).mean(0)

    def loss(p_edit: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        d_img = clip_embed_images(model, p_edit) - clip_embed_images(model, p)
        cos = F.cosine_similarity(d_img, direction.to(d_img.dtype).expand_as(d_img), dim=-1, eps=1e-8)
        return 1 - cos + recon_weight * (p_edit - p).abs().flatten(1).mean(1)
    return loss


# --- directions without a text model (issue 21): PCA, the Jacobian's singular vectors, mean differences ---

def _check_timestep(scheduler, t) -> int:
    n = int(scheduler.config.num_train_timesteps)
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be one timestep, got a tensor of shape {tuple(t.shape)}")
        t = int(t)
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < n:
        raise ValueError(f"t must be an integer timestep in [0, {n}), got {t!r}")
    return t


def _check_k(k, most: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= most:
        raise ValueError(f"k must be an integer in [1, {most}], got {k!r}")
    return k


def _fix_signs(rows: torch.Tensor) -> torch.Tensor:
    """Flip each row of ``(k, D)`` so that its entry of largest magnitude is positive (a singular
    vector's sign is arbitrary; this makes it the same on every machine and for every method)."""
    idx = rows.abs().argmax(1, keepdim=True)
    return rows * torch.sign(rows.gather(1, idx))


def pca_directions(unet, scheduler, images: torch.Tensor, t, k: int, *, noise: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Global h-space directions: the ``k`` principal axes of ``h_t`` over many images.

    ``h_t`` is :func:`noised_bottleneck` of ``images`` ``(N, C, H, W)`` in ``[-1, 1]`` at training
    timestep ``t`` (``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise``, ``noise`` ``N(0, I)`` drawn from
    ``generator`` unless given); the directions are the top ``k`` right singular vectors of the centred
    ``(N, D)`` matrix of flattened ``h_t`` (largest variance first).

    Returns:
        ``(k, *h.shape[1:])``, e.g. ``(k, 64, 2, 2)``: orthonormal as flattened vectors, each signed so
        that its largest-magnitude entry is positive; on ``images``' device and dtype.
    """
    from diffusers.utils.torch_utils import randn_tensor

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) < 2:
        raise ValueError(f"images must be (N, C, H, W) with N >= 2, got {getattr(images, 'shape', type(images).__name__)}")
    t = _check_timestep(scheduler, t)
    if noise is None:
        noise = randn_tensor(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    elif noise.shape != images.shape:
        raise ValueError(f"noise must have the images' shape {tuple(images.shape)}, got {tuple(noise.shape)}")
    with torch.no_grad():
        h = noised_bottleneck(unet, scheduler, images, t, noise)
    flat = h.reshape(len(h), -1)
    _check_k(k, min(len(flat) - 1, flat.shape[1]))
    _, _, vh = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
    return _fix_signs(vh[:k]).reshape(k, *h.shape[1:])


@contextlib.contextmanager
def _math_attention(unet):
    """Run the UNet's attention with diffusers' plain ``AttnProcessor`` (matrix products) inside the
    block: PyTorch's fused CPU attention has no forward-mode derivative (``torch.func.jvp``), and the
    two Jacobian methods must differentiate the same function. The processors are restored after."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    saved = [(m, m.processor) for m in unet.modules() if isinstance(m, Attention)]
    try:
        for m, _ in saved:
            m.set_processor(AttnProcessor())
        yield
    finally:
        for m, p in saved:
            m.set_processor(p)


def _orthonormal_rows(q: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(q.T).Q.T


def jacobian_directions(unet, scheduler, x_t: torch.Tensor, t, k: int, *, method: str = "svd", space: str = "h",
                        iterations: int = 200, tol: float = 1e-10,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Image-specific directions: the top ``k`` singular vectors of the Jacobian ``J = dh_t / dx_t`` of
    the bottleneck with respect to the noisy image, at one ``x_t`` (the pullback view of Park et al.
    2023: a unit step ``v`` in x-space moves ``h`` by ``J v``, most along the first right singular
    vector, where ``h`` moves along the first left singular vector by ``sigma_1``).

    Args:
        x_t: one noisy image, ``(C, H, W)`` or ``(1, C, H, W)``, at training timestep ``t``.
        k: number of directions, ``1 <= k <= min(dim h, dim x)``.
        method: ``"svd"``: the exact Jacobian (``torch.func.jacrev``, ``dim h`` backward passes batched:
            fine at 8x8) and its SVD; ``"power"``: subspace (power) iteration with one
            Jacobian-vector and one vector-Jacobian product per direction and iteration, never forming
            ``J`` (what a large model needs), then a Rayleigh-Ritz rotation that orders the directions.
        space: ``"h"``: left singular vectors, directions in h-space ``(k, *h_shape)`` (for
            :func:`shift_bottleneck` / :func:`asyrp_decode`); ``"x"``: right singular vectors, directions
            of the noisy image ``(k, *x_shape)``.
        iterations, tol: ``"power"`` stops after ``iterations`` or once the subspace moves by less than
            ``tol`` (largest change of the projector).
        generator: the start of the power iteration.

    Returns:
        Orthonormal rows (as flattened vectors), largest singular value first, each signed so that its
        largest-magnitude entry is positive; on ``x_t``'s device and dtype.
    """
    if method not in ("svd", "power"):
        raise ValueError(f"method must be 'svd' or 'power', got {method!r}")
    if space not in ("h", "x"):
        raise ValueError(f"space must be 'h' or 'x', got {space!r}")
    if not isinstance(x_t, torch.Tensor) or not (x_t.ndim == 3 or (x_t.ndim == 4 and len(x_t) == 1)):
        raise ValueError(f"x_t must be one image, (C, H, W) or (1, C, H, W), got "
                         f"{getattr(x_t, 'shape', type(x_t).__name__)}")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    t = _check_timestep(scheduler, t)
    x = (x_t[0] if x_t.ndim == 4 else x_t).detach()
    tt = torch.tensor(t, device=x.device)

    def h_of(v):
        return bottleneck(unet, v[None], tt)[0]

    with _math_attention(unet), warnings.catch_warnings():
        # torch.func.jvp's first call inside torch scripts a helper and warns that torch.jit.script is
        # deprecated: torch's own business, not the reader's
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated")
        return _jacobian_rows(h_of, x, k, method=method, space=space, iterations=iterations, tol=tol,
                              generator=generator)


def _jacobian_rows(h_of, x, k, *, method, space, iterations, tol, generator):
    from diffusers.utils.torch_utils import randn_tensor

    with torch.no_grad():
        h_shape = h_of(x).shape
    dh, dx = h_shape.numel(), x.numel()
    k = _check_k(k, min(dh, dx))
    shape = h_shape if space == "h" else x.shape
    if method == "svd":
        jac = torch.func.jacrev(h_of)(x).reshape(dh, dx).detach()
        u, _, vh = torch.linalg.svd(jac, full_matrices=False)
        rows = u[:, :k].T if space == "h" else vh[:k]
        return _fix_signs(rows).reshape(k, *shape)

    _, vjp_fn = torch.func.vjp(h_of, x)
    jv = lambda v: torch.func.jvp(h_of, (x,), (v.reshape(x.shape),))[1].reshape(-1)      # J v
    jtu = lambda u: vjp_fn(u.reshape(h_shape))[0].reshape(-1)                           # J^T u
    gram = (lambda q: jv(jtu(q))) if space == "h" else (lambda q: jtu(jv(q)))           # J J^T or J^T J
    size = dh if space == "h" else dx
    q = _orthonormal_rows(randn_tensor((k, size), generator=generator, device=x.device, dtype=x.dtype))
    for _ in range(iterations):
        new = _orthonormal_rows(torch.stack([gram(row) for row in q]).detach())
        moved = (new.T @ new - q.T @ q).abs().max()
        q = new
        if moved < tol:
            break
    small = q @ torch.stack([gram(row) for row in q]).detach().T                            # Rayleigh-Ritz
    _, vecs = torch.linalg.eigh((small + small.T) / 2)
    rows = vecs.flip(1).T @ q
    return _fix_signs(rows).reshape(k, *shape)


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The principal angles (radians, ascending) between the subspaces spanned by the orthonormal rows
    of ``a`` ``(k, ...)`` and ``b`` ``(m, ...)`` (flattened): ``arccos`` of the singular values of
    ``A B^T``; ``min(k, m)`` angles, all 0 for the same subspace, pi/2 for orthogonal ones."""
    if a.ndim < 2 or b.ndim < 2 or a[0].numel() != b[0].numel():
        raise ValueError(f"a and b must be (k, ...) and (m, ...) directions of one size, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    s = torch.linalg.svdvals(a.reshape(len(a), -1).double() @ b.reshape(len(b), -1).double().T)
    return torch.arccos(s.clamp(-1.0, 1.0)).sort().values


def mean_difference_direction(h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:
    """A supervised h-space direction: ``mean(h_a) - mean(h_b)`` over the first axis, for bottlenecks of
    two groups a judge told apart (``(N_a, ...)`` and ``(N_b, ...)``, e.g. bold and thin digits at one
    timestep); :func:`dpmlatent.directions.mean_difference` of the two stacked. Shape ``h_a.shape[1:]``."""
    from .directions import mean_difference

    if not isinstance(h_a, torch.Tensor) or not isinstance(h_b, torch.Tensor) or h_a.ndim < 2 \
            or h_a.shape[1:] != h_b.shape[1:] or not len(h_a) or not len(h_b):
        raise ValueError(f"h_a and h_b must be non-empty (N, ...) tensors of one shape per sample, got "
                         f"{tuple(getattr(h_a, 'shape', ()))}, {tuple(getattr(h_b, 'shape', ()))}")
    both = torch.cat([h_a, h_b.to(h_a.device, h_a.dtype)])
    first = torch.arange(len(both), device=both.device) < len(h_a)
    return mean_difference(both, first.cpu(), ~first.cpu())
