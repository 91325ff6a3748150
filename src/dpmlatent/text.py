"""Captions, a CLIP tokenizer built offline, and the tiny text encoder of the text-to-image model.

The zoo's text-to-image model (``t2i-digits``) is trained on our digits with captions from a
small grammar::

    caption = "a" [weight] domain digit          e.g. "a bold typeset seven"
    weight  = "thin" | "bold"                     (no word for regular strokes)
    domain  = "handwritten" | "typeset"
    digit   = "zero" | "one" | ... | "nine"

Typeset digits take their weight from the font (:data:`dpmlatent.data.FONTS`); handwritten
digits from their ink: per digit class, the lightest third is "thin" and the heaviest third
"bold".

The tokenizer is transformers' ``CLIPTokenizer`` over the byte-pair merges that open_clip ships
in its wheel (the first ``num_merges`` of them), so nothing is downloaded; the text encoder is a
``CLIPTextModel`` from a small config, trained from scratch together with the UNet.
"""

from __future__ import annotations

import torch

from . import data

__all__ = ["DIGIT_WORDS", "WEIGHTS", "DOMAINS", "caption", "stroke_weights", "CaptionedData",
           "captioned_digits", "build_tokenizer", "text_encoder_config", "encode_prompts"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WEIGHTS = ("thin", "regular", "bold")
DOMAINS = ("handwritten", "typeset")


def caption(digit: int, domain: str, weight: str = "regular") -> str:
    """The grammar's caption, e.g. ``caption(7, "typeset", "bold") == "a bold typeset seven"``."""
    if not isinstance(digit, int) or not 0 <= digit <= 9:
        raise ValueError(f"digit must be an integer in [0, 9], got {digit!r}")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {WEIGHTS}, got {weight!r}")
    adjective = "" if weight == "regular" else weight + " "
    return f"a {adjective}{domain} {DIGIT_WORDS[digit]}"


def stroke_weight_cutoffs(images: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[float, float]]:
    """Per digit class, the ink masses ``sum((x + 1) / 2)`` that split it into thirds: ``{digit: (lo,
    hi)}``; below ``lo`` an image is "thin", above ``hi`` "bold" (:func:`stroke_weights`)."""
    if images.ndim != 4 or labels.shape != (len(images),):
        raise ValueError(f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
                         f"and {tuple(labels.shape)}")
    from .metrics import ink as ink_of

    ink = ink_of(images)
    cut = {}
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().flatten()
        cut[int(k)] = tuple(torch.quantile(ink[idx], torch.tensor([1 / 3, 2 / 3], dtype=ink.dtype)).tolist())
    return cut


def stroke_weights(images: torch.Tensor, labels: torch.Tensor) -> list[str]:
    """``"thin"``, ``"regular"`` or ``"bold"`` per image: the ink mass ``sum((x + 1) / 2)`` in the
    lower, middle or upper third of its digit class (:func:`stroke_weight_cutoffs`)."""
    from .metrics import ink as ink_of

    cut = stroke_weight_cutoffs(images, labels)
    ink = ink_of(images)
    out = []
    for i in range(len(images)):
        lo, hi = cut[int(labels[i])]
        out.append("thin" if ink[i] < lo else "bold" if ink[i] > hi else "regular")
    return out


class CaptionedData:
    """Images ``(N, 1, 8, 8)`` in ``[-1, 1]`` with ``labels`` (digit), ``domains`` (0 handwritten,
    1 typeset), ``weights`` (:data:`WEIGHTS`) and the grammar's ``captions``."""

    def __init__(self, images, labels, domains, weights):
        self.images, self.labels, self.domains, self.weights = images, labels, domains, list(weights)
        self.captions = [caption(int(y), DOMAINS[int(d)], w) for y, d, w in zip(labels, domains, weights)]

    def __len__(self) -> int:
        return len(self.labels)


def captioned_digits(split: str = "train") -> CaptionedData:
    """Handwritten + typeset digits of ``split`` with their captions."""
    hw, ts = data.handwritten_digits(split), data.typeset_digits(split)
    weights = stroke_weights(hw.images, hw.labels) + [s.rsplit("-", 1)[1] for s in ts.styles]
    domains = torch.cat([torch.zeros_like(hw.labels), torch.ones_like(ts.labels)])
    return CaptionedData(torch.cat([hw.images, ts.images]), torch.cat([hw.labels, ts.labels]), domains, weights)


def build_tokenizer(num_merges: int = 3000, model_max_length: int = 16):
    """A ``CLIPTokenizer`` built offline from open_clip's BPE merges (no download).

    Vocabulary, as in CLIP: the 256 byte symbols, the same with ``</w>``, one token per merge (the
    first ``num_merges``), then ``<|startoftext|>`` and ``<|endoftext|>`` (also the padding).
    """
    import gzip

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    if not isinstance(num_merges, int) or not 1 <= num_merges <= 48894:
        raise ValueError(f"num_merges must be an integer in [1, 48894], got {num_merges!r}")
    if not isinstance(model_max_length, int) or model_max_length < 4:
        raise ValueError(f"model_max_length must be an integer >= 4, got {model_max_length!r}")
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:1 + num_merges]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=merges,
                         model_max_length=model_max_length)


def text_encoder_config(tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4):
    """A small ``CLIPTextConfig`` matching ``tokenizer`` (vocabulary, length, special tokens)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=tokenizer.model_max_length,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def encode_prompts(text_encoder, tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token states ``(B, L, D)`` of ``prompts`` (padded to the tokenizer's length), on the text
    encoder's device and dtype. ``""`` is the unconditional prompt of classifier-free guidance."""
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(text_encoder.device))[0]
