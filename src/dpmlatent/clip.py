"""A tiny CLIP for 8x8 digits, built from open_clip's own classes (the CLIP energy's default model).

Radford et al. (2021) train an image encoder ``f_img`` and a text encoder ``f_txt`` so that
matching image–caption pairs have a high cosine similarity. Ours is open_clip's ``CLIP`` class
from a custom config (:data:`MODEL_CFG`: a 2-layer ViT on 2x2 patches of the 8x8 image, a 2-layer
text transformer over open_clip's bundled tokenizer, 32-dim embeddings), trained on the captioned
digits of :mod:`dpmlatent.text` ("a bold typeset seven").

The grammar has only 60 distinct captions, so a batch holds many images with the *same* caption;
CLIP's loss would push those apart as negatives. :func:`contrastive_loss` instead treats every
pair with equal captions as a positive (soft targets, both directions).

Shipped in open_clip's ``local-dir`` layout (``open_clip_config.json`` + ``open_clip_model.safetensors``),
so :func:`load_clip` loads it, or real open_clip weights saved the same way,
with ``open_clip.create_model("local-dir:...")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .fitting import TrainResult, check_steps, fit as fit_loop

__all__ = ["MODEL_CFG", "PREPROCESS_CFG", "write_config", "make_clip", "load_clip", "check_images", "clip_embed_images",
           "clip_embed_text", "contrastive_loss", "train_clip", "zero_shot_accuracy", "make", "fit", "save", "load"]

#: open_clip model config. The text tower's token embedding (49,408 x 32) holds most of the
#: 1.7M parameters; stored in float16 the checkpoint is about 3.4 MB.
MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 8, "layers": 2, "width": 64, "patch_size": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
#: Images in [-1, 1] become [0, 1] in the energy's preprocessing; this maps them back to [-1, 1].
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def write_config(folder: str | Path) -> None:
    """Write ``open_clip_config.json`` (:data:`MODEL_CFG`, :data:`PREPROCESS_CFG`) into ``folder``."""
    cfg = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (Path(folder) / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip warns (root logger) that a config folder has no weights: expected for a fresh model."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def make_clip(seed: int = 0):
    """A freshly initialised tiny CLIP and its tokenizer, through ``open_clip.create_model`` /
    ``open_clip.get_tokenizer`` on a config folder (weights drawn from ``seed``)."""
    import open_clip

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as folder, _quiet_open_clip():
        write_config(folder)
        name = f"local-dir:{folder}"
        model, tokenizer = open_clip.create_model(name), open_clip.get_tokenizer(name)
    return model, tokenizer


def check_images(x: torch.Tensor) -> None:
    """``ValueError`` unless ``x`` is a ``(B, C, H, W)`` tensor (the images energies and embeddings take)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")


def load_clip(name_or_path: str | os.PathLike, *, device=None):
    """An open_clip model and its tokenizer from a local folder (``open_clip_config.json`` + weights,
    open_clip's ``local-dir:`` layout: the zoo's ``clip-digits``, or real weights saved there) or any
    name ``open_clip.create_model`` accepts (``"hf-hub:..."`` downloads). Returns ``(model, tokenizer)``
    in eval mode."""
    import open_clip

    if isinstance(name_or_path, (str, os.PathLike)) and Path(name_or_path).is_dir():
        name = f"local-dir:{Path(name_or_path)}"
    elif isinstance(name_or_path, str):
        name = name_or_path
    else:
        raise TypeError(f"name_or_path must be a string or path, got {type(name_or_path).__name__}")
    model = open_clip.create_model(name, device=device or "cpu")
    return model.eval(), open_clip.get_tokenizer(name)


def clip_embed_images(model, x: torch.Tensor) -> torch.Tensor:
    """Unit-norm open_clip image embeddings ``(B, D)`` of images in ``[-1, 1]``.

    Differentiable preprocessing: to ``[0, 1]``, grey to 3 channels, bilinear resize to the
    model's ``visual.image_size``, normalisation with the model's own mean and std
    (``visual.preprocess_cfg``)."""
    check_images(x)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")
    size = tuple(model.visual.image_size) if isinstance(model.visual.image_size, (tuple, list)) \
        else (model.visual.image_size,) * 2
    cfg = model.visual.preprocess_cfg
    img = (x + 1) / 2
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
    mean = torch.tensor(cfg["mean"], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    dtype = next(model.parameters()).dtype                        # float32 images into a float64 CLIP, or back
    return F.normalize(model.encode_image(((img - mean) / std).to(dtype)), dim=-1)


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty string or a non-empty list of non-empty strings")
    return list(prompts)


def clip_embed_text(model, tokenizer, prompts: str | list[str]) -> torch.Tensor:
    """Unit-norm open_clip text embeddings ``(P, D)`` of ``prompts`` (a string or a list of
    non-empty strings), on the model's device; differentiable in the model's weights only."""
    prompts = _check_prompts(prompts)
    device = next(model.parameters()).device
    return F.normalize(model.encode_text(tokenizer(prompts).to(device)), dim=-1)


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                     same: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with soft targets.

    ``logits = exp(logit_scale) * img @ txt.T`` for unit-norm embeddings ``(B, D)``; the target
    of row ``i`` is uniform over the ``j`` with ``same[i, j]`` (equal captions; the diagonal is
    always true), in both directions: ``(CE(logits, T) + CE(logits.T, T.T)) / 2``.
    """
    if same.shape != (len(image_emb), len(text_emb)) or not bool(same.diagonal().all()):
        raise ValueError("same must be a (B, B) boolean matrix with a true diagonal")
    logits = logit_scale.exp() * image_emb @ text_emb.T
    targets = same.to(logits.dtype)
    targets = targets / targets.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T))


def train_clip(model, tokenizer, captioned, *, steps: int, batch_size: int = 256, lr: float = 1e-3,
               seed: int = 0, progress: bool = True) -> TrainResult:
    """Contrastive training of an open_clip model (in place) on captioned images
    (:func:`contrastive_loss`: pairs with equal captions are positives), with +-1 pixel shift
    augmentation (:func:`dpmlatent.data.random_shift`), AdamW and a cosine learning rate;
    ``logit_scale`` is clamped to ln 100 as in CLIP.

    Args:
        model, tokenizer: from :func:`make_clip` (any open_clip CLIP works).
        captioned: :class:`~dpmlatent.text.CaptionedData`.
    """
    from .data import random_shift

    check_steps(steps, batch_size)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    tokens = tokenizer(list(captioned.captions))                                   # (N, L)
    caption_id = {c: i for i, c in enumerate(sorted(set(captioned.captions)))}
    ids = torch.tensor([caption_id[c] for c in captioned.captions])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        x = random_shift(captioned.images[idx], gen).to(device)
        img = clip_embed_images(model, x)
        txt = F.normalize(model.encode_text(tokens[idx].to(device)), dim=-1)
        same = (ids[idx][:, None] == ids[idx][None, :]).to(device)
        return contrastive_loss(img, txt, model.logit_scale, same)

    @torch.no_grad()
    def clamp() -> None:
        model.logit_scale.clamp_(0, math.log(100))

    losses, history = fit_loop(loss_fn, opt, steps=steps, lr_schedule=sched, after_step=clamp, progress=progress)
    return TrainResult(model.eval(), losses, history)


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, captioned) -> dict[str, float]:
    """Zero-shot classification of held-out captioned digits by prompt similarity.

    * ``"digit"``: argmax over the ten prompts "a <domain> <digit word>" of the image's own domain;
    * ``"domain"``: "a handwritten <digit>" vs "a typeset <digit>" for the image's own digit;
    * ``"weight"``: "a thin / a / a bold <domain> <digit>" for its own domain and digit.
    """
    from .text import DOMAINS, WEIGHTS, caption

    device = next(model.parameters()).device
    img = clip_embed_images(model, captioned.images.to(device))

    prompts = [caption(d, dom, w) for d in range(10) for dom in DOMAINS for w in WEIGHTS]
    txt = clip_embed_text(model, tokenizer, prompts)
    sims = (img @ txt.T).view(-1, 10, len(DOMAINS), len(WEIGHTS)).cpu()   # (N, digit, domain, weight)
    n = torch.arange(len(captioned))
    y, dom = captioned.labels.long(), captioned.domains.long()
    w = torch.tensor([WEIGHTS.index(v) for v in captioned.weights])
    regular = WEIGHTS.index("regular")
    hits = {"digit": sims[n, :, dom, regular].argmax(1) == y,          # ten digits, own domain
            "domain": sims[n, y, :, regular].argmax(1) == dom,         # two domains, own digit
            "weight": sims[n, y, dom, :].argmax(1) == w}               # three weights, own digit and domain
    return {k: v.double().mean().item() for k, v in hits.items()}


# --- zoo hooks (kind "clip") -------------------------------------------------------------------

def make(entry, train):
    """:func:`make_clip` from ``entry.seed``: ``(model, tokenizer)``."""
    return make_clip(entry.seed)


def fit(pair, train, entry, *, steps: int, progress: bool = True) -> TrainResult:
    """:func:`train_clip` from ``entry.seed``; the weights are then rounded to float16 (the stored
    dtype: 3.4 MB, not 6.8) and the manifest gets the zero-shot accuracy measured on them."""
    from .train import training_data

    model, tokenizer = pair
    result = train_clip(model, tokenizer, train, steps=steps, seed=entry.seed, progress=progress)
    result.model.half().float()
    result.info["stored_dtype"] = "float16"
    result.info["zero_shot_test_accuracy"] = {k: round(v, 4) for k, v in zero_shot_accuracy(
        result.model, tokenizer, training_data(entry.dataset, "test")).items()}
    return result


def save(model, folder: Path) -> None:
    """open_clip's ``local-dir`` layout: ``open_clip_config.json`` + float16 ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    write_config(folder)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              Path(folder) / "open_clip_model.safetensors")


def load(folder: Path, *, device=None, dtype=None):
    """:func:`load_clip` on the folder: ``(model, tokenizer)``, computed in float32 unless ``dtype`` says otherwise."""
    model, tokenizer = load_clip(folder)
    return model.to(device=device, dtype=dtype).eval(), tokenizer
