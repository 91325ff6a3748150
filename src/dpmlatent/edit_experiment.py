"""Measuring text-guided edits of held-out digits (chapter 5 and ``benchmarks/edit_quality.py``).

Three kinds of edit, each from the caption that describes the input to another caption:

* ``"digit"``: "a handwritten three" -> "a handwritten eight" (:data:`DIGIT_PAIRS`); success = the
  digit classifier reads the *target* digit;
* ``"domain"``: "a handwritten three" -> "a typeset three"; success = the domain classifier says
  typeset *and* the digit is kept;
* ``"weight"``: "a thin handwritten three" -> "a bold handwritten three" (thin inputs only);
  success = the digit is kept and the edit *is bold* by the rule that words the captions: its ink
  exceeds the upper third of its digit class among the held-out handwritten digits
  (:func:`dpmlatent.text.stroke_weight_cutoffs`; ``EditTask.bold_ink``). The inputs are thin, so an
  exact reconstruction scores 0, and a reconstruction that only adds a little ink scores about 0
  too; "more ink than the input" would reward any change. The mean ink ratio is reported beside it.

Every edit is also scored for faithfulness (PSNR, SSIM to the input), so methods can be compared
on the same trade-off as the translations of chapter 4, and, given an open_clip model (the zoo's
``clip-digits``), by the two CLIP scores of the paper's editing table: the CLIP score to the target
prompt and the directional CLIP similarity (:func:`dpmlatent.metrics.clip_score`,
:func:`dpmlatent.metrics.clip_direction`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from . import metrics
from .edit import cycle_edit
from .encoder import METHOD_ENCODER
from .reporting import Column, Table, share_column
from .text import caption

__all__ = ["KINDS", "DIGIT_PAIRS", "EditTask", "edit_task", "EditRow", "edit_scores", "evaluate_edit", "edit_sweep",
           "EDIT_ETA", "matched_edit", "matched_asyrp",
           "SCORES", "best_success", "select_by_clip", "PSNR_EXACT", "format_edit_table"]

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
    bold_ink: torch.Tensor | None = None   # "weight": per input, the ink above which its class reads as bold


def edit_task(kind: str, *, num_images: int = 64, seed: int = 0, device=None, dtype: torch.dtype | None = None) -> EditTask:
    """Held-out handwritten digits (test split, a seeded permutation) and the prompts of ``kind``;
    the images on ``device`` in ``dtype`` (default: the data's float32)."""
    from .text import captioned_digits, stroke_weight_cutoffs

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
    bold = None
    if kind == "weight":                      # the cutoffs that labelled these inputs "thin" (held-out handwritten)
        hw = data.domains == 0
        cut = stroke_weight_cutoffs(data.images[hw], data.labels[hw])
        bold = torch.tensor([cut[int(y)][1] for y in labels], dtype=torch.float64)
    return EditTask(kind, data.images[idx].to(device=device, dtype=dtype), labels, src, tgt, targets, domain, bold)


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
    clip_score: float = math.nan      # mean cos(edit, target prompt); nan when scored without CLIP
    clip_direction: float = math.nan  # mean directional CLIP similarity; nan when scored without CLIP
    num_images: int | None = None     # how many edits the row averages (sets the printed precision)

    #: The 0/1 scores a row holds as shares of its edits.
    SHARES = ("success", "target_digit", "target_domain")

    def count(self, score: str) -> int:
        """How many of the row's ``num_images`` edits have the 0/1 ``score`` (one of :data:`SHARES`)."""
        if score not in self.SHARES:
            raise ValueError(f"score must be one of {self.SHARES}, got {score!r}")
        if self.num_images is None:
            raise ValueError(f"row {self.method!r} has no num_images; build it with evaluate_edit")
        return round(getattr(self, score) * self.num_images)

    def share_interval(self, score: str, *, level: float = 0.95):
        """The Wilson interval (:func:`dpmlatent.evidence.wilson_interval`) of the share of edits with
        the 0/1 ``score`` (one of :data:`SHARES`)."""
        from .evidence import wilson_interval

        return wilson_interval(self.count(score), self.num_images, level=level)


def _check_clip(clip) -> tuple:
    if not (isinstance(clip, tuple) and len(clip) == 2):
        raise TypeError(f"clip must be an (open_clip model, tokenizer) pair, got {type(clip).__name__}")
    return clip


def edit_scores(task: EditTask, edited: torch.Tensor, *, digit_classifier, domain_classifier,
                clip=None) -> dict[str, torch.Tensor]:
    """Per-edit scores of ``edited`` (``(N, 1, 8, 8)``, the edits of ``task.images``): a dict of
    float64 ``(N,)`` tensors on the CPU: ``success`` (0/1, per ``task.kind``, see the module
    docstring), ``target_digit`` and ``target_domain`` (0/1), ``ink``, ``psnr``, ``ssim``, and with
    ``clip`` (an ``(open_clip model, tokenizer)`` pair, ``zoo.load("clip-digits")``) ``clip_score``
    and ``clip_direction``."""
    if edited.shape != task.images.shape:
        raise ValueError(f"edited must have the inputs' shape {tuple(task.images.shape)}, got {tuple(edited.shape)}")
    probs, _ = metrics.classify(digit_classifier, edited)
    dom, _ = metrics.classify(domain_classifier, edited)
    digit_ok = probs.argmax(1) == task.target_labels
    domain_ok = dom.argmax(1) == task.target_domain
    ink = metrics.ink(edited).cpu().double()
    if task.kind == "digit":
        success = digit_ok
    elif task.kind == "domain":
        success = digit_ok & domain_ok
    else:
        if task.bold_ink is None:
            raise ValueError("a 'weight' task needs bold_ink (the per-input ink cutoff for 'bold'); build it with edit_task")
        success = digit_ok & (ink > task.bold_ink.cpu())
    out = {"success": success.double(), "target_digit": digit_ok.double(), "target_domain": domain_ok.double(),
           "ink": ink, "psnr": metrics.psnr(edited, task.images).double().cpu(),
           "ssim": metrics.ssim(edited, task.images).double().cpu()}
    if clip is not None:
        model, tokenizer = _check_clip(clip)
        out["clip_score"] = metrics.clip_score(model, tokenizer, edited, task.prompts).double().cpu()
        out["clip_direction"] = metrics.clip_direction(model, tokenizer, edited, task.images, task.prompts,
                                                       task.source_prompts).double().cpu()
    return out


def evaluate_edit(task: EditTask, edited: torch.Tensor, *, method: str, strength: float, guidance_scale: float,
                  digit_classifier, domain_classifier, clip=None) -> EditRow:
    """Score ``edited`` (``(N, 1, 8, 8)``, the edits of ``task.images``): the means of
    :func:`edit_scores`, and the ink ratio (mean ink of the edits / mean ink of the inputs)."""
    sc = edit_scores(task, edited, digit_classifier=digit_classifier, domain_classifier=domain_classifier, clip=clip)
    ratio = (sc["ink"].mean() / metrics.ink(task.images).double().mean().cpu()).item()
    mean = lambda k: sc[k].mean().item() if k in sc else math.nan
    return EditRow(task.kind, method, strength, guidance_scale, mean("success"), mean("target_digit"),
                   mean("target_domain"), ratio, mean("psnr"), mean("ssim"), mean("clip_score"),
                   mean("clip_direction"), num_images=len(edited))


EDIT_ETA = {"cyclediffusion": 0.1, "sdedit": 1.0, "ddim-inversion": 0.0, "edit-friendly": 1.0}


def matched_edit(pipe, task: EditTask, method: str, level: float, *, guidance_scale: float, digit_classifier,
                 domain_classifier, clip=None, seeds: tuple[int, ...] = (0, 1, 2), num_inference_steps: int = 50,
                 eta: float | None = None, start: float | None = None, label: str | None = None,
                 max_moves: int = 12, store=None):
    """Edit ``task`` with ``method`` at mean SSIM ``level`` (target guidance ``guidance_scale``, source
    guidance 1) and score every edit there: :func:`dpmlatent.matching.match_level` over the sampler's
    step count, each run from ``torch.Generator().manual_seed(seed)`` and scored by
    :func:`edit_scores`. ``eta=None`` takes :data:`EDIT_ETA` (CycleDiffusion's may be changed, e.g. 1
    for the variant; SDEdit's and DDIM inversion's are fixed). Returns a
    :class:`~dpmlatent.matching.MatchedPoint`. DDIM inversion is deterministic: it runs once per step
    count and stands for every seed. ``store`` (a :class:`~dpmlatent.run_store.RunStore`): each run's
    edited images are read from it (or recorded into it), keyed by the pipeline's UNet, text encoder
    and scheduler, the inputs and prompts, method, eta, guidance scale, steps and seed; the scores are
    computed from them as without a store."""
    from .matching import match_level, strength_of_steps
    from .run_store import check_store, run_images

    if method not in EDIT_ETA:
        raise ValueError(f"method must be one of {tuple(EDIT_ETA)}, got {method!r}")
    if eta is not None and method not in METHOD_ENCODER:
        raise ValueError(f"eta can only be set for the exact encoders (cyclediffusion, edit-friendly); {method} uses "
                         f"{EDIT_ETA[method]}")
    run_eta = EDIT_ETA[method] if eta is None else eta

    check_store(store)

    inputs = None if store is None else _edit_fingerprint(pipe, task)

    def run(k: int, seed: int) -> dict[str, torch.Tensor]:
        def make():
            return cycle_edit(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, task.images,
                              task.source_prompts, task.prompts, strength=strength_of_steps(k, num_inference_steps),
                              guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, eta=run_eta,
                              method=method, generator=torch.Generator().manual_seed(seed))

        key = ("edit", inputs, method, run_eta, float(guidance_scale), num_inference_steps, k, seed)
        out = run_images(store, key, make, task.images.device)
        return edit_scores(task, out, digit_classifier=digit_classifier, domain_classifier=domain_classifier, clip=clip)

    return match_level(run, level, num_inference_steps=num_inference_steps, seeds=seeds, start=start,
                       name=label or method, max_moves=max_moves, deterministic=method == "ddim-inversion")


def matched_asyrp(unet, scheduler, task: EditTask, z, directions: dict, level: float, *, t_edit: int, digit_classifier,
                  domain_classifier, clip=None, eta: float = 0.0, scale_step: float = 0.25, max_scale: float = 8.0,
                  start: float | None = None, label: str = "asyrp", max_moves: int = 12, feature_network=None,
                  space: str = "h"):
    """Edit ``task`` with learned h-space directions (Asyrp, :func:`dpmlatent.hspace.asyrp_decode`)
    at the scale where the mean SSIM to the inputs is ``level``, and score every edit there.

    The knob is the scale of ``delta_h`` on the grid ``k * scale_step`` (``k = 1 .. max_scale /
    scale_step``): :func:`dpmlatent.matching.match_level` brackets ``level`` between two neighbouring
    scales over all ``directions`` and interpolates, as :func:`matched_edit` does over a sampler's
    step count. Decoding is deterministic, so what varies between "seeds" is the direction:
    ``directions`` maps a training seed to its ``delta_h`` (a tensor, a list of per-step tensors, or a shift
    module such as :class:`dpmlatent.asyrp.DeltaBlock`).

    Args:
        z: the inputs' latent code (``ddim_invert`` for ``eta = 0``, or ``dpm_encode`` with ``eta``),
            or a dict with one code per training seed (e.g. DPM-Encoder codes from different encoder
            seeds, so the "seeds" cover the encoder's randomness too).
        t_edit: the editing interval, as in :func:`~dpmlatent.hspace.asyrp_decode`.
        start: the first guess, a scale in ``(0, max_scale]`` (default ``max_scale / 2``).
        feature_network: as in :func:`dpmlatent.directions.matched_direction` (features for an FD).
        space: ``"h"`` or ``"eps"`` (the directions shift the model's output), as in ``asyrp_decode``.

    Returns:
        :class:`~dpmlatent.matching.MatchedPoint` whose ``strength`` is the matched scale divided by
        ``max_scale``; the scale itself is ``strength * max_scale``.
    """
    from .directions import matched_direction
    from .hspace import asyrp_decode

    if not isinstance(directions, dict) or not directions:
        raise ValueError("directions must be a non-empty dict {training seed: delta_h}")
    if isinstance(z, dict) and set(z) != set(directions):
        raise ValueError(f"a dict z must hold one code per training seed {sorted(directions)}, got {sorted(z)}")
    codes = z if isinstance(z, dict) else dict.fromkeys(directions, z)

    def edit(pair, scale: float) -> torch.Tensor:                  # pair: (the seed's code, its delta_h)
        return asyrp_decode(unet, scheduler, pair[0], pair[1], t_edit=t_edit, eta=eta, scale=scale, space=space)

    return matched_direction(edit, task, {s: (codes[s], directions[s]) for s in directions}, level,
                             digit_classifier=digit_classifier, domain_classifier=domain_classifier, clip=clip,
                             scale_step=scale_step, max_scale=max_scale, start=start, label=label, max_moves=max_moves,
                             feature_network=feature_network)


def _edit_fingerprint(pipe, task: EditTask) -> str:
    """What an edit run depends on besides its settings: the pipeline's UNet, text encoder and scheduler,
    the inputs and both prompt lists (a :class:`~dpmlatent.run_store.RunStore` key part)."""
    from .run_store import fingerprint

    return fingerprint(pipe.unet, pipe.text_encoder, pipe.scheduler.config, task.images, task.source_prompts,
                       task.prompts)


def edit_sweep(pipe, task: EditTask, *, digit_classifier, domain_classifier, methods=("cyclediffusion", "sdedit",
               "ddim-inversion"), strengths=(0.5, 0.8), guidance_scales=(1.0, 3.0), num_inference_steps: int = 50,
               eta: float = 0.1, seed: int = 0, label: str | None = None, clip=None,
               progress: bool = True, store=None) -> tuple[list[EditRow], dict]:
    """Edit ``task`` with every method, strength and target guidance scale (source guidance 1, the
    paper's setting) from a fresh ``torch.Generator().manual_seed(seed)`` each; CycleDiffusion runs
    with ``eta``, SDEdit with eta = 1, DDIM inversion with eta = 0. ``label`` renames the method in
    the rows and keys of a single-method sweep (e.g. ``"cyclediffusion eta=1"`` for a variant);
    ``clip`` (an ``(open_clip model, tokenizer)`` pair) adds the CLIP columns. ``store`` (a
    :class:`~dpmlatent.run_store.RunStore`): each run's edits are read from it (or recorded into it),
    as in :func:`matched_edit`. Returns the rows and ``{(method or label, strength, guidance): edits}``."""
    from .run_store import check_store, run_images

    if label is not None and len(methods) != 1:
        raise ValueError(f"label names the rows of a single-method sweep; got {len(methods)} methods")
    check_store(store)
    runs = [(m, s, g) for m in methods for s in strengths for g in guidance_scales]
    rows, images = [], {}
    inputs = None if store is None else _edit_fingerprint(pipe, task)
    for method, strength, g in tqdm(runs, desc=f"{task.kind} edits", disable=not progress):
        run_eta = eta if method == "cyclediffusion" else EDIT_ETA[method]    # edit-friendly: eta 1, the paper's

        def make():
            return cycle_edit(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, task.images,
                              task.source_prompts, task.prompts, strength=strength, guidance_scale=g,
                              num_inference_steps=num_inference_steps, eta=run_eta, method=method,
                              generator=torch.Generator().manual_seed(seed))

        key = ("edit-sweep", inputs, method, run_eta, float(strength), float(g), num_inference_steps, seed)
        out = run_images(store, key, make, task.images.device)
        name = label or method
        images[(name, strength, g)] = out.cpu()
        rows.append(evaluate_edit(task, out, method=name, strength=strength, guidance_scale=g,
                                  digit_classifier=digit_classifier, domain_classifier=domain_classifier,
                                  clip=clip))
    return rows, images


#: The columns of :class:`EditRow` that :func:`best_success` can maximise (higher is better).
SCORES = ("success", "target_digit", "target_domain", "clip_score", "clip_direction")


def best_success(rows: list[EditRow], method: str, *, min_ssim: float, metric: str = "success") -> float:
    """The highest ``metric`` (default: the success rate) that ``method`` reaches among the rows
    with SSIM >= ``min_ssim``, over all its strengths and guidance scales (the edit a user would
    pick who may not lose more faithfulness than that); ``nan`` when no setting is that faithful.
    ``metric`` is one of :data:`SCORES`."""
    if not 0.0 <= min_ssim <= 1.0:
        raise ValueError(f"min_ssim must be in [0, 1], got {min_ssim}")
    if metric not in SCORES:
        raise ValueError(f"metric must be one of {SCORES}, got {metric!r}")
    mine = [r for r in rows if r.method == method]
    if not mine:
        raise ValueError(f"rows hold no edits of method {method!r}")
    if all(math.isnan(getattr(r, metric)) for r in mine):
        raise ValueError(f"no row of {method!r} has a {metric} (the CLIP columns need evaluate_edit(..., clip=...))")
    return max((getattr(r, metric) for r in mine if r.ssim >= min_ssim and not math.isnan(getattr(r, metric))),
               default=math.nan)


def select_by_clip(task: EditTask, candidates: list[torch.Tensor], *, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's best-of-many selection: for every input, the candidate edit with the highest
    CLIP score to its target prompt (:func:`dpmlatent.metrics.clip_score`).

    Args:
        task: the inputs and prompts that were edited.
        candidates: ``K`` tensors ``(N, 1, 8, 8)``, edits of ``task.images`` (e.g. one per setting
            or seed of one method).
        clip: an ``(open_clip model, tokenizer)`` pair.

    Returns:
        ``(selected (N, 1, 8, 8), index (N,))``, ``index`` in ``[0, K)`` naming each pick.
    """
    if not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError("candidates must be a non-empty list of edits of task.images")
    for c in candidates:
        if not isinstance(c, torch.Tensor) or c.shape != task.images.shape:
            raise ValueError(f"every candidate must have the inputs' shape {tuple(task.images.shape)}, "
                             f"got {tuple(getattr(c, 'shape', ())) or type(c).__name__}")
    _check_clip(clip)
    stack = torch.stack([c.to(task.images.device) for c in candidates])                  # (K, N, 1, 8, 8)
    scores = torch.stack([metrics.clip_score(*clip, c, task.prompts).to(stack.device) for c in stack])  # (K, N)
    index = scores.argmax(0)
    return stack[index, torch.arange(stack.shape[1], device=stack.device)], index


#: Mean PSNR (dB) from which an edit table prints the bound ``>100`` (see :func:`format_edit_table`).
PSNR_EXACT = 100.0


def _psnr_text(psnr: float) -> str:
    return f">{PSNR_EXACT:.0f}" if psnr >= PSNR_EXACT else f"{psnr:.1f}"


def format_edit_table(rows: list[EditRow]) -> Table:
    """Fixed-width text table of :class:`EditRow` s; the CLIP columns appear when a row has them, and
    the method column widens for names longer than 20 characters.

    The three shares (success, digit, domain) are printed at the precision their number of edits
    supports (:func:`dpmlatent.reporting.fmt_fraction`: 64 edits, 2 decimals). A mean PSNR of
    :data:`PSNR_EXACT` dB or more is printed as the bound ``>100``: it is an exact
    reconstruction (RMS error below 2e-5 on ``[-1, 1]``), and its digits would be floating-point
    noise that differs from CPU to CPU. Returns a :class:`~dpmlatent.reporting.Table` (HTML in a
    notebook, text in ``print``)."""
    with_clip = any(not math.isnan(r.clip_score) for r in rows)
    cols = [Column("edit", "<", 7), Column("method", "<", 20), Column("strength", ">"), Column("guidance", ">"),
            Column("success", ">"), Column("digit", ">", 6), Column("domain", ">"), Column("ink x", ">", 6),
            Column("PSNR", ">", 6), Column("SSIM", ">", 6)] + ([Column("CLIP", ">", 6), Column("dCLIP", ">", 6)] if with_clip else [])
    cells = []
    for r in rows:
        n = r.num_images
        cells.append([r.kind, r.method, f"{r.strength:.2f}", f"{r.guidance_scale:.1f}",
                      share_column(r.success, n, 0, name="success"), share_column(r.target_digit, n, 0, name="digit"),
                      share_column(r.target_domain, n, 0, name="domain"), f"{r.ink_ratio:.2f}", _psnr_text(r.psnr),
                      f"{r.ssim:.3f}"] + ([f"{r.clip_score:.3f}", f"{r.clip_direction:.3f}"] if with_clip else []))
    return Table(cols, cells)
