"""Plug-and-play guidance in the latent space (Wu & De la Torre, Sec. 5).

Once a sampler is a deterministic map ``x = G(z)`` from a Gaussian code ``z ~ N(0, I)``, any
energy ``E`` on images guides it the same way, diffusion model or GAN: sample the code from

    p(z) ∝ N(z; 0, I) · exp(-λ E(G(z))),    i.e.  p(z) ∝ exp(-U(z)),  U(z) = ½‖z‖² + λ E(G(z)),

with Langevin dynamics ``z <- z - (s/2) ∇U(z) + √s · n``, ``n ~ N(0, I)``.

* :func:`langevin` — the generic sampler of ``p(z) ∝ exp(-U(z))`` (any ``U``, any shape of ``z``).
* :func:`latent_energy` — builds ``U`` from a generator and an energy on images.
* :func:`guide` — both together: Langevin on ``U``, then the images ``G(z)`` of the final codes.
* :func:`plateau` — has a chain settled? The drift of a traced quantity (the energy, ``‖z‖²/d``)
  over the last stretch of steps, with an interval, tested against a tolerance.
* :func:`diffusion_generator` — ``G`` of a diffusion model, the sampler chain of
  :func:`dpmlatent.latent.decode`, checkpointed per step so that memory stays flat in the
  number of steps. A GAN's generator module is already a ``G`` (codes ``(B, latent_dim)`` -> images).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .evidence import Interval, bootstrap_ci
from .latent import LatentCode, decode

__all__ = ["PORTABLE_GRID", "LangevinResult", "langevin", "langevin_proposal", "latent_energy",
           "diffusion_generator", "Guided", "guide", "Plateau", "plateau"]

#: The grid (``langevin(grid=...)``) that makes float64 chains the same across kernel paths and the
#: Intel machines tried: 2^-8 (about 0.004). Its rounding (a standard deviation of 0.001) is 25 times
#: smaller than the step noise ``sqrt(s)`` at ``s = 0.01`` (0.1), and it is 10^9 times coarser than the
#: differences between two kernel paths' float64 codes after a step (measured on the guidance chapter's
#: chains: below 1e-12). Not on every CPU: between an Intel and an AMD machine some diffusion chains
#: still part (see :func:`langevin`).
PORTABLE_GRID = 2.0 ** -8


@dataclasses.dataclass
class LangevinResult:
    """``z``: the final code (the type of ``z0``); ``energies``: ``(steps + 1, B)``, ``U`` of every
    iterate from ``z0`` on (detached, on the CPU), to plot how the chain settles; ``accepted``:
    ``(steps, B)`` bool, which proposals the Metropolis test accepted (``None`` for unadjusted
    Langevin, which takes every one)."""

    z: torch.Tensor | LatentCode
    energies: torch.Tensor
    accepted: torch.Tensor | None = None

    @property
    def acceptance(self) -> float:
        """The share of proposals accepted, over steps and chains (1 for unadjusted Langevin)."""
        return 1.0 if self.accepted is None else float(self.accepted.double().mean())


def _as_flat(z0) -> tuple[torch.Tensor, Callable]:
    """``z0`` as a ``(B, D)`` tensor, and the map back to ``z0``'s type and shape."""
    if isinstance(z0, LatentCode):
        return z0.flatten(), z0.unflatten
    if isinstance(z0, torch.Tensor):
        if z0.ndim < 1 or len(z0) == 0:
            raise ValueError(f"z0 must have a non-empty batch dimension first, got shape {tuple(z0.shape)}")
        shape = z0.shape
        return z0.reshape(len(z0), -1), lambda flat: flat.reshape(shape)
    raise TypeError(f"z0 must be a torch.Tensor or a LatentCode, got {type(z0).__name__}")


def langevin_proposal(z: torch.Tensor, grad: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One Langevin update (the proposal of :func:`langevin`):

        z' = z - (delta / 2) * grad U(z) + sqrt(delta) * n,    n ~ N(0, I),

    ``z``, ``grad`` (= ``∇U(z)``) and ``noise`` (= ``n``): tensors of one shape, e.g. ``(B, D)``;
    ``step_size`` = ``delta`` > 0 (the book's notation page; :func:`langevin` calls it ``s``).
    Returns a tensor like ``z``.
    """
    return z - 0.5 * step_size * grad + step_size ** 0.5 * noise


def langevin(energy_fn: Callable, z0, *, steps: int, step_size: float,
             generator: torch.Generator | list[torch.Generator] | None = None, grid: float | None = None,
             metropolis: bool = False, progress: bool = True) -> LangevinResult:
    """Langevin dynamics for ``p(z) ∝ exp(-energy_fn(z))``, unadjusted (ULA) or Metropolis-adjusted (MALA).

    Each of the ``steps`` iterations proposes ``z' = z - (δ/2) ∇U(z) + √δ · n`` with ``δ = step_size``
    (the book's Langevin step), ``n ~ N(0, I)`` and ``U = energy_fn``. Unadjusted, ``z <- z'``: for
    small ``δ`` and many steps ``z`` is (approximately) distributed as ``p``; the bias of the
    discretisation grows with ``δ``, and on a sharp energy a large step can throw a chain far out. With
    ``metropolis=True`` the proposal is accepted with probability
    ``min(1, exp(U(z) - U(z') + (‖z' - z + (δ/2)∇U(z)‖² - ‖z - z' + (δ/2)∇U(z')‖²) / (2δ)))`` (the
    Metropolis–Hastings ratio of the Gaussian proposal, Roberts & Tweedie 1996), else ``z`` stays:
    ``p`` is then the exact stationary distribution whatever the step (a larger step only lowers the
    acceptance), and a proposal that would throw the chain out is rejected. It costs one uniform
    draw per chain and step and no extra energy evaluation (``U`` and ``∇U`` of the proposal are
    those of the next step when it is accepted).

    Args:
        energy_fn: ``U``, the *whole* energy (prior included, e.g. :func:`latent_energy`): takes
            a ``z`` of ``z0``'s type and shape, returns one value per sample, shape ``(B,)``.
        z0: the start, a tensor ``(B, ...)`` of any shape or a :class:`~dpmlatent.latent.LatentCode`.
            The chain runs on its device and dtype.
        steps: number of iterations, >= 1.
        step_size: ``s`` > 0.
        generator: draws the noises ``n`` (``randn_tensor``: a CPU generator gives the same chain
            on every device). A list of ``k`` generators splits the batch into ``k`` equal blocks, each
            with its own noise: block ``i`` gets exactly the noise a run of that block alone with
            ``generator[i]`` gets (several seeds' chains in one batch).
        grid: if given (> 0), ``z`` is rounded to a multiple of ``grid`` after every step. A chain
            through a sharp energy is chaotic: a rounding difference of 1e-16 between two CPUs' kernels
            grows to O(1) within tens of steps (measured on the guidance chapter, even in float64).
            Rounding to a grid much coarser than the rounding noise and much finer than the step's
            noise ``sqrt(step_size)`` wipes the difference out at every step, so the same chain comes
            out on every machine unless a value lands within the kernels' difference of a boundary
            between two grid points: per number and step that has probability ~ 2 x difference / grid,
            and a 704-dimensional code of 48 chains runs through 10^6 numbers in 60 steps. ``2**-20``
            was not enough between two machines (whose BLAS libraries also sum in another order);
            use :data:`PORTABLE_GRID` (``2**-8``) in float64. In float32 the rounding noise (~1e-7) is
            too close to any useful grid. Even ``2**-8`` is not enough between every pair of CPUs:
            between an Intel and an AMD machine 1 to 7 of 48 diffusion chains of chapter 6 part within
            10 steps (their float64 U-Net passes must differ by far more than 1e-16 somewhere), while
            GAN chains agree; results that must be the same everywhere are stored
            (:func:`dpmlatent.coverage.save_chains`) and checked chain by chain. With ``metropolis``
            the proposal is rounded before the test, so the test is that of the rounded proposal's
            Gaussian approximation (exact as ``grid -> 0``).
        metropolis: accept or reject each proposal (MALA, above); the uniform draws (``Phi`` of a
            normal draw) come from ``generator`` after the step's noise.
        progress: tqdm bar.

    Returns:
        :class:`LangevinResult` with ``.z`` (``z0``'s type) and ``.energies`` ``(steps + 1, B)``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(step_size, (int, float)) or isinstance(step_size, bool) or not step_size > 0:
        raise ValueError(f"step_size must be a number > 0, got {step_size!r}")
    if grid is not None and (not isinstance(grid, (int, float)) or isinstance(grid, bool) or not grid > 0):
        raise ValueError(f"grid must be None or a number > 0, got {grid!r}")
    if not isinstance(metropolis, bool):
        raise TypeError(f"metropolis must be True or False, got {metropolis!r}")
    flat, unflat = _as_flat(z0)
    batch = len(flat)
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    if not gens or batch % len(gens) or not all(g is None or isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"generator must be a torch.Generator, None, or a list of generators whose number divides "
                         f"the batch ({batch}), got {generator!r}")
    block = (batch // len(gens), *flat.shape[1:])

    def energy_and_grad(flat):
        flat = flat.detach().requires_grad_(True)
        with torch.enable_grad():
            u = energy_fn(unflat(flat))
            if not isinstance(u, torch.Tensor) or u.shape != (batch,):
                raise ValueError(f"energy_fn must return one energy per sample, shape ({batch},), got "
                                 f"{getattr(u, 'shape', type(u).__name__)}")
            (grad,) = torch.autograd.grad(u.sum(), flat)
        return u.detach(), grad

    energies, accepted = [], []
    u, grad = energy_and_grad(flat)
    energies.append(u.cpu())
    for _ in tqdm(range(steps), desc="mala" if metropolis else "langevin", disable=not progress):
        noise = torch.cat([randn_tensor(block, generator=g, device=flat.device, dtype=flat.dtype) for g in gens])
        proposal = langevin_proposal(flat.detach(), grad, step_size, noise)
        if grid is not None:
            proposal = torch.round(proposal / grid) * grid
        u_new, grad_new = energy_and_grad(proposal)
        if metropolis:
            forward = (proposal - flat + 0.5 * step_size * grad).square().sum(1)
            backward = (flat - proposal + 0.5 * step_size * grad_new).square().sum(1)
            log_ratio = u - u_new + (forward - backward) / (2 * step_size)
            # one uniform per chain, as Phi(normal): randn_tensor, so a CPU generator gives it on every device
            normal = torch.cat([randn_tensor((block[0],), generator=g, device=flat.device, dtype=flat.dtype)
                                for g in gens])
            accept = torch.log(torch.special.ndtr(normal)) < log_ratio     # a NaN ratio is rejected
            flat = torch.where(accept[:, None], proposal, flat)
            u = torch.where(accept, u_new, u)
            grad = torch.where(accept[:, None], grad_new, grad)
            accepted.append(accept.cpu())
        else:
            flat, u, grad = proposal, u_new, grad_new
        energies.append(u.cpu())
    return LangevinResult(unflat(flat.detach()), torch.stack(energies),
                          torch.stack(accepted) if metropolis else None)


def latent_energy(generator_fn: Callable, energy: Callable, *, weight: float) -> Callable:
    """``U(z) = ½‖z‖² + weight · E(G(z))``: the energy of the guided code distribution.

    Args:
        generator_fn: ``G``, code -> images (:func:`diffusion_generator`, or a GAN's generator).
        energy: ``E``, images -> ``(B,)`` (see :mod:`dpmlatent.energies`).
        weight: ``λ`` >= 0 (0 leaves the prior ``N(0, I)``).

    Returns:
        ``U``, taking a code (tensor ``(B, ...)`` or ``LatentCode``) and returning ``(B,)``.
    """
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
        raise ValueError(f"weight must be a number >= 0, got {weight!r}")

    def u(z):
        flat = z.flatten() if isinstance(z, LatentCode) else z.reshape(len(z), -1)
        prior = 0.5 * flat.pow(2).sum(1)
        if weight == 0:
            return prior
        e = energy(generator_fn(z))
        if not isinstance(e, torch.Tensor) or e.shape != prior.shape:
            raise ValueError(f"energy must return one value per image, shape {tuple(prior.shape)}, got "
                             f"{getattr(e, 'shape', type(e).__name__)}")
        return prior + weight * e
    return u


def diffusion_generator(unet, scheduler, *, eta: float, checkpoint: bool = True, cond=None, uncond=None,
                        guidance_scale: float = 1.0) -> Callable:
    """``G(z)`` of a diffusion model for guidance: ``decode(unet, scheduler, z, ...)`` with every
    sampler step checkpointed (``checkpoint=True``), so backpropagating through ``S`` steps stores one
    step's activations instead of ``S`` (see ``benchmarks/guidance_memory.py``). The code fixes the
    number of steps (``z.num_inference_steps``); use a short chain (10-20 DDIM steps) for guidance."""
    def g(z: LatentCode) -> torch.Tensor:
        if not isinstance(z, LatentCode):
            raise TypeError(f"a diffusion generator takes a LatentCode, got {type(z).__name__}")
        return decode(unet, scheduler, z, eta=eta, cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                      checkpoint=checkpoint)
    return g



@dataclasses.dataclass
class Guided:
    """``images``: ``G(z)`` of the final codes ``(B, C, H, W)``; ``energies``: ``E(G(z))`` of every
    iterate, ``(steps + 1, B)``; ``result``: the :class:`LangevinResult` (``.z``, ``U`` trace)."""

    images: torch.Tensor
    energies: torch.Tensor
    result: LangevinResult


def guide(generator_fn: Callable, energy: Callable, z0, *, weight: float, steps: int, step_size: float,
          generator: torch.Generator | None = None, grid: float | None = None, metropolis: bool = False,
          progress: bool = True) -> Guided:
    """Sample ``z ∝ N(0, I) exp(-weight E(G(z)))`` by :func:`langevin` from ``z0`` and decode it
    (``grid``, ``metropolis``: see :func:`langevin`).

    Besides the trace of ``U`` (in ``result.energies``) it records the image energy ``E(G(z_k))``
    of every iterate, the quantity guidance lowers, in ``energies`` (with ``metropolis``, of the
    chain's state: a rejected proposal's energy is not the chain's).
    """
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
        raise ValueError(f"weight must be a number > 0 for guidance (0 samples the prior: use z0 itself), got {weight!r}")
    trace = []

    def image_energy(x):
        e = energy(x)
        trace.append(e.detach().cpu())
        return e

    u = latent_energy(generator_fn, image_energy, weight=weight)
    result = langevin(u, z0, steps=steps, step_size=step_size, generator=generator, grid=grid,
                      metropolis=metropolis, progress=progress)
    evaluated = torch.stack(trace)                        # E of z0 and of every proposal
    if result.accepted is not None:
        chain = [evaluated[0]]
        for k, took in enumerate(result.accepted, start=1):
            chain.append(torch.where(took, evaluated[k], chain[-1]))
        evaluated = torch.stack(chain)
    with torch.no_grad():
        images = generator_fn(result.z)
    return Guided(images, evaluated, result)


@dataclasses.dataclass(frozen=True)
class Plateau:
    """Has a traced quantity settled? ``drift``: the mean over the last ``window`` steps minus the mean
    over the ``window`` steps before, averaged over chains, with its bootstrap interval over chains
    (:class:`~dpmlatent.evidence.Interval`); ``level``: the mean over the last window (``level_se``: its
    standard error over chains); ``tolerance``: the relative drift accepted; ``plateaued``: the whole interval lies within ``± tolerance · scale``
    (an equivalence test: a drift that is small but too noisy to bound does not pass)."""

    drift: Interval
    level: float
    level_se: float
    window: int
    tolerance: float
    plateaued: bool


def plateau(trace: torch.Tensor, *, window: int | None = None, tolerance: float = 0.05, scale: str = "level",
            generator: torch.Generator | None = None) -> Plateau:
    """Test whether ``trace`` ``(steps + 1, chains)`` (e.g. ``Guided.energies``, or ``‖z‖²/d`` per
    iterate) has stopped drifting: per chain, ``d = mean(last window) - mean(window before)``;
    the drift is ``mean(d)`` with a 95% BCa interval over chains (:func:`dpmlatent.evidence.bootstrap_ci`),
    and the chain counts as settled when ``max(|low|, |high|) <= tolerance · scale``, where ``scale`` is
    ``"level"``: ``|mean of the last window|`` (for a quantity that should settle at a value, such as
    ``‖z‖²/d``), or ``"change"``: ``|mean of the last window - mean of the first iterate|``, the whole
    change along the chain (for an energy that guidance drives towards 0: "the last stretch moved it by
    less than 5% of what the chain moved it in all").

    Args:
        trace: ``(T, B)`` with ``T >= 2 · window`` and ``B >= 2``, finite.
        window: steps per window, default a quarter of the trace (at least 1).
        tolerance: relative drift accepted, in (0, 1); 5% by default.
        scale: ``"level"`` or ``"change"`` (see above).
        generator: for the bootstrap (default: seeded 0).

    Returns:
        :class:`Plateau`.
    """
    if not isinstance(trace, torch.Tensor) or trace.ndim != 2 or trace.shape[1] < 2:
        raise ValueError(f"trace must be a (steps + 1, chains) tensor with at least 2 chains, got "
                         f"{getattr(trace, 'shape', type(trace).__name__)}")
    if window is None:
        window = max(1, len(trace) // 4)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1 or 2 * window > len(trace):
        raise ValueError(f"window must be an integer in [1, {len(trace) // 2}] (half the trace), got {window!r}")
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}")
    if scale not in ("level", "change"):
        raise ValueError(f"scale must be 'level' or 'change', got {scale!r}")
    t = trace.detach().to("cpu", torch.float64)
    last, before = t[-window:].mean(0), t[-2 * window:-window].mean(0)
    drift = bootstrap_ci(last - before, generator=generator)
    level = float(last.mean())
    ref = abs(level) if scale == "level" else abs(level - float(t[0].mean()))
    ok = max(abs(drift.low), abs(drift.high)) <= tolerance * ref
    se = float(last.std() / len(last) ** 0.5)
    return Plateau(drift, level, se, window, float(tolerance), bool(ok))
