"""LRDM: a diffusion model conditioned on a learned representation that can be sampled (Traub,
"Representation Learning with Diffusion Models"; code released as ``jeremiastraub/diffusion``).

An encoder on the clean image gives a diagonal Gaussian posterior ``q(r | x0) = N(mu(x0), diag
sigma^2(x0))``; ``r`` is drawn with the reparameterisation trick and the denoising network is
conditioned on it. One objective trains both, end to end:

    L = E || x0 - x0_theta(x_t, t, r) ||^2 / n_pixels  +  lambda * E KL(q(r | x0) || N(0, I)),

the first an unweighted x0-prediction MSE averaged over elements, the second summed over r's
dimensions and averaged over the batch (:func:`kl`, in nats). Because one is a mean and the
other a sum, lambda's effect scales with the number of pixels: the author's MNIST lambda = 1e-3
on 28x28 images balances like lambda = 1e-3 * 784 / 64 ~ 1.2e-2 on our 8x8 digits. The KL is the
bottleneck, not r's size, and the prior is N(0, I): sampling draws ``r ~ N(0, I)`` (:func:`prior_sample`),
no second model.

``r`` is spatial, ``(r_channels, 2, 2)``, and reaches the network at every resolution: a small
representation decoder turns it into one feature map per resolution (8x8, 4x4, 2x2, and 2x2 for
the middle), concatenated to the input of the first ResNet block of each down stage and of the mid
block. The network is the zoo's diffusers ``UNet2DModel`` with those four blocks widened; with
``num_classes > 0`` the class label goes to the encoder and to the UNet's time embedding (the
author's class-conditional variant). Its scheduler is a diffusers scheduler with
``prediction_type="sample"``, so :func:`dpmlatent.latent.decode`, :func:`dpmlatent.encoder.dpm_encode`
and :func:`dpmlatent.encoder.ddim_invert` run unchanged on :meth:`LRDM.bind` ``(r)``.

Deviations from the released code, at the book's scale: the zoo's cosine schedule (not linear betas),
AdamW at 2e-4 like the other zoo models (not Adam at 1e-4), a 2x2 representation, float16 storage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fitting import EMA, TrainResult, check_steps, fit as fit_loop

__all__ = ["LRDMConfig", "LRDM", "make_scheduler", "posterior", "kl", "prior_sample", "generate",
           "reconstruct", "train_lrdm", "active_units", "training_curve", "ReconstructionScores",
           "reconstruction_scores", "LOGVAR_RANGE", "make", "fit", "save", "load"]

#: The posterior's log-variance is clamped to this range, as in the released code.
LOGVAR_RANGE = (-30.0, 10.0)


@dataclasses.dataclass(frozen=True)
class LRDMConfig:
    """Architecture of :class:`LRDM` and its KL weight (stored as ``config.json``).

    ``r`` has shape ``(r_channels, r_size, r_size)``; ``r_size`` must be 2 (the UNet's lowest
    resolution on 8x8 digits, a quarter of the side as the author's 7x7 for 28x28); the default
    16 x 2 x 2 = 64 numbers, as many as pixels (the author's MNIST r, 24 x 7 x 7, has more). ``map_channels``: channels of each feature map the representation
    decoder adds to a UNet level. ``num_classes``: 0 for the unconditional model, else the number
    of class labels given to encoder and UNet. ``kl_weight``: lambda >= 0; ``kl_warmup``: training
    steps over which lambda ramps linearly from 0 (0: none, as in the released code).
    """

    r_channels: int = 16
    r_size: int = 2
    map_channels: int = 16
    encoder_width: int = 32
    num_classes: int = 0
    kl_weight: float = 1e-2
    kl_warmup: int = 0
    dataset: str = "handwritten"

    def __post_init__(self):
        for name in ("r_channels", "map_channels", "encoder_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.r_size != 2:
            raise ValueError(f"r_size must be 2 (the UNet's lowest resolution on 8x8 images), got {self.r_size!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0 or self.num_classes == 1:
            raise ValueError(f"num_classes must be 0 (unconditional) or an integer >= 2, got {self.num_classes!r}")
        if not isinstance(self.kl_weight, (int, float)) or not self.kl_weight >= 0:
            raise ValueError(f"kl_weight (lambda) must be a number >= 0, got {self.kl_weight!r}")
        if not isinstance(self.kl_warmup, int) or isinstance(self.kl_warmup, bool) or self.kl_warmup < 0:
            raise ValueError(f"kl_warmup must be an integer >= 0 (steps), got {self.kl_warmup!r}")
        if self.dataset.startswith("toy-"):
            raise ValueError(f"dataset must be an 8x8 image data set, got {self.dataset!r}")

    @property
    def r_shape(self) -> tuple[int, int, int]:
        return (self.r_channels, self.r_size, self.r_size)


class Encoder(nn.Module):
    """``x0 (B, 1, 8, 8)`` [and labels ``(B,)``] -> ``(mean, logvar)``, each ``(B, r_channels, 2, 2)``."""

    def __init__(self, config: LRDMConfig):
        super().__init__()
        w = config.encoder_width
        self.stem = nn.Conv2d(1, w, 3, padding=1)                                     # (B, w, 8, 8)
        self.label = nn.Embedding(config.num_classes, w) if config.num_classes else None
        self.body = nn.Sequential(
            nn.GELU(), nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),         # (B, 2w, 4, 4)
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.GELU(),                # (B, 2w, 2, 2)
            nn.Conv2d(2 * w, 2 * config.r_channels, 1),                                # (B, 2 C_r, 2, 2)
        )

    def forward(self, x0: torch.Tensor, labels: torch.Tensor | None = None):
        h = self.stem(x0)
        if self.label is not None:
            h = h + self.label(labels)[:, :, None, None]
        mean, logvar = self.body(h).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)


class RepresentationDecoder(nn.Module):
    """``r (B, C_r, 2, 2)`` -> feature maps ``[(B, F, 8, 8), (B, F, 4, 4), (B, F, 2, 2), (B, F, 2, 2)]``
    for the UNet's three down stages and its mid block."""

    def __init__(self, config: LRDMConfig):
        super().__init__()
        f = config.map_channels
        self.trunk = nn.Sequential(nn.Conv2d(config.r_channels, 2 * f, 3, padding=1), nn.GELU())   # 2x2
        self.up4 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * f, 2 * f, 3, padding=1),
                                 nn.GELU())                                                           # 4x4
        self.up8 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * f, 2 * f, 3, padding=1),
                                 nn.GELU())                                                           # 8x8
        self.heads = nn.ModuleList(nn.Conv2d(2 * f, f, 1) for _ in range(4))

    def forward(self, r: torch.Tensor) -> list[torch.Tensor]:
        h2 = self.trunk(r)
        h4 = self.up4(h2)
        h8 = self.up8(h4)
        return [head(h) for head, h in zip(self.heads, (h8, h4, h2, h2))]


class _WithMap(nn.Module):
    """A UNet ResNet block that reads ``cat([hidden, map], channels)``; the map comes from the
    ``slot`` its :class:`LRDM` fills for the duration of one UNet call."""

    def __init__(self, block: nn.Module, slot: dict, level: int):
        super().__init__()
        self.block, self.slot, self.level = block, slot, level

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, *args, **kwargs):
        maps = self.slot.get("maps")
        if maps is None:
            raise RuntimeError("an LRDM's UNet needs its representation: call it through LRDM.denoise or LRDM.bind(r)")
        m = maps[self.level]
        if len(m) != len(hidden_states):
            m = m.expand(len(hidden_states), -1, -1, -1)
        return self.block(torch.cat([hidden_states, m.to(hidden_states.dtype)], dim=1), temb, *args, **kwargs)


def _widen(block, extra: int):
    """A fresh ``ResnetBlock2D`` like ``block`` but with ``extra`` more input channels."""
    from diffusers.models.resnet import ResnetBlock2D

    return ResnetBlock2D(in_channels=block.in_channels + extra, out_channels=block.out_channels,
                         temb_channels=block.time_emb_proj.in_features, eps=block.norm1.eps,
                         groups=block.norm1.num_groups, groups_out=block.norm2.num_groups,
                         dropout=block.dropout.p, time_embedding_norm=block.time_embedding_norm,
                         output_scale_factor=block.output_scale_factor, pre_norm=True)


class LRDM(nn.Module):
    """``encoder`` (q(r | x0)), ``decoder`` (r -> feature maps), ``unet`` (the widened diffusers
    ``UNet2DModel``, an x0-predictor), ``config`` (:class:`LRDMConfig`) and ``scheduler`` (a diffusers
    scheduler with ``prediction_type="sample"``)."""

    def __init__(self, config: LRDMConfig, scheduler=None):
        from diffusers import UNet2DModel

        from .diffusion import unet_config

        super().__init__()
        self.config = config
        self.scheduler = scheduler if scheduler is not None else make_scheduler()
        self.encoder = Encoder(config)
        self.decoder = RepresentationDecoder(config)
        self.unet = UNet2DModel(**unet_config(config.dataset), num_class_embeds=config.num_classes or None)
        self._slot: dict = {}
        blocks = [b.resnets for b in self.unet.down_blocks] + [self.unet.mid_block.resnets]
        for level, resnets in enumerate(blocks):
            resnets[0] = _WithMap(_widen(resnets[0], config.map_channels), self._slot, level)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def check_labels(self, labels, batch: int) -> torch.Tensor | None:
        """``labels``: None for an unconditional model, else ``(batch,)`` integers in ``[0, num_classes)``."""
        k = self.config.num_classes
        if not k:
            if labels is not None:
                raise ValueError("labels must be None for an unconditional LRDM (num_classes = 0)")
            return None
        if not isinstance(labels, torch.Tensor) or labels.shape != (batch,) or labels.is_floating_point():
            raise ValueError(f"labels must be a ({batch},) integer tensor for a class-conditional LRDM, "
                             f"got {getattr(labels, 'shape', labels)!r}")
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < k):
            raise ValueError(f"labels must lie in [0, {k - 1}]")
        return labels.to(self.device)

    def check_r(self, r: torch.Tensor, name: str = "r") -> None:
        if not isinstance(r, torch.Tensor) or r.ndim != 4 or tuple(r.shape[1:]) != self.config.r_shape:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.config.r_shape))}), "
                             f"got {tuple(getattr(r, 'shape', ())) or type(r).__name__}")

    def denoise(self, x: torch.Tensor, t, r: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The network's x0 prediction ``x0_theta(x_t, t, r)`` ``(B, 1, 8, 8)``; ``r`` ``(B, C_r, 2, 2)``
        (or one ``r`` for the whole batch)."""
        self.check_r(r)
        if len(r) not in (1, len(x)):
            raise ValueError(f"r holds {len(r)} representations for {len(x)} images: give one, or one per image")
        self._slot["maps"] = self.decoder(r.to(self.dtype))
        try:
            return self.unet(x, t, class_labels=labels).sample
        finally:
            self._slot.clear()

    def bind(self, r: torch.Tensor, labels: torch.Tensor | None = None, *, r_late: torch.Tensor | None = None,
             switch_at: int | None = None) -> "ConditionedUNet":
        """A UNet-like view with ``r`` (and ``labels``) fixed: what :func:`dpmlatent.latent.decode`,
        :func:`~dpmlatent.encoder.dpm_encode` and :func:`~dpmlatent.encoder.ddim_invert` take.

        With ``r_late`` and ``switch_at`` (a training timestep tau in ``[0, T]``), the network sees ``r``
        at the steps with ``t > tau`` and ``r_late`` at ``t <= tau``: which timesteps read the
        representation (swap one of them for a prior draw and see what changes).
        """
        self.check_r(r)
        if (r_late is None) != (switch_at is None):
            raise ValueError("r_late and switch_at go together: give both or neither")
        if r_late is not None:
            self.check_r(r_late, "r_late")
            if r_late.shape != r.shape:
                raise ValueError(f"r_late must have r's shape {tuple(r.shape)}, got {tuple(r_late.shape)}")
            t_max = self.scheduler.config.num_train_timesteps
            if not isinstance(switch_at, int) or isinstance(switch_at, bool) or not 0 <= switch_at <= t_max:
                raise ValueError(f"switch_at must be an integer timestep in [0, {t_max}], got {switch_at!r}")
        return ConditionedUNet(self, r, self.check_labels(labels, len(r)), r_late, switch_at)


class ConditionedUNet(nn.Module):
    """``unet(x, t).sample`` of an :class:`LRDM` with ``r`` fixed; has ``config``, ``device``, ``dtype``."""

    def __init__(self, model: LRDM, r: torch.Tensor, labels: torch.Tensor | None,
                 r_late: torch.Tensor | None = None, switch_at: int | None = None):
        super().__init__()
        self.model, self.r, self.labels, self.r_late, self.switch_at = model, r, labels, r_late, switch_at
        self.config = model.unet.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, x: torch.Tensor, t, **kwargs):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        if kwargs:
            raise ValueError(f"an LRDM takes its condition through r, not {sorted(kwargs)}")
        if len(self.r) not in (1, len(x)):
            raise ValueError(f"r holds {len(self.r)} representations for a batch of {len(x)}")
        r = self.r
        if self.r_late is not None:
            t_ = torch.as_tensor(t)
            if t_.numel() != 1:
                raise ValueError("a switching representation needs one timestep per call (the samplers' scalar t)")
            r = self.r if int(t_) > self.switch_at else self.r_late
        return UNet2DOutput(sample=self.model.denoise(x, t, r, self.labels))


def make_scheduler():
    """The zoo's cosine 1000-step DDPM schedule with ``prediction_type="sample"`` (the network
    predicts x0, as in LRDM's released code)."""
    from diffusers import DDPMScheduler

    from .diffusion import make_scheduler as zoo_scheduler

    return DDPMScheduler.from_config(zoo_scheduler().config, prediction_type="sample")


def _check_images(x0: torch.Tensor) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 4 or tuple(x0.shape[1:]) != (1, 8, 8):
        raise ValueError(f"x0 must have shape (B, 1, 8, 8), got {tuple(getattr(x0, 'shape', ())) or type(x0).__name__}")


def posterior(model: LRDM, x0: torch.Tensor, labels: torch.Tensor | None = None):
    """``q(r | x0)``: ``(mean, logvar)``, each ``(B, C_r, 2, 2)``, for images ``x0`` in ``[-1, 1]``
    (log-variance clamped to :data:`LOGVAR_RANGE`)."""
    _check_images(x0)
    return model.encoder(x0.to(model.dtype), model.check_labels(labels, len(x0)))


def kl(mean: torch.Tensor, logvar: torch.Tensor, *, per_dim: bool = False) -> torch.Tensor:
    """``KL(N(mean, diag exp(logvar)) || N(0, I)) = 1/2 sum_j (mean_j^2 + exp(logvar_j) - 1 - logvar_j)``
    in nats: ``(B,)`` per image, or ``(B, *r_shape)`` per dimension with ``per_dim=True``."""
    if mean.shape != logvar.shape or mean.ndim < 2:
        raise ValueError(f"mean and logvar must have the same shape (B, ...), got {tuple(mean.shape)} and "
                         f"{tuple(logvar.shape)}")
    terms = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return terms if per_dim else terms.flatten(1).sum(1)


def active_units(mean: torch.Tensor, logvar: torch.Tensor, *, threshold: float = 0.01) -> torch.Tensor:
    """Which of r's dimensions carry information: the batch-mean KL per dimension > ``threshold``
    nats (a ``(*r_shape)`` boolean tensor)."""
    return kl(mean, logvar, per_dim=True).mean(0) > threshold


def prior_sample(model: LRDM, num: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``num`` draws ``r ~ N(0, I)`` ``(num, C_r, 2, 2)`` on the model's device and dtype (drawn in
    float64 and rounded, so a CPU generator gives the same draws on every kernel path: float32
    ``torch.randn`` differs in its last bits between vectorised CPU kernels)."""
    from diffusers.utils.torch_utils import randn_tensor

    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    return randn_tensor((num, *model.config.r_shape), generator=generator, device=model.device,
                        dtype=torch.float64).to(model.dtype)


def generate(model: LRDM, scheduler, r: torch.Tensor, *, eta: float, num_inference_steps: int,
             generator: torch.Generator | None = None, latents=None, labels: torch.Tensor | None = None,
             progress: bool = False) -> torch.Tensor:
    """Images ``(B, 1, 8, 8)`` in ``[-1, 1]`` decoded from representations ``r`` ``(B, C_r, 2, 2)``.

    The sampler is ``scheduler`` (a ``DDIMScheduler`` for any ``eta``, or a ``DDPMScheduler`` with
    ``eta = 1``; its ``prediction_type`` must be ``"sample"``) run by :func:`dpmlatent.latent.decode` on
    ``model.bind(r, labels)`` from ``latents`` (a :class:`~dpmlatent.latent.LatentCode`; default: a fresh
    one drawn from ``generator``, in float64 and rounded to the model's dtype, as :func:`prior_sample`).
    """
    from .latent import decode, sample_latent

    _check_prediction(scheduler)
    cond = model.bind(r, labels)
    if latents is None:
        latents = sample_latent((len(r), 1, 8, 8), scheduler, num_inference_steps, eta, generator=generator,
                                device=model.device, dtype=torch.float64).to(model.dtype)
    elif latents.num_inference_steps != num_inference_steps or len(latents.x_start) != len(r):
        raise ValueError(f"latents must hold {len(r)} codes made for num_inference_steps={num_inference_steps}")
    with torch.no_grad():
        return decode(cond, scheduler, latents, eta=eta, progress=progress).clamp(-1, 1)


def reconstruct(model: LRDM, scheduler, x0: torch.Tensor, *, eta: float, num_inference_steps: int,
                generator: torch.Generator | None = None, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Decode ``x0``'s posterior mean with fresh noise: :func:`generate` on ``posterior(model, x0)[0]``."""
    with torch.no_grad():
        mean, _ = posterior(model, x0, labels)
    return generate(model, scheduler, mean, eta=eta, num_inference_steps=num_inference_steps, generator=generator,
                    labels=labels)


@dataclasses.dataclass
class ReconstructionScores:
    """Per-image scores of ``draws`` reconstructions of each input (:func:`reconstruction_scores`):
    ``mse`` (mean squared pixel error, averaged over draws), ``ssim`` (same), ``agree`` (share of draws
    the judge labels like the input), ``spread`` (per-pixel standard deviation over draws, averaged
    over pixels), each ``(N,)``; ``images`` ``(draws, N, 1, 8, 8)``."""

    mse: torch.Tensor
    ssim: torch.Tensor
    agree: torch.Tensor
    spread: torch.Tensor
    images: torch.Tensor


def reconstruction_scores(model: LRDM, scheduler, x0: torch.Tensor, *, judge, labels: torch.Tensor | None = None,
                          draws: int = 4, eta: float = 0.0, num_inference_steps: int = 50,
                          seed: int = 0) -> ReconstructionScores:
    """Reconstruct every image of ``x0`` ``draws`` times from its posterior mean with fresh noise
    (:func:`reconstruct`, draw ``k`` from ``torch.Generator().manual_seed(seed + k)``) and score the
    reconstructions against the inputs; ``judge`` (a classifier the model never saw, e.g.
    ``zoo.load("digit-judge")``) labels inputs and reconstructions."""
    from . import metrics

    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 2:
        raise ValueError(f"draws must be an integer >= 2 (the spread needs two), got {draws!r}")
    outs = torch.stack([reconstruct(model, scheduler, x0, eta=eta, num_inference_steps=num_inference_steps,
                                    generator=torch.Generator().manual_seed(seed + k), labels=labels)
                        for k in range(draws)])                                    # (K, N, 1, 8, 8)
    ref = x0.to(outs.device, outs.dtype)
    flat = outs.flatten(0, 1)
    probs_in, _ = metrics.classify(judge, ref)
    probs_out, _ = metrics.classify(judge, flat)
    agree = (probs_out.argmax(1).view(draws, -1) == probs_in.argmax(1)).double().mean(0)
    mse = (outs - ref).square().flatten(2).mean(2).mean(0)
    ssim = metrics.ssim(flat, ref.repeat(draws, 1, 1, 1)).view(draws, -1).mean(0)
    spread = outs.std(0).flatten(1).mean(1)
    return ReconstructionScores(mse.cpu(), ssim.cpu(), agree, spread.cpu(), outs.cpu())


def _check_prediction(scheduler) -> None:
    if scheduler.config.prediction_type != "sample":
        raise ValueError("scheduler must have prediction_type='sample' (an LRDM predicts x0); got "
                         f"{scheduler.config.prediction_type!r}: use lrdm.make_scheduler() or model.scheduler")


def train_lrdm(model: LRDM, images: torch.Tensor, labels: torch.Tensor | None = None, *, steps: int,
               batch_size: int = 128, lr: float = 2e-4, ema_decay: float = 0.999, seed: int = 0,
               progress: bool = True) -> TrainResult:
    """Train ``model`` (in place) end to end on ``images`` ``(N, 1, 8, 8)`` in ``[-1, 1]``:

    per step, ``x0`` from the data, ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = add_noise(x0, eps, t)``,
    ``(mu, log sigma^2) = encoder(x0)``, ``r = mu + sigma * n`` (``n ~ N(0, I)``), and
    ``loss = mse(x0_theta(x_t, t, r), x0) + lambda * mean_batch KL(q(r | x0) || N(0, I))`` with
    ``lambda = model.config.kl_weight``, ramped linearly from 0 over the first ``model.config.kl_warmup``
    steps (0: no warm-up, as in the released code). AdamW; the returned model averages the UNet and the
    representation decoder (EMA, ``ema_decay``) and keeps the trained encoder, as the released code does.

    Returns:
        :class:`~dpmlatent.fitting.TrainResult`: the EMA model; ``losses``; ``history`` with ``mse``,
        ``kl`` (nats per image) and ``active`` (dimensions with batch-mean KL > 0.01 nats) per step.
    """
    check_steps(steps, batch_size)
    scheduler = model.scheduler
    _check_prediction(scheduler)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(f"images must have shape (N, 1, 8, 8), got {tuple(getattr(images, 'shape', ()))}")
    if model.config.num_classes and (labels is None or len(labels) != len(images)):
        raise ValueError("labels must give one class per image for a class-conditional LRDM")
    device = model.device
    gen = torch.Generator().manual_seed(seed)
    images = images.to(device)
    lam, kl_warmup = float(model.config.kl_weight), model.config.kl_warmup
    step = [0]
    ema = EMA([model], ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()

    def loss_fn():
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x0 = images[idx.to(device)]
        y = None if not model.config.num_classes else labels[idx].to(device)
        t = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = scheduler.add_noise(x0, eps, t.to(device))
        mean, logvar = model.encoder(x0, y)
        r = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=gen).to(device)
        mse = F.mse_loss(model.denoise(xt, t.to(device), r, y), x0)
        kl_batch = kl(mean, logvar)
        step[0] += 1
        weight = lam * min(1.0, step[0] / kl_warmup) if kl_warmup else lam
        loss = mse + weight * kl_batch.mean()
        with torch.no_grad():
            active = int(active_units(mean, logvar).sum())
        return loss, {"mse": mse.item(), "kl": kl_batch.mean().item(), "active": active}

    losses, history = fit_loop(loss_fn, opt, steps=steps, ema=ema, progress=progress)
    model.eval()
    averaged = ema.copies[0]
    averaged.encoder.load_state_dict(model.encoder.state_dict())        # the encoder is not averaged
    return TrainResult(averaged, losses, history)


# --- zoo hooks (kind "lrdm") -------------------------------------------------------------------

def make(entry, train) -> LRDM:
    """A fresh :class:`LRDM` from ``entry.config`` (e.g. ``(("kl_weight", 1e-2), ("num_classes", 10))``),
    on ``entry.dataset``, weights from ``entry.seed``."""
    torch.manual_seed(entry.seed)
    return LRDM(LRDMConfig(dataset=entry.dataset, **dict(entry.config)))


def fit(model: LRDM, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_lrdm` from ``entry.seed`` (labels given when the model is class-conditional); the
    manifest gets the final KL per image and the active units, measured on the held-out split."""
    from .train import training_data

    labels = train.labels if model.config.num_classes else None
    result = train_lrdm(model, train.images, labels, steps=steps, seed=entry.seed, progress=progress)
    result.model.to(dtype=torch.float16).float()            # measure the weights as stored
    test = training_data(entry.dataset, "test")
    with torch.no_grad():
        mean, logvar = posterior(result.model, test.images, test.labels if model.config.num_classes else None)
    per_dim = kl(mean, logvar, per_dim=True).mean(0).flatten()
    result.info.update(stored_dtype="float16", test_kl_nats=round(per_dim.sum().item(), 3),
                       test_kl_per_dim=[round(v, 4) for v in per_dim.tolist()],
                       test_active_units=int((per_dim > 0.01).sum()),
                       curve=training_curve(result.history, every=CURVE_EVERY))
    return result


#: The manifest keeps the training curve as means over windows of this many steps.
CURVE_EVERY = 50


def training_curve(history: dict[str, list[float]], *, every: int = CURVE_EVERY) -> dict[str, list[float]]:
    """``history`` (one value per step) as means over consecutive windows of ``every`` steps, with
    ``"step"`` the last step of each window (1-based): what an LRDM's manifest stores."""
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    n = len(next(iter(history.values())))
    ends = list(range(every, n + 1, every)) or [n]
    curve = {"step": ends}
    for name, values in history.items():
        curve[name] = [round(sum(values[e - every:e]) / len(values[e - every:e]), 5) for e in ends]
    return curve


def save(model: LRDM, folder: Path) -> None:
    """``config.json`` (:class:`LRDMConfig`), ``model.safetensors`` (float16) and ``scheduler/``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(model.config), indent=2) + "\n")
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    model.scheduler.save_config(folder / "scheduler")


def load(folder: Path, *, device=None, dtype=None) -> LRDM:
    """The inverse of :func:`save`, in eval mode, computed in ``dtype`` (default float32)."""
    from diffusers import DDPMScheduler
    from safetensors.torch import load_file

    folder = Path(folder)
    config = LRDMConfig(**json.loads((folder / "config.json").read_text()))
    model = LRDM(config, DDPMScheduler.from_pretrained(folder, subfolder="scheduler"))
    model.load_state_dict({k: v.float() for k, v in load_file(folder / "model.safetensors").items()})
    return model.to(device=device, dtype=dtype or torch.float32).eval()
