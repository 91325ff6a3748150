"""Asyrp as its authors run it (Kwon, Jeong & Uh 2023; the official code, ``kwonminki/Asyrp_official``):
the implicit function ``f_t``, training along the *edited* trajectory with the official loss, and the
editing interval and quality boosting chosen by editing strength.

:func:`dpmlatent.hspace.learn_delta_h` (chapter 7's first pass) learns a constant shift at random
steps of the *unedited* trajectories. The official code differs in four ways, all here:

1. **f_t.** The shift depends on ``h_t`` and ``t``: ``dh_t = f_t(h_t)``, a small network
   (:class:`DeltaBlock`, the ``--train_delta_block`` the authors recommend) that reads the UNet's own
   timestep embedding. :class:`ConstantShift` is the constant ``dh`` in the same form, so both are
   trained and applied by the same code (:func:`dpmlatent.hspace.asyrp_decode` takes either).
2. **The edited trajectory.** From each image's inverted ``x_T`` the training walks every step
   ``t >= t_edit`` of the editing interval with the *current* shift (asymmetric steps, detached
   between steps) and takes one optimiser step per timestep; the loss compares the edited
   prediction ``P_t^edit`` at the edited state with the original trajectory's ``P_t``
   (:func:`learn_shift`).
3. **The loss** (:func:`asyrp_loss`): ``clip_w * -log((1 + cos(dI, dT)) / 2) + l1_w * cos(T_src, T_trg) * |P_t^edit - P_t|_1``
   with ``dI = f(P_t^edit) - f(x_0)`` (``x_0`` the real image) and the weights of the official
   scripts, ``clip_w = 1``, ``l1_w = 3``.
4. **t_edit and t_boost** (:class:`EditingStrength`): ``t_edit`` is the smallest timestep at which
   the mean perceptual distance between the images and their predicted clean images ``P_t`` reaches
   ``0.33 * cos(T_src, T_trg)`` (LPIPS in the paper); ``t_boost`` the smallest at which the distance
   between the images and their noisy states ``x_t`` reaches 1.2 (the README's flags) or, the official
   code's default, at which the distance to ``P_t`` reaches 0.1; the steps below ``t_boost`` are
   stochastic (``asyrp_decode(..., t_boost=...)``). Chapter 7b reads these thresholds in units of the
   distance between two different images (``EditingStrength.unrelated``), as no 8x8 distance is LPIPS.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .hspace import (HDirection, _clean_part, edit_steps, frozen, module_shift, predicted_x0, record_trajectory,
                     shift_bottleneck)
from .latent import LatentCode, denoiser_output, step_with_noise, unclipped_copy

__all__ = ["DeltaBlock", "ConstantShift", "asyrp_loss", "learn_shift", "EditingStrength", "editing_strength",
           "pick_timestep", "ShiftSettings", "ShiftInputs", "shift_inputs", "new_shift", "ShiftRun", "train_shifts",
           "save_shifts", "load_shifts", "verify_shifts", "SHIFTS_PATH", "SHIFT_KINDS"]


def _uniform_(param: torch.Tensor, bound: float, generator: torch.Generator | None) -> None:
    """PyTorch's default init of a conv or linear layer, U(-bound, bound), drawn in float64 from
    ``generator`` and then cast: the same start on every CPU."""
    with torch.no_grad():
        draw = (2 * torch.rand(param.shape, generator=generator, dtype=torch.float64) - 1) * bound
        param.copy_(draw.to(param.dtype))


class DeltaBlock(torch.nn.Module):
    """Asyrp's implicit function ``f_t`` (the official ``DeltaBlock``):

        dh_t = conv_2( swish( GroupNorm( conv_1(h_t) + W swish(temb_t) + b ) ) ),

    two 1x1 convolutions ``C -> C`` around a group norm, with the UNet's timestep embedding ``temb_t``
    (``(1, D)``, :func:`dpmlatent.hspace.timestep_embedding`) added after the first. As in the official
    code there is no residual and no zero init: at the start ``f_t`` is a small random shift.

    Args:
        channels: ``C``, the bottleneck's channels (:meth:`for_unet` reads them off a UNet).
        temb_channels: ``D``, the size of the UNet's timestep embedding.
        groups: groups of the norm (official: 32); must divide ``channels`` and leave at least two
            channels per group (with one, the norm subtracts each channel's mean, and with it the
            timestep embedding, which is one number per channel).
        generator: CPU generator of the initial weights (PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``,
            drawn in float64 so that the start is the same on every CPU).

    ``forward(h, temb)``: ``h`` ``(B, C, H, W)``, ``temb`` ``(1, D)`` or ``(B, D)``; returns ``dh`` like ``h``.
    """

    def __init__(self, channels: int, temb_channels: int, *, groups: int = 32,
                 generator: torch.Generator | None = None):
        super().__init__()
        for name, v in (("channels", channels), ("temb_channels", temb_channels), ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if channels % groups:
            raise ValueError(f"groups={groups} must divide channels={channels}")
        if channels // groups < 2:
            raise ValueError(f"groups={groups} leaves one channel per group of channels={channels}: the norm would "
                             "subtract each channel's mean and erase the timestep embedding; use at most channels // 2")
        self.conv1 = torch.nn.Conv2d(channels, channels, 1)
        self.temb_proj = torch.nn.Linear(temb_channels, channels)
        self.norm = torch.nn.GroupNorm(groups, channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 1)
        for layer, fan_in in ((self.conv1, channels), (self.temb_proj, temb_channels), (self.conv2, channels)):
            _uniform_(layer.weight, 1 / math.sqrt(fan_in), generator)
            _uniform_(layer.bias, 1 / math.sqrt(fan_in), generator)

    @classmethod
    def for_unet(cls, unet, *, groups: int = 32, generator: torch.Generator | None = None) -> "DeltaBlock":
        """A block sized for ``unet``'s bottleneck (``block_out_channels[-1]`` channels) and timestep
        embedding, on its device and in its dtype; ``groups`` becomes ``gcd(groups, channels // 2)``
        (32 for the official 512 channels and for the zoo's 64; at least two channels per group)."""
        channels = int(unet.config.block_out_channels[-1])
        temb = int(unet.time_embedding.linear_2.out_features)
        ref = next(unet.parameters())
        block = cls(channels, temb, groups=math.gcd(groups, max(channels // 2, 1)), generator=generator)
        return block.to(device=ref.device, dtype=ref.dtype)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if h.ndim != 4 or h.shape[1] != self.conv1.in_channels:
            raise ValueError(f"h must have shape (B, {self.conv1.in_channels}, H, W), got {tuple(h.shape)}")
        x = self.conv1(h) + self.temb_proj(F.silu(temb.to(h.dtype)))[:, :, None, None]
        return self.conv2(F.silu(self.norm(x)))


class ConstantShift(torch.nn.Module):
    """The constant ``dh`` of Asyrp (``--train_delta_h``) in the form of :class:`DeltaBlock`:
    ``forward(h, temb)`` returns the learned ``(1, C, H, W)`` shift whatever ``h`` and ``t`` are.

    Args:
        shape: ``(C, H, W)`` of one bottleneck ``h``.
        init_std: the start is ``N(0, init_std^2)`` from ``generator`` (float64, then cast; not 0,
            where the directional loss has no gradient direction).
    """

    def __init__(self, shape: Sequence[int], *, init_std: float = 0.05, generator: torch.Generator | None = None):
        super().__init__()
        shape = tuple(shape)
        if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
            raise ValueError(f"shape must be (C, H, W) of positive integers, got {shape!r}")
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        start = init_std * torch.randn((1, *shape), generator=generator, dtype=torch.float64)
        self.delta = torch.nn.Parameter(start.float())

    def forward(self, h: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.delta.to(h.dtype).expand_as(h)


def asyrp_loss(model, tokenizer, source_prompts: str | Sequence[str], target_prompts: str | Sequence[str], *,
               clip_weight: float = 1.0, l1_weight: float = 3.0) -> Callable[..., torch.Tensor]:
    """The official Asyrp training loss (``diffusion_latent.py``, with the weights of its scripts):

        L = clip_weight * -log((1 + cos(dI, dT)) / 2) + l1_weight * cos(T_src, T_trg) * mean|P_edit - P|,

    ``dI = f(P_edit) - f(x0)``, ``f`` the open_clip image embedding (unit norm), ``x0`` the real image
    being edited; ``dT`` the mean over prompt pairs of ``f_txt(target) - f_txt(source)``;
    ``cos(T_src, T_trg)`` the mean cosine of each pair's text embeddings (the closer the prompts, the
    more the L1 term keeps the image). ``-log((1 + cos) / 2)`` is the official ``-log((2 - L_dir) / 2)``
    with the directional loss ``L_dir = 1 - cos``.

    Returns ``loss(p_edit, p, x0) -> (B,)`` for :func:`learn_shift`.
    """
    from .clip import clip_embed_images, clip_embed_text

    src = [source_prompts] if isinstance(source_prompts, str) else list(source_prompts)
    tgt = [target_prompts] if isinstance(target_prompts, str) else list(target_prompts)
    if len(src) != len(tgt) or not src:
        raise ValueError(f"source_prompts and target_prompts must pair up, got {len(src)} and {len(tgt)}")
    for name, w in (("clip_weight", clip_weight), ("l1_weight", l1_weight)):
        if not w >= 0:
            raise ValueError(f"{name} must be >= 0, got {w}")
    with torch.no_grad():
        t_src, t_tgt = clip_embed_text(model, tokenizer, src), clip_embed_text(model, tokenizer, tgt)
        direction = (t_tgt - t_src).mean(0)
        text_cos = float(F.cosine_similarity(t_src, t_tgt, dim=-1).mean())

    def loss(p_edit: torch.Tensor, p: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        d_img = clip_embed_images(model, p_edit) - clip_embed_images(model, x0)
        cos = F.cosine_similarity(d_img, direction.to(d_img.dtype).expand_as(d_img), dim=-1, eps=1e-8)
        return (clip_weight * -torch.log((1 + cos) / 2)
                + l1_weight * text_cos * (p_edit - p).abs().flatten(1).mean(1))
    loss.text_cosine = text_cos
    return loss


def learn_shift(unet, scheduler, z: LatentCode, images: torch.Tensor, shift: torch.nn.Module, loss_fn: Callable, *,
                t_edit: int, epochs: int = 5, batch_size: int = 1, lr: float = 0.5, lr_step: int = 3,
                lr_gamma: float = 0.1, generator: torch.Generator | None = None, max_steps: int | None = None,
                progress: bool = True) -> HDirection:
    """Train an h-space shift module (:class:`DeltaBlock` ``f_t`` or :class:`ConstantShift`) as the
    official Asyrp code does, along the edited trajectory:

        for each epoch, for each batch of images (order drawn from ``generator``):
            x <- x_T of the batch (``z``, DDIM-inverted)
            for every step t >= t_edit, descending:
                P      <- P_t of the original trajectory at t (recorded once, no gradient)
                P_edit <- P_t(eps(x | h + shift(h, temb_t)))      at the edited state x
                one optimiser step on loss_fn(P_edit, P, images).mean()
                x <- sqrt(abar_prev) P_edit + D_t(eps(x))           (the asymmetric step, detached)

    SGD (the official optimiser) with learning rate ``lr``, multiplied by ``lr_gamma`` every
    ``lr_step`` epochs (the official ``StepLR``). Both trajectories are deterministic DDIM steps
    (eta = 0) without clipping, as the official ``x0_t`` is unclipped; the steps below ``t_edit`` are
    not visited. The UNet stays frozen; ``shift`` is moved to the images' device and dtype and trained
    in place.

    Args:
        z: the images' DDIM codes (:func:`dpmlatent.encoder.ddim_invert`; their noises are ignored),
            ``z.num_inference_steps`` the sampler length (the official scripts: 40 to 50).
        images: ``(N, C, H, W)`` in ``[-1, 1]``, the real images of ``z`` (``x0`` of the loss).
        loss_fn: ``loss_fn(p_edit, p, x0) -> (B,)``, e.g. :func:`asyrp_loss`.
        max_steps: stop after this many optimiser steps (None: train every epoch); the first
            ``max_steps`` losses are those of the full run, which is how :func:`verify_shifts` re-checks a
            stored training cheaply.

    Returns:
        :class:`dpmlatent.hspace.HDirection` with ``delta_h = shift`` and the loss of every optimiser step.
    """
    if not isinstance(shift, torch.nn.Module):
        raise TypeError(f"shift must be a torch.nn.Module (DeltaBlock or ConstantShift), got {type(shift).__name__}")
    if images.ndim != 4 or images.shape != z.x_start.shape:
        raise ValueError(f"images must have the shape of z.x_start {tuple(z.x_start.shape)}, got {tuple(images.shape)}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size), ("lr_step", lr_step)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not 0 < lr_gamma <= 1:
        raise ValueError(f"lr_gamma must be in (0, 1], got {lr_gamma}")
    n_edit = edit_steps(z.timesteps, t_edit)
    sched = unclipped_copy(scheduler, z.num_inference_steps)
    shift.to(device=images.device, dtype=images.dtype).requires_grad_(True)    # trainable again after a first run
    states = record_trajectory(unet, sched, z, eta=0.0, num_states=n_edit)   # the original trajectory

    def predict(x, t):
        return predicted_x0(sched, denoiser_output(unet, sched.scale_model_input(x, t), t), t, x)

    with torch.no_grad():
        plain = torch.stack([predict(states[k], z.timesteps[k]) for k in range(n_edit)])
    opt = torch.optim.SGD(shift.parameters(), lr=lr)
    lr_sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step, gamma=lr_gamma)
    losses: list[float] = []
    n = len(images)
    with frozen(unet):
        total = epochs * math.ceil(n / batch_size) * n_edit
        bar = tqdm(total=total if max_steps is None else min(total, max_steps), desc="learn shift",
                   disable=not progress)
        for _ in range(epochs):
            if max_steps is not None and len(losses) >= max_steps:
                break
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size].to(images.device)
                x = z.x_start[idx]
                for k in range(n_edit):
                    if max_steps is not None and len(losses) >= max_steps:
                        break
                    t = z.timesteps[k]
                    model_in = sched.scale_model_input(x, t)
                    opt.zero_grad()
                    with torch.no_grad():
                        out = denoiser_output(unet, model_in, t)
                    with shift_bottleneck(unet, module_shift(unet, shift, t)):
                        out_edit = denoiser_output(unet, model_in, t)
                    p, p_edit = predicted_x0(sched, out, t, x), predicted_x0(sched, out_edit, t, x)
                    loss = loss_fn(p_edit, plain[k, idx], images[idx]).mean()
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
                    with torch.no_grad():
                        x = (step_with_noise(sched, out, t, x, torch.zeros_like(x), 0.0)
                             + _clean_part(sched, p_edit.detach(), t, 0.0) - _clean_part(sched, p, t, 0.0))
                    bar.update()
            lr_sched.step()
        bar.close()
    shift.requires_grad_(False)
    return HDirection(shift, t_edit, z.num_inference_steps, losses)


def pick_timestep(timesteps: torch.Tensor, values: torch.Tensor, threshold: float) -> int:
    """The smallest timestep whose value reaches ``threshold`` (the official choice of ``t_edit`` and
    ``t_boost`` from a table of mean distances by timestep). ``timesteps``, ``values``: ``(S,)``."""
    if timesteps.shape != values.shape or timesteps.ndim != 1:
        raise ValueError(f"timesteps and values must be two (S,) tensors, got {tuple(timesteps.shape)} and "
                         f"{tuple(values.shape)}")
    order = torch.argsort(timesteps)
    for k in order.tolist():
        if float(values[k]) >= threshold:
            return int(timesteps[k])
    raise ValueError(f"threshold={threshold} is above every value (the largest is {float(values.max()):.3g}): "
                     "no timestep reaches it")


@dataclasses.dataclass
class EditingStrength:
    """Mean distances along the images' own (unedited) trajectories, by timestep (descending):
    ``clean[k] = mean d(x0, P_{t_k})``, the editing strength of the interval ``[T, t_k]``, and
    ``noisy[k] = mean d(x0, x_{t_k})``, how much of the image the noise has destroyed; and
    ``unrelated``, the mean distance between two different images of the set: the distance's own
    scale (a threshold taken from work that used another distance is best read in its units)."""

    timesteps: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    unrelated: float = math.nan

    def t_edit(self, threshold: float) -> int:
        """The smallest timestep whose ``clean`` distance reaches ``threshold`` (paper: LPIPS 0.33,
        times the cosine of the source and target texts in the official code)."""
        return pick_timestep(self.timesteps, self.clean, threshold)

    def t_boost(self, threshold: float) -> int:
        """The smallest timestep whose ``noisy`` distance reaches ``threshold`` (paper: LPIPS 1.2)."""
        return pick_timestep(self.timesteps, self.noisy, threshold)


@torch.no_grad()
def editing_strength(unet, scheduler, z: LatentCode, images: torch.Tensor,
                     distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> EditingStrength:
    """:class:`EditingStrength` of the images ``(N, C, H, W)`` and their codes ``z`` (decoded with
    eta = 0 by ``scheduler`` as it is configured): at every timestep of the sampler the mean over
    images of ``distance(images, P_t)`` and ``distance(images, x_t)``, and the mean of
    ``distance(x_i, x_j)`` over all ordered pairs ``i != j`` (``unrelated``, needs ``N >= 2``);
    ``distance(a, b) -> (N,)``, a perceptual distance such as LPIPS."""
    if images.shape != z.x_start.shape:
        raise ValueError(f"images must have the shape of z.x_start {tuple(z.x_start.shape)}, got {tuple(images.shape)}")
    if len(images) < 2:
        raise ValueError(f"editing_strength needs at least 2 images (for the distance between unrelated ones), "
                         f"got {len(images)}")
    unrelated = torch.stack([distance(images, torch.roll(images, k, 0)).mean() for k in range(1, len(images))])
    states = record_trajectory(unet, scheduler, z, eta=0.0)
    clean, noisy = [], []
    for x, t in zip(states, z.timesteps):
        p = predicted_x0(scheduler, denoiser_output(unet, scheduler.scale_model_input(x, t), t), t, x)
        clean.append(distance(images, p).mean())
        noisy.append(distance(images, x).mean())
    return EditingStrength(z.timesteps.clone(), torch.stack(clean).cpu(), torch.stack(noisy).cpu(),
                           float(unrelated.mean()))


# --- the shifts of chapter 7b, trained once and stored -------------------------------------------------
# Trained as the official scripts do (100 images, batch 1, 5 epochs, one SGD step per timestep of the
# editing interval), one shift takes minutes on two CPU cores, and the chapter needs six (two kinds,
# three seeds): benchmarks/hspace_edits.py --train-shifts --save trains and stores them, the chapter
# loads them and re-runs the first steps of every training (verify_shifts).

#: Where :func:`save_shifts` stores the shifts of chapter 7b.
SHIFTS_PATH = Path(__file__).resolve().parents[2] / "results" / "asyrp_shifts"
#: The kinds of shift: Asyrp's constant ``dh`` (:class:`ConstantShift`) and its ``f_t`` (:class:`DeltaBlock`).
SHIFT_KINDS = ("constant", "delta")


@dataclasses.dataclass(frozen=True)
class ShiftSettings:
    """What :func:`train_shifts` trains: every kind in ``kinds`` from every seed in ``seeds`` (a seed
    draws the shift's start and the order of the images), on the first ``num_images`` training digits
    of the handwritten model (``model``), DDIM-inverted with ``steps`` steps, for ``epochs`` epochs of
    batch ``batch_size`` with SGD at ``lr`` (times ``lr_gamma`` every ``lr_step`` epochs) and
    :func:`asyrp_loss` (``clip_weight``, ``l1_weight``) from "a handwritten <digit>" to
    "a <attribute> handwritten <digit>". ``t_edit`` is chosen as the paper does (:class:`EditingStrength`):
    the smallest timestep at which the perceptual distance (:func:`dpmlatent.metrics.perceptual_distance`
    on ``distance_network``) between the images and their predicted clean images reaches
    ``edit_threshold * cos(T_src, T_trg)`` *in units of the distance between two unrelated training
    images* (``EditingStrength.unrelated``): the paper's threshold is in LPIPS units, which no 8x8
    distance shares, and "a third of the way to another image" is what carries over (chapter 7b). The
    defaults are the official scripts' (``--n_train_img 100 --n_iter 5 --bs_train 1 --lr_training 0.5
    --clip_loss_w 1 --l1_loss_w 3 --lpips_edit_th 0.33``), with 40 steps (``--n_train_step 40``)."""

    seeds: tuple = (0, 1, 2)
    kinds: tuple = SHIFT_KINDS
    model: str = "ddpm-handwritten"
    clip: str = "clip-digits"
    distance_network: str = "domain-classifier"
    attribute: str = "bold"
    num_images: int = 100
    steps: int = 40
    epochs: int = 5
    batch_size: int = 1
    lr: float = 0.5
    lr_step: int = 3
    lr_gamma: float = 0.1
    clip_weight: float = 1.0
    l1_weight: float = 3.0
    edit_threshold: float = 0.33

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds!r}")
        if not self.kinds or not set(self.kinds) <= set(SHIFT_KINDS):
            raise ValueError(f"kinds must be a non-empty subset of {SHIFT_KINDS}, got {self.kinds!r}")
        for name in ("num_images", "steps", "epochs", "batch_size", "lr_step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0 < self.edit_threshold < 1:
            raise ValueError(f"edit_threshold must be in (0, 1), got {self.edit_threshold!r}")


@dataclasses.dataclass
class ShiftInputs:
    """What training and using the shifts needs, built once by :func:`shift_inputs`: the frozen UNet
    (float64), its DDIM scheduler, the training images and their DDIM codes, the loss, the perceptual
    distance's network, the editing strength of the images and the ``t_edit`` it gives."""

    unet: torch.nn.Module
    scheduler: object
    images: torch.Tensor
    z: LatentCode
    loss: Callable
    distance_network: torch.nn.Module
    strength: EditingStrength
    t_edit: int


def shift_inputs(settings: ShiftSettings = ShiftSettings(), *, device=None) -> ShiftInputs:
    """Load the models of ``settings`` from the zoo (float64; channels-last UNet) and compute the
    training images' DDIM codes, editing strength and ``t_edit`` (:class:`ShiftInputs`)."""
    from diffusers import DDIMScheduler

    from . import data, zoo
    from .encoder import ddim_invert
    from .metrics import perceptual_distance
    from .text import caption

    dtype = torch.float64
    pipe = zoo.load(settings.model, device=device, dtype=dtype, memory_format=torch.channels_last)
    unet = pipe.unet.requires_grad_(False)
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    clip = zoo.load(settings.clip, device=device, dtype=dtype)
    clip[0].requires_grad_(False)
    network = zoo.load(settings.distance_network, device=device, dtype=dtype)   # float64: CPU-independent distances
    images = data.handwritten_digits("train").images[:settings.num_images].to(unet.device, dtype)
    z = ddim_invert(unet, scheduler, images, num_inference_steps=settings.steps)
    loss = asyrp_loss(*clip, [caption(d, "handwritten") for d in range(10)],
                      [caption(d, "handwritten", settings.attribute) for d in range(10)],
                      clip_weight=settings.clip_weight, l1_weight=settings.l1_weight)
    strength = editing_strength(unet, scheduler, z, images, lambda a, b: perceptual_distance(network, a, b))
    t_edit = strength.t_edit(settings.edit_threshold * loss.text_cosine * strength.unrelated)
    return ShiftInputs(unet, scheduler, images, z, loss, network, strength, t_edit)


def new_shift(kind: str, unet, seed: int) -> torch.nn.Module:
    """A fresh shift of ``kind`` (``"constant"``: :class:`ConstantShift` of the bottleneck's shape;
    ``"delta"``: :class:`DeltaBlock` for the UNet), its start drawn from ``seed``, on the UNet's device
    and in its dtype."""
    from .hspace import bottleneck

    if kind not in SHIFT_KINDS:
        raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    if kind == "delta":
        return DeltaBlock.for_unet(unet, generator=g)
    ref = next(unet.parameters())
    size = int(unet.config.sample_size)
    with torch.no_grad():
        h = bottleneck(unet, torch.zeros(1, int(unet.config.in_channels), size, size, device=ref.device,
                                         dtype=ref.dtype), torch.tensor(0, device=ref.device))
    return ConstantShift(tuple(h.shape[1:]), generator=g).to(device=ref.device, dtype=ref.dtype)


@dataclasses.dataclass
class ShiftRun:
    """Trained shifts: ``shifts[kind, seed]`` (modules, frozen) and ``losses[kind, seed]`` (every
    optimiser step's loss, float64), the ``t_edit`` they were trained for, seconds per training."""

    settings: ShiftSettings
    t_edit: int
    shifts: dict
    losses: dict
    seconds: dict


def _train_one(inputs: ShiftInputs, s: ShiftSettings, kind: str, seed: int, *, max_steps=None, progress=False):
    shift = new_shift(kind, inputs.unet, seed)
    return learn_shift(inputs.unet, inputs.scheduler, inputs.z, inputs.images, shift, inputs.loss, t_edit=inputs.t_edit,
                       epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, lr_step=s.lr_step, lr_gamma=s.lr_gamma,
                       generator=torch.Generator().manual_seed(seed), max_steps=max_steps, progress=progress)


def train_shifts(settings: ShiftSettings = ShiftSettings(), *, inputs: ShiftInputs | None = None,
                 progress: bool = True) -> ShiftRun:
    """Train every kind of shift from every seed of ``settings`` with :func:`learn_shift`
    (``inputs``: :func:`shift_inputs` of the same settings, if the caller has them)."""
    import time

    inputs = shift_inputs(settings) if inputs is None else inputs
    shifts, losses, seconds = {}, {}, {}
    for kind in settings.kinds:
        for seed in settings.seeds:
            start = time.perf_counter()
            result = _train_one(inputs, settings, kind, seed, progress=progress)
            seconds[kind, seed] = time.perf_counter() - start
            shifts[kind, seed] = result.delta_h
            losses[kind, seed] = torch.tensor(result.losses, dtype=torch.float64)
    return ShiftRun(settings, inputs.t_edit, shifts, losses, seconds)


def _shift_rebuild_command(s: ShiftSettings) -> str:
    defaults = ShiftSettings()
    opts = "".join(f" --{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, tuple) else v}"
                   for k, v in dataclasses.asdict(s).items() if v != getattr(defaults, k))
    return f"python benchmarks/hspace_edits.py --train-shifts --save{opts}"


def save_shifts(run: ShiftRun, folder=SHIFTS_PATH) -> Path:
    """Store ``run`` in ``folder``: ``shifts.safetensors`` (every shift's parameters and losses) and
    ``run.json`` (settings, ``t_edit``, seconds, the rebuild command, sha256 of the tensors)."""
    import hashlib
    import json

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for (kind, seed), module in run.shifts.items():
        for name, p in module.state_dict().items():
            tensors[f"{kind}.{seed}.{name}"] = p.detach().cpu().double().contiguous()
        tensors[f"{kind}.{seed}.losses"] = run.losses[kind, seed].double().contiguous()
    save_file(tensors, folder / "shifts.safetensors")
    meta = {"settings": dataclasses.asdict(run.settings), "t_edit": run.t_edit,
            "seconds": {f"{k}.{s}": round(v, 1) for (k, s), v in run.seconds.items()},
            "rebuild": _shift_rebuild_command(run.settings), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "sha256": hashlib.sha256((folder / "shifts.safetensors").read_bytes()).hexdigest()}
    (folder / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_shifts(unet, folder=SHIFTS_PATH) -> ShiftRun:
    """The shifts :func:`save_shifts` stored (sha256 checked), as modules for ``unet`` (its device and
    dtype), frozen."""
    import hashlib
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "run.json").exists():
        raise FileNotFoundError(f"no stored shifts in {folder}; make them with "
                                "'python benchmarks/hspace_edits.py --train-shifts --save'")
    meta = json.loads((folder / "run.json").read_text())
    if hashlib.sha256((folder / "shifts.safetensors").read_bytes()).hexdigest() != meta["sha256"]:
        raise ValueError(f"{folder / 'shifts.safetensors'} does not match the sha256 in run.json")
    t = load_file(folder / "shifts.safetensors")
    settings = ShiftSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    shifts, losses = {}, {}
    for kind in settings.kinds:
        for seed in settings.seeds:
            module = new_shift(kind, unet, seed)
            prefix = f"{kind}.{seed}."
            module.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix) and
                                    not k.endswith(".losses")})
            shifts[kind, seed] = module.requires_grad_(False)
            losses[kind, seed] = t[prefix + "losses"]
    seconds = {tuple((k.split(".")[0], int(k.split(".")[1]))): v for k, v in meta["seconds"].items()}
    return ShiftRun(settings, int(meta["t_edit"]), shifts, losses, seconds)


def verify_shifts(run: ShiftRun, inputs: ShiftInputs, *, steps: int = 40) -> dict:
    """Re-run the first ``steps`` optimiser steps of every stored training from scratch (the same
    start, image order and loss) and compare the losses with the stored ones; check that ``inputs``
    (:func:`shift_inputs` of ``run.settings``) give the stored ``t_edit``.

    Returns ``{(kind, seed): max |loss difference|}``: float64 training repeats to about 1e-12 on any
    CPU, while a change of the code, the settings or the models moves the losses at once."""
    if inputs.t_edit != run.t_edit:
        raise ValueError(f"these inputs give t_edit = {inputs.t_edit}, the stored shifts were trained for "
                         f"{run.t_edit}: the models, the distance or the settings changed")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    out = {}
    for (kind, seed), stored in run.losses.items():
        k = min(steps, len(stored))
        again = _train_one(inputs, run.settings, kind, seed, max_steps=k)
        out[kind, seed] = float((torch.tensor(again.losses, dtype=torch.float64) - stored[:k]).abs().max())
    return out
