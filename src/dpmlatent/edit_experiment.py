"""Measuring text-guided edits of held-out digits (chapter 5 and ``benchmarks/edit_quality.py``).

Three kinds of edit, each from the caption that describes the input to another caption:

* ``"digit"``: "a handwritten three" -> "a handwritten eight" (:data:`DIGIT_PAIRS`); success = the
  digit classifier reads the *target* digit;
* ``"domain"``: "a handwritten three" -> "a typeset three"; success = the domain classifier says
  typeset *and* the digit is kept;
* ``"weight"``: "a thin handwritten three" -> "a bold handwritten three" (thin inputs only);
  success = the digit is kept and the ink grows (reported as the mean ink ratio).

Every edit is also scored for faithfulness (PSNR, SSIM to the input), so methods can be compared
on the same trade-off as the translations of chapter 4.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from . import metrics
from .edit import cycle_edit
from .text import caption

__all__ = ["KINDS", "DIGIT_PAIRS", "EditTask", "edit_task", "EditRow", "evaluate_edit", "edit_sweep",
           "best_success", "format_edit_table"]

KINDS = ("digit", "domain", "weight")
#: Target digit of each source digit in the "digit" edits: pairs that share strokes.
DIGIT_PAIRS = {0: 8, 1: 7, 2: 3, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}


@dataclasses.dataclass
class EditTask:
    """Inputs ``images`` ``(N, 1, 8, 8)`` with digit ``labels``, the two prompt lists, and what
    a successful edit reads as (``target_labels``, ``target_domain``: 0 handwritten, 1 typeset)."""

    kind: str
    images: torch.Tensor
    labels: torch.Tensor
    source_prompts: list[str]
    prompts: list[str]
    target_labels: torch.Tensor
    target_domain: int


def edit_task(kind: str, *, num_images: int = 64, seed: int = 0, device=None) -> EditTask:
    """Held-out handwritten digits (test split, a seeded permutation) and the prompts of ``kind``."""
    from .text import captioned_digits

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data = captioned_digits("test")
    pool = [i for i in range(len(data)) if int(data.domains[i]) == 0
            and (kind != "weight" or data.weights[i] == "thin")]
    if not isinstance(num_images, int) or not 1 <= num_images <= len(pool):
        raise ValueError(f"num_images must be an integer in [1, {len(pool)}] for {kind!r} edits, got {num_images!r}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:num_images]
    idx = torch.tensor(pool)[order]
    labels, weights = data.labels[idx], [data.weights[i] for i in idx.tolist()]
    src = [caption(int(y), "handwritten", w) for y, w in zip(labels, weights)]   # "weight": all "thin"
    if kind == "digit":
        targets, domain = torch.tensor([DIGIT_PAIRS[int(y)] for y in labels]), 0
        tgt = [caption(int(t), "handwritten", w) for t, w in zip(targets, weights)]
    elif kind == "domain":
        targets, domain = labels.clone(), 1
        tgt = [caption(int(y), "typeset", w) for y, w in zip(labels, weights)]
    else:
        targets, domain = labels.clone(), 0
        tgt = [caption(int(y), "handwritten", "bold") for y in labels]
    return EditTask(kind, data.images[idx].to(device), labels, src, tgt, targets, domain)


@dataclasses.dataclass
class EditRow:
    """One line of an edit table."""

    kind: str
    method: str
    strength: float
    guidance_scale: float
    success: float      # see the module docstring, per kind
    target_digit: float  # digit classifier reads the target digit
    target_domain: float  # domain classifier reads the target domain
    ink_ratio: float    # mean ink of the edits / mean ink of the inputs
    psnr: float
    ssim: float


def evaluate_edit(task: EditTask, edited: torch.Tensor, *, method: str, strength: float, guidance_scale: float,
                  digit_classifier, domain_classifier) -> EditRow:
    """Score ``edited`` (``(N, 1, 8, 8)``, the edits of ``task.images``)."""
    if edited.shape != task.images.shape:
        raise ValueError(f"edited must have the inputs' shape {tuple(task.images.shape)}, got {tuple(edited.shape)}")
    probs, _ = metrics.classify(digit_classifier, edited)
    dom, _ = metrics.classify(domain_classifier, edited)
    digit_ok = probs.argmax(1) == task.target_labels
    domain_ok = dom.argmax(1) == task.target_domain
    ink = metrics.ink
    ratio = (ink(edited).mean() / ink(task.images).mean()).item()
    if task.kind == "digit":
        success = digit_ok
    elif task.kind == "domain":
        success = digit_ok & domain_ok
    else:
        success = digit_ok & (ink(edited).cpu() > ink(task.images).cpu())
    return EditRow(task.kind, method, strength, guidance_scale, success.double().mean().item(),
                   digit_ok.double().mean().item(), domain_ok.double().mean().item(), ratio,
                   metrics.psnr(edited, task.images).double().mean().item(),
                   metrics.ssim(edited, task.images).double().mean().item())


def edit_sweep(pipe, task: EditTask, *, digit_classifier, domain_classifier, methods=("cyclediffusion", "sdedit",
               "ddim-inversion"), strengths=(0.5, 0.8), guidance_scales=(1.0, 3.0), num_inference_steps: int = 50,
               eta: float = 0.1, seed: int = 0, label: str | None = None,
               progress: bool = True) -> tuple[list[EditRow], dict]:
    """Edit ``task`` with every method, strength and target guidance scale (source guidance 1, the
    paper's setting) from a fresh ``torch.Generator().manual_seed(seed)`` each; CycleDiffusion runs
    with ``eta``, SDEdit with eta = 1, DDIM inversion with eta = 0. ``label`` renames the method in
    the rows and keys of a single-method sweep (e.g. ``"cyclediffusion eta=1"`` for a variant).
    Returns the rows and ``{(method or label, strength, guidance): edits}``."""
    if label is not None and len(methods) != 1:
        raise ValueError(f"label names the rows of a single-method sweep; got {len(methods)} methods")
    runs = [(m, s, g) for m in methods for s in strengths for g in guidance_scales]
    rows, images = [], {}
    for method, strength, g in tqdm(runs, desc=f"{task.kind} edits", disable=not progress):
        run_eta = {"cyclediffusion": eta, "sdedit": 1.0, "ddim-inversion": 0.0}[method]
        out = cycle_edit(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, task.images,
                         task.source_prompts, task.prompts, strength=strength, guidance_scale=g,
                         num_inference_steps=num_inference_steps, eta=run_eta, method=method,
                         generator=torch.Generator().manual_seed(seed))
        name = label or method
        images[(name, strength, g)] = out.cpu()
        rows.append(evaluate_edit(task, out, method=name, strength=strength, guidance_scale=g,
                                  digit_classifier=digit_classifier, domain_classifier=domain_classifier))
    return rows, images


def best_success(rows: list[EditRow], method: str, *, min_ssim: float) -> float:
    """The highest success rate ``method`` reaches among the rows with SSIM >= ``min_ssim``, over
    all its strengths and guidance scales (the edit a user would pick who may not lose more
    faithfulness than that); ``nan`` when no setting is that faithful."""
    if not 0.0 <= min_ssim <= 1.0:
        raise ValueError(f"min_ssim must be in [0, 1], got {min_ssim}")
    if not any(r.method == method for r in rows):
        raise ValueError(f"rows hold no edits of method {method!r}")
    return max((r.success for r in rows if r.method == method and r.ssim >= min_ssim), default=math.nan)


def format_edit_table(rows: list[EditRow]) -> str:
    """Fixed-width text table of :class:`EditRow` s."""
    lines = [f"{'edit':<7} {'method':<20} {'strength':>8} {'guidance':>8} {'success':>7} {'digit':>6} "
             f"{'domain':>6} {'ink x':>6} {'PSNR':>6} {'SSIM':>6}"]
    for r in rows:
        lines.append(f"{r.kind:<7} {r.method:<20} {r.strength:>8.2f} {r.guidance_scale:>8.1f} {r.success:>7.3f} "
                     f"{r.target_digit:>6.3f} {r.target_domain:>6.3f} {r.ink_ratio:>6.2f} {r.psnr:>6.1f} {r.ssim:>6.3f}")
    return "\n".join(lines)
