"""Energies on images for plug-and-play guidance (:mod:`dpmlatent.guidance`).

An energy maps images ``(B, C, H, W)`` in ``[-1, 1]`` to ``(B,)``; low energy = wanted. Every
energy here is differentiable in the images and runs on their device and dtype.

* :func:`classifier_energy` — ``E(x) = -log p(y | x)`` of a classifier (the zoo's digit classifier).
* :func:`clip_energy` — ``E(x) = 1 - cos(f_img(x), f_txt(prompt))`` of any **open_clip** model
  (the zoo's tiny ``clip-digits``, or real open_clip weights loaded with :func:`dpmlatent.clip.load_clip`).
* :func:`identity_energy` — ``E(x) = 1 - cos(e(x), mean_k e(x_ref,k))`` of an identity embedding
  (:class:`dpmlatent.identity.IdentityEmbedding`; the paper's ArcFace energy at the book's scale).
* :func:`combine` — ``E(x) = sum_i w_i E_i(x)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .clip import check_images

__all__ = ["classifier_energy", "clip_energy", "identity_energy", "combine"]


def classifier_energy(classifier: torch.nn.Module, target) -> Callable[[torch.Tensor], torch.Tensor]:
    """``E(x) = -log p(target | x)`` under ``classifier`` (logits ``(B, K)``).

    Args:
        classifier: maps images to logits, e.g. ``zoo.load("digit-classifier")`` (``(B, 1, 8, 8)``).
        target: a class index in ``[0, K)`` for every image, or a ``(B,)`` tensor of indices.
    """
    num_classes = getattr(getattr(classifier, "config", None), "num_classes", None)

    def check_class(y: int) -> None:
        if num_classes is not None and not 0 <= y < num_classes:
            raise ValueError(f"target must be a class index in [0, {num_classes - 1}], got {y}")

    if isinstance(target, torch.Tensor):
        if target.ndim != 1 or target.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"target must be an int or a (B,) integer tensor, got {target.dtype} {tuple(target.shape)}")
        for y in target.tolist():
            check_class(y)
    elif isinstance(target, int) and not isinstance(target, bool):
        check_class(target)
    else:
        raise TypeError(f"target must be an int or a (B,) integer tensor, got {type(target).__name__}")

    def energy(x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        logp = F.log_softmax(classifier(x), dim=1)
        if isinstance(target, int):
            return -logp[:, target]
        if len(target) != len(x):
            raise ValueError(f"target holds {len(target)} classes for {len(x)} images")
        return -logp.gather(1, target.to(x.device).view(-1, 1)).squeeze(1)
    return energy


def clip_energy(model, tokenizer, prompts: str | list[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``E(x) = 1 - cos(f_img(x), f_txt(prompt))`` with an open_clip model (Radford et al. 2021).

    Args:
        model, tokenizer: from :func:`dpmlatent.clip.load_clip` (or ``zoo.load("clip-digits")``).
        prompts: one prompt for every image, or one per image.

    The text embeddings are computed once, here; the energy lies in ``[0, 2]``.
    """
    from .clip import clip_embed_images, clip_embed_text

    with torch.no_grad():
        text = clip_embed_text(model, tokenizer, prompts)

    def energy(x: torch.Tensor) -> torch.Tensor:
        img = clip_embed_images(model, x)
        if len(text) not in (1, len(img)):
            raise ValueError(f"{len(text)} prompts for {len(img)} images: give one prompt, or one per image")
        return 1 - (img * text.to(img.dtype)).sum(-1)
    return energy


def identity_energy(embed: torch.nn.Module, references) -> Callable[[torch.Tensor], torch.Tensor]:
    """``E(x) = 1 - cos(e(x), c)`` with ``c`` the normalised mean embedding of ``references``: 0 for
    an image embedded exactly like the reference individual, up to 2 for the opposite direction.

    Args:
        embed: maps images ``(B, 1, R, R)`` to unit vectors ``(B, D)``
            (:class:`dpmlatent.identity.IdentityEmbedding`).
        references: ``(K, 1, R, R)`` images of one individual, ``K >= 1``; or a list of ``T`` such
            tensors, one individual each, to guide ``T`` targets in one batch: image ``b`` is then
            compared with target ``b % T`` (the batch size must be a multiple of ``T``).
    """
    sets = references if isinstance(references, (list, tuple)) else [references]
    for r in sets:
        if not isinstance(r, torch.Tensor) or r.ndim != 4 or not len(r):
            raise ValueError(f"references must be (K, C, H, W) images with K >= 1 (or a list of them), got "
                             f"{tuple(getattr(r, 'shape', ())) or type(r).__name__}")
    if not sets:
        raise ValueError("references must name at least one individual")
    with torch.no_grad():
        centres = torch.stack([F.normalize(embed(r).mean(0), dim=0) for r in sets])      # (T, D)

    def energy(x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        if len(x) % len(centres):
            raise ValueError(f"the batch ({len(x)}) must be a multiple of the number of targets ({len(centres)})")
        c = centres.to(x.device, x.dtype).repeat(len(x) // len(centres), 1)
        return 1.0 - (embed(x) * c).sum(1)
    return energy


def combine(*terms: tuple[float, Callable]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``E(x) = sum_i w_i E_i(x)`` from ``(w_i, E_i)`` pairs, e.g.
    ``combine((1.0, classifier_energy(clf, 7)), (5.0, clip_energy(clip, tok, "a bold handwritten seven")))``."""
    if not terms:
        raise ValueError("combine needs at least one (weight, energy) pair")
    for term in terms:
        if not (isinstance(term, tuple) and len(term) == 2 and isinstance(term[0], (int, float))
                and callable(term[1])):
            raise TypeError(f"each term must be a (weight, energy) pair, got {term!r}")

    def energy(x: torch.Tensor) -> torch.Tensor:
        return sum(w * e(x) for w, e in terms)
    return energy
