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
so :func:`dpmlatent.energies.load_clip` loads it, or real open_clip weights saved the same way,
with ``open_clip.create_model("local-dir:...")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["MODEL_CFG", "PREPROCESS_CFG", "write_config", "make_clip", "contrastive_loss", "zero_shot_accuracy"]

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


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, captioned) -> dict[str, float]:
    """Zero-shot classification of held-out captioned digits by prompt similarity.

    * ``"digit"``: argmax over the ten prompts "a <domain> <digit word>" of the image's own domain;
    * ``"domain"``: "a handwritten <digit>" vs "a typeset <digit>" for the image's own digit;
    * ``"weight"``: "a thin / a / a bold <domain> <digit>" for its own domain and digit.
    """
    from .energies import clip_embed_images, clip_embed_text
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
