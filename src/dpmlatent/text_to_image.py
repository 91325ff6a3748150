"""The tiny pixel-space text-to-image model: a ``UNet2DConditionModel`` on 8x8 digits, conditioned
on a small ``CLIPTextModel``, wrapped as a diffusers pipeline so it saves and loads with
``save_pretrained`` / ``from_pretrained`` like Stable Diffusion (minus the VAE: it works on pixels).

Sampling uses classifier-free guidance (Ho & Salimans 2021): with ``c`` the prompt's token states
and ``c_0`` those of the empty prompt,
``eps = eps(x, t, c_0) + w (eps(x, t, c) - eps(x, t, c_0))``, ``w`` = ``guidance_scale``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from .fitting import EMA, TrainResult, check_steps, fit as fit_loop
from .reporting import Column, Table, share_column
from .text import build_tokenizer, encode_prompts, text_encoder_config

__all__ = ["PixelTextToImagePipeline", "unet_config", "make_pipeline", "train_text_to_image", "FAMILIES",
           "PromptQualityRow", "family_prompts", "text_to_image_quality", "format_quality_table",
           "make", "fit", "save", "load"]


def unet_config(cross_attention_dim: int = 64) -> dict:
    """``UNet2DConditionModel`` config for 8x8x1 images: channels (32, 64, 64), cross-attention to
    the prompt at 4x4 and 2x2."""
    return dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                block_out_channels=(32, 64, 64), norm_num_groups=8,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=8)


class PixelTextToImagePipeline(DiffusionPipeline):
    """``unet`` (UNet2DConditionModel), ``text_encoder`` (CLIPTextModel), ``tokenizer``
    (CLIPTokenizer), ``scheduler``: a Stable Diffusion pipeline without the VAE."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @torch.no_grad()
    def __call__(self, prompts: list[str], *, num_inference_steps: int = 50, guidance_scale: float = 3.0,
                 eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample one image per prompt; returns ``(B, 1, 8, 8)`` clamped to ``[-1, 1]`` (DDIM with ``eta``)."""
        from .latent import decode, sample_latent

        cond = encode_prompts(self.text_encoder, self.tokenizer, prompts)
        uncond = encode_prompts(self.text_encoder, self.tokenizer, [""] * len(prompts))
        shape = (len(prompts), self.unet.config.in_channels, self.unet.config.sample_size,
                 self.unet.config.sample_size)
        z = sample_latent(shape, self.scheduler, num_inference_steps, eta, generator=generator,
                          device=self.unet.device, dtype=self.unet.dtype)
        x = decode(self.unet, self.scheduler, z, eta=eta, cond=cond, uncond=uncond, guidance_scale=guidance_scale)
        return x.clamp(-1, 1)  # like diffusers' pipelines, which clamp when converting to images


def make_pipeline(seed: int = 0) -> PixelTextToImagePipeline:
    """A freshly initialised pipeline (weights from ``seed``) with the zoo's cosine schedule as a
    ``DDIMScheduler`` without x0 clipping."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .diffusion import make_scheduler

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_encoder_config(tokenizer))
    unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size))
    # clip_sample=False: clipping the predicted x0 to [-1, 1] breaks classifier-free guidance on this
    # model (guidance 2 drops the typeset samples judged typeset from 92% to 4%; without clipping,
    # 100%). Training does not read it: it only changes sampling.
    scheduler = DDIMScheduler.from_config(make_scheduler().config, clip_sample=False)
    return PixelTextToImagePipeline(unet, text_encoder, tokenizer, scheduler)


def train_text_to_image(pipe, captioned, *, steps: int, batch_size: int = 128, lr: float = 2e-4,
                        ema_decay: float = 0.999, p_uncond: float = 0.1, seed: int = 0,
                        progress: bool = True) -> TrainResult:
    """Train a :class:`PixelTextToImagePipeline`'s UNet and text encoder together (in place) on
    captioned images, with caption dropout for classifier-free guidance.

    Each example's caption is replaced by the empty prompt ``""`` with probability ``p_uncond``,
    so the same network learns ``eps(x, t, c)`` and ``eps(x, t, c_0)``. Loss and noise as in
    :func:`dpmlatent.diffusion.train_diffusion`.

    Args:
        pipe: the pipeline to train; training runs on its UNet's device.
        captioned: :class:`~dpmlatent.text.CaptionedData` (``images``, ``captions``).
        p_uncond: caption-dropout probability, in [0, 1).

    Returns:
        :class:`~dpmlatent.fitting.TrainResult` whose ``model`` is a new pipeline holding the EMA weights.
    """
    check_steps(steps, batch_size)
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise ValueError("train_text_to_image trains epsilon-prediction models only")
    unet, text_encoder, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    device = unet.device
    gen = torch.Generator().manual_seed(seed)
    ids = tok(list(captioned.captions), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids                        # (N, L)
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    images = captioned.images.to(device)
    ema = EMA([unet, text_encoder], ema_decay)
    opt = torch.optim.AdamW(list(unet.parameters()) + list(text_encoder.parameters()), lr=lr, weight_decay=0.0)
    unet.train()
    text_encoder.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        drop = torch.rand(batch_size, generator=gen) < p_uncond
        batch_ids = torch.where(drop[:, None], empty, ids[idx])
        x0 = images[idx.to(device)]
        t = torch.randint(pipe.scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = pipe.scheduler.add_noise(x0, eps, t.to(device))
        cond = text_encoder(batch_ids.to(device))[0]
        return F.mse_loss(unet(xt, t.to(device), encoder_hidden_states=cond).sample, eps)

    losses, history = fit_loop(loss_fn, opt, steps=steps, ema=ema, progress=progress)
    unet.eval()
    text_encoder.eval()
    return TrainResult(type(pipe)(*ema.copies, tok, pipe.scheduler), losses, history)


# --- zoo hooks (kind "text-to-image") ---------------------------------------------------------

def make(entry, train) -> PixelTextToImagePipeline:
    """:func:`make_pipeline` from ``entry.seed``."""
    return make_pipeline(entry.seed)


def fit(pipe, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_text_to_image` from ``entry.seed``; the EMA weights are then rounded to float16,
    the stored dtype (the UNet's 1.7M parameters: 3.2 MB)."""
    result = train_text_to_image(pipe, train, steps=steps, seed=entry.seed, progress=progress)
    result.model.to(dtype=torch.float16)
    result.info["stored_dtype"] = "float16"
    return result


def save(pipe, folder: Path) -> None:
    """diffusers' ``save_pretrained`` layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)."""
    pipe.save_pretrained(folder)


def load(folder: Path, *, device=None, dtype=None) -> PixelTextToImagePipeline:
    """``PixelTextToImagePipeline.from_pretrained(folder)``, stored in float16 and computed in
    ``dtype`` (default float32), UNet and text encoder in eval mode."""
    from .zoo import quiet_loading

    with quiet_loading():
        pipe = PixelTextToImagePipeline.from_pretrained(folder, low_cpu_mem_usage=False,
                                                        dtype=dtype or torch.float32)
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return pipe.to(device=device) if device is not None else pipe


#: Caption families of the quality table: (name, domain, weight or None for every weight).
FAMILIES = (
    ("handwritten", "handwritten", None), ("typeset", "typeset", None),
    ("thin handwritten", "handwritten", "thin"), ("bold handwritten", "handwritten", "bold"),
    ("thin typeset", "typeset", "thin"), ("bold typeset", "typeset", "bold"),
)


@dataclasses.dataclass
class PromptQualityRow:
    """How well samples follow one caption family's prompts."""

    family: str
    digit_accuracy: float    # classifier label == the prompted digit
    domain_accuracy: float   # domain classifier == the prompted domain
    ink_ratio: float         # mean ink of samples / mean ink of real images of the family
    frechet: float           # FD to real held-out images of the family (digit-classifier features)
    num_real: int            # how many real images the FD and ink reference use
    num_samples: int | None = None   # how many samples the two accuracies are over


def family_prompts(domain: str, weight: str | None, per_digit: int) -> tuple[list[str], torch.Tensor]:
    """Prompts of a family, ``per_digit`` per digit: for ``weight=None`` the regular caption (no
    weight word); returns the prompts and their digit labels."""
    from .text import caption

    prompts, labels = [], []
    for d in range(10):
        prompts += [caption(d, domain, weight or "regular")] * per_digit
        labels += [d] * per_digit
    return prompts, torch.tensor(labels)


def text_to_image_quality(pipe, digit_classifier, domain_classifier, *, per_digit: int = 20,
                          guidance_scale: float = 3.0, num_inference_steps: int = 50, seed: int = 0,
                          families=FAMILIES, progress: bool = True) -> list[PromptQualityRow]:
    """The zoo quality table of the text-to-image model, one row per caption family.

    For each family, ``10 * per_digit`` samples (DDIM, eta = 0, classifier-free guidance
    ``guidance_scale``), scored against the real held-out images of that family
    (:func:`dpmlatent.text.captioned_digits`, test split).
    """
    from tqdm.auto import tqdm

    from . import metrics
    from .text import DOMAINS, captioned_digits

    if not isinstance(per_digit, int) or per_digit < 1:
        raise ValueError(f"per_digit must be a positive integer, got {per_digit!r}")
    real = captioned_digits("test")
    rows = []
    for name, domain, weight in tqdm(families, desc="families", disable=not progress):
        prompts, labels = family_prompts(domain, weight, per_digit)
        images = torch.cat([pipe(prompts[i:i + 100], num_inference_steps=num_inference_steps,
                                 guidance_scale=guidance_scale,
                                 generator=torch.Generator().manual_seed(seed + i))
                            for i in range(0, len(prompts), 100)])
        keep = [i for i in range(len(real)) if DOMAINS[int(real.domains[i])] == domain
                and (weight is None or real.weights[i] == weight)]
        ref = real.images[keep].to(images.device)
        probs, feats = metrics.classify(digit_classifier, images)
        dom, _ = metrics.classify(domain_classifier, images)
        _, ref_feats = metrics.classify(digit_classifier, ref)
        rows.append(PromptQualityRow(
            name, (probs.argmax(1) == labels).double().mean().item(),
            (dom.argmax(1) == DOMAINS.index(domain)).double().mean().item(),
            (metrics.ink(images).mean() / metrics.ink(ref).mean()).item(), metrics.FrechetReference(ref_feats)(feats), len(keep),
            num_samples=len(images)))
    return rows


def format_quality_table(rows: list[PromptQualityRow]) -> Table:
    """A :class:`~dpmlatent.reporting.Table` of :class:`PromptQualityRow` s; the accuracies at the
    precision their number of samples supports (:func:`dpmlatent.reporting.fmt_fraction`)."""
    cols = [Column("caption family", "<", 18), Column("digit acc", ">"), Column("domain acc", ">"),
            Column("ink ratio", ">"), Column("FD", ">", 7), Column("real n", ">")]
    return Table(cols, [[r.family, share_column(r.digit_accuracy, r.num_samples, 0, name="digit acc"),
                         share_column(r.domain_accuracy, r.num_samples, 0, name="domain acc"), f"{r.ink_ratio:.2f}",
                         f"{r.frechet:.2f}", f"{r.num_real}"] for r in rows])
