"""Training loops of the model zoo, and the command that rebuilds a checkpoint.

    python -m dpmlatent.train NAME [--steps N] [--threads T] [--root DIR]

rebuilds ``checkpoints/NAME`` from scratch with the seed stored in :data:`dpmlatent.zoo.ZOO`
(same command, same seed, same thread count -> the same weights on the same machine).

Diffusion loss (Ho et al. 2020, "simple" objective): for ``x0`` from the data,
``t ~ U{0..T-1}``, ``eps ~ N(0, I)``, ``x_t = scheduler.add_noise(x0, eps, t)``,
minimise ``|| eps - eps_theta(x_t, t) ||^2``. The shipped weights are an exponential
moving average (EMA) of the trained ones.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import data, zoo

__all__ = ["DATASETS", "DOMAINS", "training_data", "TrainResult", "train_diffusion", "train_text_to_image",
           "train_classifier", "train_clip", "train_gan",
           "accuracy", "build", "main"]

DATASETS = ("handwritten", "handwritten-rare", "typeset-digits", "typeset-letters", "digits-mixed", "digits-domain",
            "digits-captioned", "toy-moons", "toy-ring")

#: Labels of the ``"digits-domain"`` data set (and of the domain classifier's outputs).
DOMAINS = ("handwritten", "typeset")


def training_data(dataset: str, split: str = "train") -> data.ImageData:
    """The images a zoo model is trained on.

    ``"handwritten-rare"`` = handwritten digits with :data:`dpmlatent.data.RARE_CLASS` cut to 2%
    (:func:`dpmlatent.data.rare_class_digits`); ``"digits-mixed"`` = handwritten + typeset digits labelled by digit; ``"digits-domain"`` =
    the same images labelled by domain (0 handwritten, 1 typeset, see :data:`DOMAINS`);
    ``"digits-captioned"`` = handwritten + typeset digits with captions
    (:func:`dpmlatent.text.captioned_digits`, returned as a ``CaptionedData``);
    ``"toy-*"`` = 2-D points as ``(N, 2, 1, 1)`` images, test split from another seed.
    """
    if dataset == "handwritten":
        return data.handwritten_digits(split)
    if dataset == "handwritten-rare":
        return data.rare_class_digits(split)
    if dataset == "typeset-digits":
        return data.typeset_digits(split)
    if dataset == "typeset-letters":
        return data.typeset_letters(split)
    if dataset == "digits-captioned":
        from .text import captioned_digits

        return captioned_digits(split)
    if dataset in ("digits-mixed", "digits-domain"):
        a, b = data.handwritten_digits(split), data.typeset_digits(split)
        if dataset == "digits-mixed":
            labels = torch.cat([a.labels, b.labels])
        else:
            labels = torch.cat([torch.zeros_like(a.labels), torch.ones_like(b.labels)])
        return data.ImageData(torch.cat([a.images, b.images]), labels, a.styles + b.styles)
    if dataset in ("toy-moons", "toy-ring"):
        data._check_split(split)
        seed = {"train": 0, "test": 1, "all": 2}[split]
        pts = data.toy_2d(dataset.removeprefix("toy-"), 4000 if split == "train" else 1000, seed=seed)
        return data.ImageData(pts[:, :, None, None], torch.zeros(len(pts), dtype=torch.int64),
                              ("toy",) * len(pts))
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


@dataclasses.dataclass
class TrainResult:
    """``model``: the trained (EMA) model in eval mode; ``losses``: loss per step."""

    model: torch.nn.Module
    losses: list[float]


def _check_steps(steps: int, batch_size: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def train_diffusion(unet, scheduler, images: torch.Tensor, *, steps: int,
                    batch_size: int = 128, lr: float = 2e-4, ema_decay: float = 0.999,
                    seed: int = 0, progress: bool = True) -> TrainResult:
    """Train ``unet`` (in place) to predict the noise added by ``scheduler.add_noise``.

    Args:
        unet: a diffusers ``UNet2DModel``; training runs on its device.
        scheduler: a diffusers scheduler with ``add_noise`` and ``num_train_timesteps``;
            only epsilon-prediction is supported here.
        images: ``(N, C, H, W)`` training images in ``[-1, 1]``.
        steps: optimiser steps; batch_size: images per step; lr: AdamW learning rate.
        ema_decay: decay of the weight average that is returned, in ``[0, 1)``.
        seed: seeds batches, timesteps and noise.
        progress: tqdm bar with the running loss.

    Returns:
        :class:`TrainResult` with the EMA copy of the UNet and the per-step losses.
    """
    _check_steps(steps, batch_size)
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError("train_diffusion trains epsilon-prediction models only; got "
                         f"prediction_type={scheduler.config.prediction_type!r}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    device = unet.device
    gen = torch.Generator().manual_seed(seed)
    images = images.to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    unet.train()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x0 = images[idx.to(device)]                                           # (B, C, H, W)
        t = torch.randint(scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = scheduler.add_noise(x0, eps, t.to(device))
        loss = F.mse_loss(unet(xt, t.to(device)).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1.0 - ema_decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    unet.eval()
    return TrainResult(ema, losses)


def train_text_to_image(pipe, captioned, *, steps: int, batch_size: int = 128, lr: float = 2e-4,
                        ema_decay: float = 0.999, p_uncond: float = 0.1, seed: int = 0,
                        progress: bool = True) -> TrainResult:
    """Train a :class:`~dpmlatent.text_to_image.PixelTextToImagePipeline`'s UNet and text encoder
    together (in place) on captioned images, with caption dropout for classifier-free guidance.

    Each example's caption is replaced by the empty prompt ``""`` with probability ``p_uncond``,
    so the same network learns ``eps(x, t, c)`` and ``eps(x, t, c_0)``. Loss and noise as in
    :func:`train_diffusion`.

    Args:
        pipe: the pipeline to train; training runs on its UNet's device.
        captioned: :class:`~dpmlatent.text.CaptionedData` (``images``, ``captions``).
        p_uncond: caption-dropout probability, in [0, 1).

    Returns:
        :class:`TrainResult` whose ``model`` is a new pipeline holding the EMA weights.
    """
    _check_steps(steps, batch_size)
    if not 0.0 <= p_uncond < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise ValueError("train_text_to_image trains epsilon-prediction models only")
    unet, text_encoder, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    device = unet.device
    gen = torch.Generator().manual_seed(seed)
    ids = tok(list(captioned.captions), padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids                        # (N, L)
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    images = captioned.images.to(device)
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_text = copy.deepcopy(text_encoder).eval().requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    unet.train()
    text_encoder.train()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        drop = torch.rand(batch_size, generator=gen) < p_uncond
        batch_ids = torch.where(drop[:, None], empty, ids[idx])
        x0 = images[idx.to(device)]
        t = torch.randint(pipe.scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = pipe.scheduler.add_noise(x0, eps, t.to(device))
        cond = text_encoder(batch_ids.to(device))[0]
        loss = F.mse_loss(unet(xt, t.to(device), encoder_hidden_states=cond).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema_params, params):
                p_ema.lerp_(p, 1.0 - ema_decay)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    unet.eval()
    text_encoder.eval()
    return TrainResult(type(pipe)(ema_unet, ema_text, tok, pipe.scheduler), losses)


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by -1..1 pixels (background -1 fills the border)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def train_classifier(model, train: data.ImageData, *, steps: int, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0, progress: bool = True) -> TrainResult:
    """Cross-entropy training of a classifier, with +-1 pixel shift augmentation."""
    _check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(train.labels), (batch_size,), generator=gen)
        x = _shift(train.images[idx], gen).to(device)
        loss = F.cross_entropy(model(x), train.labels[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    return TrainResult(model.eval(), losses)


def train_clip(model, tokenizer, captioned, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
               seed: int = 0, progress: bool = True) -> TrainResult:
    """Contrastive training of an open_clip model (in place) on captioned images
    (:func:`dpmlatent.clip.contrastive_loss`: pairs with equal captions are positives), with +-1 pixel
    shift augmentation, AdamW and a cosine learning rate; ``logit_scale`` is clamped to ln 100 as in CLIP.

    Args:
        model, tokenizer: from :func:`dpmlatent.clip.make_clip` (any open_clip CLIP works).
        captioned: :class:`~dpmlatent.text.CaptionedData`.
    """
    from .clip import contrastive_loss
    from .energies import clip_embed_images

    _check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    tokens = tokenizer(list(captioned.captions))                                   # (N, L)
    caption_id = {c: i for i, c in enumerate(sorted(set(captioned.captions)))}
    ids = torch.tensor([caption_id[c] for c in captioned.captions])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        x = _shift(captioned.images[idx], gen).to(device)
        img = clip_embed_images(model, x)
        txt = F.normalize(model.encode_text(tokens[idx].to(device)), dim=-1)
        same = (ids[idx][:, None] == ids[idx][None, :]).to(device)
        loss = contrastive_loss(img, txt, model.logit_scale, same)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", refresh=False)
    return TrainResult(model.eval(), losses)


def train_gan(generator, discriminator, images: torch.Tensor, *, steps: int, batch_size: int = 128,
              lr: float = 2e-4, seed: int = 0, progress: bool = True) -> TrainResult:
    """Train a GAN (in place) with the non-saturating loss (Goodfellow et al. 2014):

    ``L_D = E[softplus(-D(x))] + E[softplus(D(G(z)))]``, ``L_G = E[softplus(-D(G(z)))]``, one D step
    and one G step per iteration, Adam(lr, betas 0.5, 0.999) as in DCGAN. ``losses`` records ``L_D``.

    Returns:
        :class:`TrainResult` whose ``model`` is the generator, in eval mode (BatchNorm running statistics).
    """
    _check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    images = images.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    generator.train()
    discriminator.train()
    losses = []
    bar = tqdm(range(steps), desc="training", disable=not progress)
    for _ in bar:
        real = images[torch.randint(len(images), (batch_size,), generator=gen).to(device)]
        fake = generator(torch.randn(batch_size, generator.config.latent_dim, generator=gen).to(device))
        loss_d = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-discriminator(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        losses.append(loss_d.item())
        bar.set_postfix(d_loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}", refresh=False)
    discriminator.eval()
    return TrainResult(generator.eval(), losses)


@torch.no_grad()
def accuracy(model, test: data.ImageData) -> float:
    """Fraction of ``test`` images whose arg-max label is right."""
    pred = model(test.images.to(next(model.parameters()).device)).argmax(1).cpu()
    return (pred == test.labels).float().mean().item()


def _config_and_weights_writer(config, model):
    """``write(folder)`` for :func:`zoo.save_checkpoint`: ``config.json`` (a dataclass) + ``model.safetensors``."""
    from safetensors.torch import save_file

    def write(folder):
        (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    return write


def build(name: str, *, steps: int | None = None, root=None, progress: bool = True):
    """Train zoo entry ``name`` from scratch with its seed and write its checkpoint."""
    entry = zoo.ZOO.get(name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; the zoo has {zoo.names()}")
    steps = entry.steps if steps is None else steps
    train = training_data(entry.dataset, "train")
    start = time.perf_counter()
    info = {"seed": entry.seed, "steps": steps, "dataset": entry.dataset,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if entry.kind in ("diffusion", "diffusion-2d"):
        from diffusers import DDPMPipeline

        scheduler = zoo.make_scheduler()
        result = train_diffusion(zoo.make_unet(entry.seed, entry.dataset), scheduler, train.images,
                                 steps=steps, seed=entry.seed, progress=progress)
        write = DDPMPipeline(unet=result.model, scheduler=scheduler).save_pretrained
    elif entry.kind == "gan":
        from .gan import Discriminator, GANConfig, Generator

        torch.manual_seed(entry.seed)
        config = GANConfig()
        result = train_gan(Generator(config), Discriminator(config), train.images, steps=steps, seed=entry.seed,
                           progress=progress)

        write = _config_and_weights_writer(config, result.model)
    elif entry.kind == "clip":
        from safetensors.torch import save_file

        from .clip import make_clip, write_config, zero_shot_accuracy

        model, tokenizer = make_clip(entry.seed)
        result = train_clip(model, tokenizer, train, steps=steps, seed=entry.seed, progress=progress)
        result.model.half().float()              # measure the weights as stored (float16: 3.4 MB, not 6.8)
        info["stored_dtype"] = "float16"
        info["zero_shot_test_accuracy"] = {k: round(v, 4) for k, v in zero_shot_accuracy(
            result.model, tokenizer, training_data(entry.dataset, "test")).items()}

        def write(folder):
            write_config(folder)
            save_file({k: v.half().contiguous() for k, v in result.model.state_dict().items()},
                      folder / "open_clip_model.safetensors")
    elif entry.kind == "text-to-image":
        from .text_to_image import make_pipeline

        result = train_text_to_image(make_pipeline(entry.seed), train, steps=steps, seed=entry.seed,
                                     progress=progress)
        info["stored_dtype"] = "float16"  # halves the files (UNet 1.7M parameters: 3.2 MB)
        write = result.model.to(dtype=torch.float16).save_pretrained
    else:
        from .classifier import ClassifierConfig, DigitClassifier

        torch.manual_seed(entry.seed)
        config = ClassifierConfig(num_classes=int(train.labels.max()) + 1, **dict(entry.config))
        result = train_classifier(DigitClassifier(config), train, steps=steps, seed=entry.seed,
                                  progress=progress)
        info["test_accuracy"] = round(accuracy(result.model, training_data(entry.dataset, "test")), 4)

        write = _config_and_weights_writer(config, result.model)
    info["final_loss_mean_last_100"] = round(sum(result.losses[-100:]) / min(100, steps), 5)
    info["train_seconds"] = round(time.perf_counter() - start, 1)
    return zoo.save_checkpoint(name, write, info, root)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dpmlatent.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=zoo.names())
    parser.add_argument("--steps", type=int, default=None, help="override the entry's steps")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--root", default=None, help="checkpoint folder (default: checkpoints/)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = build(args.name, steps=args.steps, root=args.root)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
