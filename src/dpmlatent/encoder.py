"""DPM-Encoder: map a real image to a latent code that the sampler decodes back exactly.

Wu & De la Torre, Sec. 3.2. For the timesteps ``t_1 > ... > t_S`` of the sampler:

1. ``x_{t_1} ~ q(x_{t_1} | x_0)``                         (``scheduler.add_noise``);
2. for each step ``i``: ``x_{t_{i+1}} ~ q(x_{t_{i+1}} | x_{t_i}, x_0)``, the posterior *of the
   same sampler* — computed with the scheduler's own ``step`` fed the output a perfect
   model would give for this ``x_0`` — except that the last target is ``x_0`` itself;
3. ``eps_i = (x_{t_{i+1}} - mu_theta(x_{t_i}, t_i)) / sigma_{t_i}``, where ``mu_theta`` is the
   scheduler step with zero injected noise, i.e. the decoder's own computation.

Decoding the code replays step 3 forwards, so ``decode(dpm_encode(x0)) == x0`` up to
floating-point rounding.

**Deterministic last step.** In many diffusers configurations the last step has
``sigma = 0`` (``DDPMScheduler`` always; ``DDIMScheduler`` with ``set_alpha_to_one=True``, or
with a final timestep 0 whose "previous" alpha equals its own). There, no noise can steer
the last step, so instead of a posterior sample the encoder targets the ``x_{t_S}`` whose
deterministic step lands on ``x_0``: it solves ``mu_theta(x, t_S) = x_0`` image by image
(:mod:`dpmlatent.rootfinding`: the fixed-point iteration ``x <- x + (x_0 - mu_theta(x)) / g``,
``g`` the step's own gain on ``x``, then Newton's method on the real, clipped step, from the
posterior sample, the noise-free point and two random draws). Where it converges the code is
exact to rounding; where it does not it raises a ``ValueError`` that says why, instead of
returning an inexact code. Codes need not exist: ``prediction_type="sample"`` with
``alpha_prev = 1`` (the step ignores ``x``), or DDIM's final timestep 0 with
``set_alpha_to_one=False`` and clipping, where a clipped pixel no longer depends on its own
``x``. The noise stored for such a step is 0 (it has no effect).

:func:`edit_friendly_encode` is the *edit-friendly DDPM noise space* of Huberman-Spiegelglas,
Kulikov & Michaeli (CVPR 2024), the encoder of diffusers' LEdits++: the same noise formula and
decoder, but every ``x_{t_i}`` drawn independently from ``q(x_{t_i} | x0)`` instead of step 2's
chain. Both run through one loop (``_Targets``); they differ only in the targets.

:func:`ddim_invert` is the deterministic baseline (DDIM / ODE inversion), exact only in
the limit of many steps.
"""

from __future__ import annotations

import inspect
import math

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .rootfinding import solve_per_image
from .latent import (LatentCode, _check_unet_input, check_scheduler, decode, denoiser_output,
                     sampling_timesteps, step_with_noise, without_clipping)

# A step whose noise weight is below this is deterministic: DDPMScheduler clamps its variance at
# 1e-20 (sigma = 1e-10) where it should be 0, and dividing by it would give codes of size 1e10.
SIGMA_ZERO = 1e-8
# Random starts of the last-step solve after the posterior sample and the noise-free point.
RESTARTS = 2

__all__ = ["dpm_encode", "edit_friendly_encode", "encoder_function", "encoder_noise", "ENCODERS",
           "METHOD_ENCODER", "posterior_sample", "perfect_model_output", "step_sigma", "mismatch_gain",
           "last_step_share", "last_step_rms", "noise_statistics", "ideal_noise_variance", "ddim_invert",
           "ddim_decode"]


def perfect_model_output(scheduler, x0: torch.Tensor, xt: torch.Tensor, t) -> torch.Tensor:
    """What an ideal denoiser outputs at ``(x_t, t)`` if the clean image is ``x0``.

    ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``; returned as ``eps``, ``x0`` or
    ``v = scheduler.get_velocity(x0, eps, t)`` according to ``prediction_type``.
    """
    abar = scheduler.alphas_cumprod.to(device=xt.device)[t].to(xt.dtype)
    eps = (xt - abar.sqrt() * x0) / (1 - abar).sqrt()
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, eps, torch.full((len(x0),), int(t), device=x0.device))
    raise ValueError(f"prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")


def posterior_sample(scheduler, x0, xt, t, noise, eta: float) -> torch.Tensor:
    """``x_prev ~ q(x_prev | x_t, x0)`` of the sampler: its step fed the ideal output."""
    return step_with_noise(scheduler, perfect_model_output(scheduler, x0, xt, t), t, xt, noise, eta)


def step_sigma(scheduler, t, eta: float, like: torch.Tensor) -> torch.Tensor:
    """``sigma_t`` of the step from ``t``, read off the scheduler's step (bit-exact):
    with ``x = 0`` and model output ``0`` the step returns ``sigma_t * noise``."""
    zeros = torch.zeros_like(like)
    return step_with_noise(scheduler, zeros, t, zeros, torch.ones_like(like), eta)


def encoder_noise(scheduler, model_output: torch.Tensor, t, x: torch.Tensor, target: torch.Tensor,
                  eta: float, *, sigma: torch.Tensor | None = None) -> torch.Tensor:
    """DPM-Encoder's step: the noise that makes the sampler's step from ``x = x_t`` land on ``target``.

    The sampler computes ``x_prev = mu_theta(x_t, t) + sigma_t * eps``; solved for ``eps``,

        eps = (target - mu_theta(x_t, t)) / sigma_t,

    with ``mu_theta`` the scheduler's step fed ``model_output`` and zero noise, and ``sigma_t``
    :func:`step_sigma` (both read off the scheduler, so every schedule and prediction type is covered).
    ``x``, ``model_output``, ``target``: ``(B, C, H, W)``; returns a tensor like ``x``. ``sigma_t`` must
    be > 0 (``eta`` > 0 and not a deterministic last step); ``sigma``: :func:`step_sigma` if already computed
    (the encoders compute it once per step before their loop).
    """
    mu = step_with_noise(scheduler, model_output, t, x, torch.zeros_like(x), eta)
    return (target - mu) / (step_sigma(scheduler, t, eta, x) if sigma is None else sigma)


def _stochastic_noises(z: LatentCode) -> torch.Tensor:
    """``(S - 1, B, C, H, W)``: the code's noises without the last one, which belongs to a
    deterministic (``sigma = 0``) last step and is 0 (as :func:`dpm_encode` stores it)."""
    if not isinstance(z, LatentCode) or len(z.noises) < 2:
        raise ValueError(f"z must be a LatentCode with at least 2 steps, got {type(z).__name__}")
    if z.noises[-1].abs().max() != 0:
        raise ValueError("z's last noise must be 0 (a deterministic last step, as dpm_encode stores it); "
                         "this code's last step is stochastic")
    return z.noises[:-1]


def last_step_share(z: LatentCode) -> torch.Tensor:
    """``(B,)``: the share of each image's *excess* noise variance that sits in its last stochastic
    step (chapter 2): with ``v_i`` the variance over pixels of step ``i``'s noise, the excess is
    ``max(v_i - 1, 0)`` (a standard normal noise has ``v = 1``) and the share is
    ``excess_last / sum_i excess_i``, where "last stochastic" is the second-to-last noise (the
    code's last step must be deterministic, its noise 0); ``nan`` where there is no excess."""
    excess = (_stochastic_noises(z).flatten(2).var(2) - 1).clamp(min=0)
    return excess[-1] / excess.sum(0)


def last_step_rms(z: LatentCode) -> torch.Tensor:
    """``(B,)``: the root mean square over pixels of each image's last stochastic noise (1 for a
    standard normal draw; see :func:`last_step_share`)."""
    return _stochastic_noises(z)[-1].flatten(1).square().mean(1).sqrt()


def noise_statistics(z: LatentCode, x0: torch.Tensor, *, per_image: bool = False) -> dict[str, torch.Tensor]:
    """Per-step statistics of a code's noises, pooled over the batch and the pixels (to compare
    DPM-Encoder with the edit-friendly encoder). For a code of ``N(0, I)`` noises
    independent of the image: mean 0, variance 1, no correlation, and a small KS distance.

    Args:
        z: a code of ``S`` steps (``noises`` ``(S, B, C, H, W)``).
        x0: ``(B, C, H, W)`` the images it encodes.
        per_image: pool over each image's pixels only: every statistic gains a last dimension ``B``
            (for intervals over the images).

    Returns:
        float64 CPU tensors: ``"mean"``, ``"var"`` ``(S,)``; ``"lag1"`` ``(S - 1,)``, the Pearson
        correlation of step ``i``'s noise with step ``i + 1``'s, entry by entry; ``"image_corr"``
        ``(S,)``, the correlation of each step's noise with ``x0``; ``"sum_image_corr"`` ``(S,)``, the
        correlation with ``x0`` of the running sum ``eps_1 + ... + eps_i`` (noise that cancels between
        steps, e.g. with lag-1 correlation -1/2, drops out of the sum and leaves what the steps share
        with the image); ``"ks"`` and ``"ks_p"`` ``(S,)``,
        the Kolmogorov-Smirnov distance of the step's entries from ``N(0, 1)`` and its p-value (which
        treats the entries as independent: a guide, not a test, where pixels are correlated). A step
        whose noise is identically 0 (a deterministic last step) gets ``nan`` correlations.
    """
    from scipy import stats

    if not isinstance(z, LatentCode):
        raise TypeError(f"z must be a LatentCode, got {type(z).__name__}")
    if not isinstance(x0, torch.Tensor) or x0.shape != z.x_start.shape:
        raise ValueError(f"x0 must have the code's image shape {tuple(z.x_start.shape)}, "
                         f"got {tuple(getattr(x0, 'shape', ())) or type(x0).__name__}")
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be True or False, got {per_image!r}")
    groups = x0.shape[0] if per_image else 1
    n = z.noises.detach().double().cpu().reshape(z.noises.shape[0], groups, -1)      # (S, G, entries)
    img = x0.detach().double().cpu().reshape(1, groups, -1).expand_as(n)

    def corr(a, b):
        a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
        return (a * b).sum(-1) / (a.square().sum(-1) * b.square().sum(-1)).sqrt()

    ks = stats.kstest(n.numpy(), "norm", axis=-1)                                # every step (and image) at once
    out = {"mean": n.mean(-1), "var": n.var(-1), "lag1": corr(n[:-1], n[1:]), "image_corr": corr(n, img),
           "sum_image_corr": corr(n.cumsum(0), img),
           "ks": torch.as_tensor(ks.statistic, dtype=torch.float64).reshape(n.shape[:2]),
           "ks_p": torch.as_tensor(ks.pvalue, dtype=torch.float64).reshape(n.shape[:2])}
    return out if per_image else {k: v[:, 0] for k, v in out.items()}


def ideal_noise_variance(scheduler, timesteps: torch.Tensor, eta: float, *, encoder: str = "edit-friendly") -> torch.Tensor:
    """``(S,)`` float64: the variance of each step's encoded noise when the model is a *perfect*
    denoiser of the encoded image, read off the scheduler (what is intrinsic to the encoder, not to
    a model's errors).

    DPM-Encoder (``encoder="dpm"``): its targets are posterior samples, so every noise but the last is
    the fresh draw itself: variance 1. Edit-friendly: with ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n_t``
    drawn independently, ``mu(x_t) = c x0 + D n_t`` and the next target ``a x0 + B n_{t'}``, so
    ``eps = (B n_{t'} - D n_t) / sigma_t`` has variance ``(B^2 + D^2) / sigma_t^2``; for DDIM
    ``B^2 = 1 - abar_{t'}``, ``D^2 = 1 - abar_{t'} - sigma_t^2``, i.e. ``2 (1 - abar_{t'}) / sigma_t^2 - 1``,
    which grows like ``steps / eta^2``. For both encoders the last step's target is ``x0`` itself
    (``B = 0``, variance ``D^2 / sigma^2``). ``B``, ``D`` and ``sigma_t`` are read off
    ``scheduler.add_noise`` and its step with ideal outputs; ``nan`` where ``sigma_t = 0``.

    Args:
        scheduler: a ``DDIMScheduler`` or ``DDPMScheduler`` with its timesteps set to those the code
            ran (each step's previous timestep is read off the scheduler's current schedule).
        timesteps: ``(S,)`` the steps run (e.g. a code's ``timesteps``): the end of
            ``scheduler.timesteps`` (all of it at strength 1). eta: in (0, 1].

    Raises:
        ValueError: ``timesteps`` is not the end of the scheduler's current schedule (set it with
            ``scheduler.set_timesteps(code.num_inference_steps)`` first).
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    check_scheduler(scheduler, eta)
    current = getattr(scheduler, "timesteps", None)
    ts = torch.as_tensor(timesteps).reshape(-1).cpu().long()
    if current is None or len(ts) > len(current) or not torch.equal(current[len(current) - len(ts):].cpu().long(), ts):
        raise ValueError(f"timesteps {ts[:4].tolist()}... ({len(ts)} steps) are not the end of the scheduler's current "
                         f"schedule ({0 if current is None else len(current)} steps): call "
                         "scheduler.set_timesteps(code.num_inference_steps) first")
    one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    zero = torch.zeros_like(one)
    out = []
    for i, t in enumerate(timesteps):
        sigma = float(step_sigma(scheduler, t, eta, one))
        if sigma < SIGMA_ZERO:
            out.append(math.nan)
            continue
        last = i + 1 == len(timesteps)
        if encoder == "dpm" and not last:
            out.append(1.0)
            continue
        t1 = t.reshape(1)
        d = float(posterior_sample(scheduler, zero, scheduler.add_noise(zero, one, t1), t, zero, eta))   # mu per unit n_t
        b = 0.0 if last else float(scheduler.add_noise(zero, one, timesteps[i + 1].reshape(1)))
        out.append((b * b + d * d) / sigma ** 2)
    return torch.tensor(out, dtype=torch.float64)


def mismatch_gain(scheduler, t, eta: float, like: torch.Tensor) -> torch.Tensor:
    """``g_t = c_t / sigma_t``: how far one unit of x0-prediction error moves an encoded noise.

    The step from ``t`` is linear in the predicted clean image: its mean is ``c_t x0_hat + (terms
    in x_t)``. DPM-Encoder's target is the same step with the true ``x0`` and a fresh Gaussian
    noise, so the noise it stores is

        eps_t = eps_fresh + g_t (x0 - x0_hat(x_t)),      g_t = c_t / sigma_t,

    and ``Var(eps_t) = 1 + g_t^2 E[(x0 - x0_hat)^2]`` (``eps_fresh`` is independent of ``x_t``).
    ``c_t`` is read off the scheduler's own step (ideal outputs for ``x0 = 1`` and ``x0 = 0`` at
    ``x_t = 0``, no noise), ``sigma_t`` by :func:`step_sigma`; clipping off, so ``c_t`` is the
    slope of the unclipped step. Returns a tensor like ``like``; ``inf`` where ``sigma_t = 0``.
    """
    sched = without_clipping(scheduler)
    ones, zeros = torch.ones_like(like), torch.zeros_like(like)
    c = posterior_sample(sched, ones, zeros, t, zeros, eta) - posterior_sample(sched, zeros, zeros, t, zeros, eta)
    sigma = step_sigma(scheduler, t, eta, like)
    return torch.where(sigma.abs() < SIGMA_ZERO, torch.full_like(c, math.inf), c / sigma)


def _select(guidance: dict, idx: torch.Tensor) -> dict:
    """The conditioning of the images ``idx`` (``cond``/``uncond`` are per image)."""
    return {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in guidance.items()}


def _solve_last_step(unet, scheduler, t, x0, x, eta, guidance):
    """Find ``x`` with ``mu_theta(x, t) = x0`` for a deterministic (sigma = 0) last step.

    ``mu_theta(x, t) = a * clip(P(x)) + b * eps_hat(x)`` is the scheduler's step without noise.
    Solved image by image with :func:`dpmlatent.rootfinding.solve_per_image` on the real step
    (clipping included: where it is active the pixel's equation becomes an inequality, which
    Newton's minimum-norm step respects). Starts: the posterior sample ``x`` (so the code stays
    close to a typical one), then the noise-free point ``sqrt(abar_t) x0``, then fresh draws
    from ``q(x_t | x0)`` (a private generator, so the caller's random stream and the codes of
    solved images do not depend on how many were needed). Raises where none lands on ``x0``.
    """
    zeros = torch.zeros_like(x0)
    free = without_clipping(scheduler)
    gain = step_with_noise(free, zeros, t, torch.ones_like(x0), zeros, eta)  # d mu / d x at fixed output
    if gain.abs().min() < 1e-3:
        raise ValueError(
            f"the last step (t={int(t)}) is deterministic and does not depend on x_t "
            f"(prediction_type={scheduler.config.prediction_type!r}, gain {gain.abs().min():.2g}): no "
            "latent code reproduces x0 exactly. Use a scheduler whose last step is stochastic, e.g. "
            "DDIMScheduler(set_alpha_to_one=False, steps_offset=1) with eta > 0")

    def mu(x, idx):
        out = denoiser_output(unet, scheduler.scale_model_input(x, t), t, **_select(guidance, idx))
        return step_with_noise(scheduler, out, t, x, zeros[idx], eta)

    t_batch = t.reshape(1).to(x0.device)
    spare = torch.Generator(device="cpu").manual_seed(0)
    starts = [x, scheduler.add_noise(x0, zeros, t_batch)] + [
        scheduler.add_noise(x0, randn_tensor(x0.shape, generator=spare, device=x0.device, dtype=x0.dtype), t_batch)
        for _ in range(RESTARTS)]
    tol = 100 * torch.finfo(x0.dtype).eps
    x, err = solve_per_image(mu, x0, starts, gain=gain)
    if err.max() > tol:
        clipping = scheduler.config.get("clip_sample") or scheduler.config.get("thresholding")
        why = (f"it clips its prediction of x0 (clip_sample={scheduler.config.get('clip_sample')}, "
               f"thresholding={scheduler.config.get('thresholding')}), and a clipped pixel may not "
               "depend on its own x" if clipping else "the network's prediction may not reach x0")
        raise ValueError(
            f"no latent code found for image(s) {_first(err > tol)}: the last step (t={int(t)}) is "
            f"deterministic, and solving mu_theta(x, t) = x0 for x from {len(starts)} starts did not "
            f"converge (best miss {err.max().item():.2g}, tolerance {tol:.1g}). A code may not exist: {why}. "
            "Use clip_sample=False, more inference steps, or a scheduler whose last step is stochastic "
            "(e.g. DDIMScheduler(set_alpha_to_one=False, steps_offset=1))")
    return x


def _first(mask: torch.Tensor, k: int = 10) -> str:
    """The indices where ``mask`` is true, at most ``k`` of them, as text."""
    idx = torch.nonzero(mask).flatten().tolist()
    return str(idx[:k]) + (" ..." if len(idx) > k else "")


def _check_x0(unet, x0: torch.Tensor) -> None:
    _check_unet_input(unet, x0, "x0")
    if not torch.is_floating_point(x0):
        raise TypeError(f"x0 must be a floating-point tensor, got {x0.dtype}")
    lo, hi = x0.min().item(), x0.max().item()
    if lo < -1 - 1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"x0 must take values in [-1, 1] (images scaled as x / 127.5 - 1); got [{lo:.4g}, {hi:.4g}]")


ENCODERS = ("dpm", "edit-friendly")
# The editing and translation methods that run an exact encoder, and which one (edit.py, translation.py and
# edit_experiment.py read this; "cyclediffusion" is the paper's name for DPM-Encoder + decoding elsewhere).
METHOD_ENCODER = {"cyclediffusion": "dpm", "edit-friendly": "edit-friendly"}


class _Targets:
    """Where each step of an exact encoder must land (shared by :func:`dpm_encode`,
    :func:`edit_friendly_encode` and :func:`dpmlatent.edit.edit_latents`).

    Both encoders store ``eps_i = (x_{t_{i+1}} - mu_theta(x_{t_i}, t_i)) / sigma_i`` and let the
    decoder replay it; they differ only in the targets ``x_{t_{i+1}}``:

    * ``"dpm"`` (DPM-Encoder): ``x_{t_1} ~ q(x_{t_1} | x0)``, then each target a posterior sample
      ``q(x_{t_{i+1}} | x_{t_i}, x0)`` from the current state: one chain, drawn in step order;
    * ``"edit-friendly"`` (Huberman-Spiegelglas et al.): every ``x_{t_i} ~ q(x_{t_i} | x0)``
      *independently*, drawn before the loop from the smallest ``t`` to the largest, one batch-wide
      draw per timestep (the order of diffusers' ``LEditsPPPipelineStableDiffusion.invert``, so one
      generator gives both the same draws).

    The last target is ``x0``; where the last step is deterministic (``sigma = 0``) the target of
    the step before is solved so that the last step lands on ``x0`` (``_solve_last_step``, started
    from the drawn target) and the last noise is 0.
    """

    def __init__(self, scheme, unet, scheduler, x0, timesteps, eta, generator, guidance):
        if scheme not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {scheme!r}")
        self.scheme, self.unet, self.scheduler, self.x0 = scheme, unet, scheduler, x0
        self.timesteps, self.eta, self.guidance = timesteps, eta, guidance
        self.draw = lambda: randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)  # noqa: E731
        self.sigmas = [step_sigma(scheduler, t, eta, x0) for t in timesteps]
        if any((s.abs() < SIGMA_ZERO).any() for s in self.sigmas[:-1]):
            raise ValueError("an intermediate step of this scheduler has sigma = 0; only the last may")
        self.last_deterministic = bool((self.sigmas[-1].abs() < SIGMA_ZERO).all())
        if scheme == "edit-friendly":
            drawn = [scheduler.add_noise(x0, self.draw(), t.repeat(len(x0)).to(x0.device)) for t in timesteps.flip(0)]
            self.independent = drawn[::-1]                                  # x_{t_1}, ..., x_{t_S}

    def start(self) -> torch.Tensor:
        """``x_{t_1}``: a draw from ``q(x_{t_1} | x0)`` (solved if it is the only, deterministic step)."""
        t0 = self.timesteps[:1].repeat(len(self.x0)).to(self.x0.device)
        x = self.scheduler.add_noise(self.x0, self.draw(), t0) if self.scheme == "dpm" else self.independent[0]
        if self.last_deterministic and len(self.timesteps) == 1:
            x = _solve_last_step(self.unet, self.scheduler, self.timesteps[0], self.x0, x, self.eta, self.guidance)
        return x

    def goal(self, i: int, x: torch.Tensor) -> torch.Tensor | None:
        """The target of step ``i`` taken from ``x = x_{t_i}``; ``None`` for a deterministic last step
        (its noise is 0: ``x`` was steered so that it lands on ``x0``)."""
        last = len(self.timesteps) - 1
        if i == last:
            return None if self.last_deterministic else self.x0
        if self.scheme == "dpm":
            target = posterior_sample(self.scheduler, self.x0, x, self.timesteps[i], self.draw(), self.eta)
        else:
            target = self.independent[i + 1]
        if self.last_deterministic and i == last - 1:
            target = _solve_last_step(self.unet, self.scheduler, self.timesteps[-1], self.x0, target, self.eta,
                                      self.guidance)
        return target


def _exact_encode(scheme, unet, scheduler, x0, *, eta, num_inference_steps, strength, generator, cond, uncond,
                  guidance_scale, progress, desc):
    """The loop both exact encoders share: each step's target from :class:`_Targets`, its noise
    against the decoder's own ``mu_theta`` and the state the decoder will compute."""
    if not isinstance(eta, (int, float)) or isinstance(eta, bool):
        raise TypeError(f"eta must be a number in (0, 1], got {type(eta).__name__}")
    if eta == 0:
        raise ValueError("eta=0 is deterministic DDIM: it has no stochastic latent to encode into. "
                         "Use dpmlatent.encoder.ddim_invert for DDIM (ODE) inversion, or eta in (0, 1]")
    check_scheduler(scheduler, eta)
    _check_x0(unet, x0)
    timesteps = sampling_timesteps(scheduler, num_inference_steps, strength)
    guidance = dict(cond=cond, uncond=uncond, guidance_scale=guidance_scale)
    targets = _Targets(scheme, unet, scheduler, x0, timesteps, eta, generator, guidance)
    x = targets.start()
    x_start, noises, zeros = x, [], torch.zeros_like(x0)
    for i, t in enumerate(tqdm(timesteps, desc=desc, disable=not progress)):
        goal = targets.goal(i, x)
        if goal is None:
            noises.append(zeros)                      # no effect: x was chosen so that this step gives x0
            break
        out = denoiser_output(unet, scheduler.scale_model_input(x, t), t, **guidance)
        eps = encoder_noise(scheduler, out, t, x, goal, eta, sigma=targets.sigmas[i])
        noises.append(eps)
        x = step_with_noise(scheduler, out, t, x, eps, eta)   # what the decoder will compute
    return LatentCode(x_start, torch.stack(noises), timesteps, num_inference_steps)


@torch.no_grad()
def dpm_encode(unet, scheduler, x0: torch.Tensor, *, eta: float, num_inference_steps: int,
               strength: float = 1.0, generator: torch.Generator | None = None, cond=None,
               uncond=None, guidance_scale: float = 1.0, progress: bool = False) -> LatentCode:
    """DPM-Encoder: a latent code ``z`` with ``decode(unet, scheduler, z, eta=eta) == x0``.

    Args:
        unet: ``UNet2DModel`` or ``UNet2DConditionModel`` (with ``cond``).
        scheduler: ``DDIMScheduler`` (eta in (0, 1]) or ``DDPMScheduler`` (eta = 1).
        x0: ``(B, C, H, W)`` images in ``[-1, 1]``, on the UNet's device; float32 or float64.
        eta: stochasticity of the sampler, in (0, 1]; ``eta = 0`` has no stochastic latent.
        num_inference_steps: >= 1. strength: in (0, 1], the fraction of steps encoded
            (``x_start`` is then ``x_{t0}`` with ``t0`` the first timestep run).
        generator: for ``x_{t0} ~ q(x_{t0} | x0)`` and the posterior samples, drawn in step order.
        cond, uncond, guidance_scale: conditioning and classifier-free guidance, exactly as
            the decoder will use them.

    Returns:
        :class:`~dpmlatent.latent.LatentCode` on ``x0``'s device and dtype.

    Raises:
        ValueError: ``eta = 0`` (use :func:`ddim_invert`), x0 outside [-1, 1], wrong channels,
            bad strength/steps, or a deterministic last step that cannot reach ``x0``.
        TypeError: unsupported scheduler or non-float ``x0``.
    """
    return _exact_encode("dpm", unet, scheduler, x0, eta=eta, num_inference_steps=num_inference_steps,
                         strength=strength, generator=generator, cond=cond, uncond=uncond,
                         guidance_scale=guidance_scale, progress=progress, desc="dpm_encode")


@torch.no_grad()
def edit_friendly_encode(unet, scheduler, x0: torch.Tensor, *, eta: float = 1.0, num_inference_steps: int,
                         strength: float = 1.0, generator: torch.Generator | None = None, cond=None,
                         uncond=None, guidance_scale: float = 1.0, progress: bool = False) -> LatentCode:
    """The edit-friendly DDPM noise space (Huberman-Spiegelglas, Kulikov & Michaeli, CVPR 2024): a
    latent code with ``decode(unet, scheduler, z, eta=eta) == x0``, whose states are drawn
    *independently* from ``q(x_t | x0)`` instead of as one posterior chain (:func:`dpm_encode`).

    For the timesteps ``t_1 > ... > t_S``: ``x_{t_i} = sqrt(abar_{t_i}) x0 + sqrt(1 - abar_{t_i}) n_i``
    with independent ``n_i ~ N(0, I)`` (drawn from the smallest ``t`` to the largest, as diffusers'
    ``LEditsPPPipelineStableDiffusion.invert`` draws them), ``x_{t_{S+1}} = x0``, and

        ``eps_i = (x_{t_{i+1}} - mu_theta(x'_{t_i}, t_i)) / sigma_{t_i}``,   ``x'_{t_{i+1}} = mu_theta(x'_{t_i}) + sigma_{t_i} eps_i``,

    ``x'`` being the state the decoder computes (equal to ``x`` up to rounding, so the code decodes to
    ``x0`` exactly). Unlike DPM-Encoder's, these noises are not ``N(0, I)``: each must also carry the
    difference between two independent draws, so their variance exceeds 1 and neighbouring steps'
    noises are correlated. A deterministic last step (``sigma = 0``) is handled as in
    :func:`dpm_encode` (the step before is solved to land on ``x0``; the last noise is 0).

    Args:
        unet, scheduler, x0, num_inference_steps, strength, cond, uncond, guidance_scale,
            progress: as :func:`dpm_encode` (``x0`` ``(B, C, H, W)`` in ``[-1, 1]``, float32 or
            float64, on the UNet's device).
        eta: in (0, 1]; the paper and diffusers use 1 (DDPM), the default.
        generator: for the ``S`` independent draws of ``x_t``.

    Returns:
        :class:`~dpmlatent.latent.LatentCode` on ``x0``'s device and dtype.

    Raises:
        ValueError / TypeError: as :func:`dpm_encode`.
    """
    return _exact_encode("edit-friendly", unet, scheduler, x0, eta=eta, num_inference_steps=num_inference_steps,
                         strength=strength, generator=generator, cond=cond, uncond=uncond,
                         guidance_scale=guidance_scale, progress=progress, desc="edit_friendly_encode")


def encoder_function(name: str):
    """The exact encoder called ``name`` (one of :data:`ENCODERS`): :func:`dpm_encode` or
    :func:`edit_friendly_encode`."""
    if name not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {name!r}")
    return {"dpm": dpm_encode, "edit-friendly": edit_friendly_encode}[name]


@torch.no_grad()
def ddim_invert(unet, scheduler, x0: torch.Tensor, *, num_inference_steps: int, strength: float = 1.0,
                cond=None, uncond=None, guidance_scale: float = 1.0, progress: bool = False) -> LatentCode:
    """Deterministic DDIM (ODE) inversion, the baseline of DDIB and many editing tutorials.

    Runs diffusers' ``DDIMInverseScheduler`` (same config) up the timesteps the sampler
    comes down, evaluating the model at each target timestep (the usual approximation
    ``eps_theta(x_{t-1}, t) ~ eps_theta(x_t, t)``), so ``ddim_decode`` of the result is
    only approximately ``x0``; the error shrinks with more steps.

    Returns:
        A :class:`~dpmlatent.latent.LatentCode` with zero noises, to decode with ``eta = 0``.
    """
    _check_x0(unet, x0)
    timesteps = sampling_timesteps(scheduler, num_inference_steps, strength)
    keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inverse = DDIMInverseScheduler.from_config({k: v for k, v in scheduler.config.items() if k in keys})
    inverse.set_timesteps(num_inference_steps)
    x = x0
    for t in tqdm(timesteps.flip(0), desc="ddim_invert", disable=not progress):
        out = denoiser_output(unet, x, t, cond=cond, uncond=uncond, guidance_scale=guidance_scale)
        x = inverse.step(out, t, x).prev_sample
    return LatentCode(x, torch.zeros((len(timesteps), *x0.shape), dtype=x0.dtype, device=x0.device),
                      timesteps, num_inference_steps)


def ddim_decode(unet, scheduler, z: LatentCode, *, cond=None, uncond=None, guidance_scale: float = 1.0,
                progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM decoding (``eta = 0``) with a ``DDIMScheduler`` of the same config."""
    ddim = scheduler if isinstance(scheduler, DDIMScheduler) else DDIMScheduler.from_config(scheduler.config)
    return decode(unet, ddim, z, eta=0.0, cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                  progress=progress)
