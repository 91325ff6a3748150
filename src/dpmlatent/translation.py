"""Measuring unpaired translation: the experiment of chapter 4 and ``benchmarks/translation.py``.

Every method of :mod:`dpmlatent.cycle` translates the same held-out source images with the same
seed, at several strengths (the fraction of the noise schedule that is traversed), and each
result is scored on three axes:

* **class kept**: the digit classifier's label of the translation equals the source's label;
* **realism**: the domain classifier's mean probability that the translation belongs to the
  *target* domain, and the Frechet distance (FD) in digit-classifier feature space to real
  held-out images of the target domain;
* **faithfulness**: PSNR and SSIM of the translation to its source image.

Realism and faithfulness pull in opposite directions (an unchanged source is perfectly faithful
and not at all realistic), so methods are compared on the trade-off curve, not on one number.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import tqdm

from . import data, metrics, zoo
from .cycle import check_same_schedule, cycle_translate, ddib_translate, sdedit_translate
from .encoder import METHOD_ENCODER
from .matching import MatchedPoint, match_level, matched_difference, strength_of_steps
from .reporting import Column, Table, share_column
from .run_store import check_store, fingerprint, run_images
from .train import DOMAINS

__all__ = ["METHODS", "ALL_METHODS", "STRENGTHS", "DEFAULT_ETA", "translate", "TranslationRow", "evaluate_translation",
           "reference_rows", "TranslationResult", "translation_sweep", "format_translation_table",
           "tradeoff_at", "DIRECTIONS", "TranslationTask", "translation_task", "run_translation",
           "SCORES", "score_images", "strength_for_ssim", "MatchedPoint", "matched_point", "matched_difference"]

METHODS = ("cyclediffusion", "sdedit", "ddib")                   # chapter 4's comparison
ALL_METHODS = (*METHODS, "edit-friendly")                          # and the edit-friendly encoder (issue 22)
STRENGTHS = (0.3, 0.5, 0.7, 0.85, 1.0)
#: eta of each method when none is given: CycleDiffusion uses the paper's 0.1, SDEdit draws fresh
#: noise at every step (eta = 1, the stochastic sampler of Meng et al.), DDIB is deterministic.
DEFAULT_ETA = {"cyclediffusion": 0.1, "sdedit": 1.0, "ddib": 0.0, "edit-friendly": 1.0}


def translate(method: str, src_unet, tgt_unet, scheduler, x0: torch.Tensor, *, strength: float,
              num_inference_steps: int, eta: float | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate ``x0`` from the source to the target domain with one of :data:`ALL_METHODS`.

    Args:
        method: ``"cyclediffusion"``, ``"edit-friendly"`` (CycleDiffusion with the edit-friendly
            encoder, :func:`dpmlatent.encoder.edit_friendly_encode`), ``"sdedit"`` (uses only
            ``tgt_unet``) or ``"ddib"``.
        src_unet, tgt_unet: the two domains' ``UNet2DModel`` s (same noise schedule).
        scheduler: a ``DDIMScheduler`` shared by both.
        x0: ``(B, C, H, W)`` source images in ``[-1, 1]``.
        strength: in (0, 1]; num_inference_steps: >= 1.
        eta: the sampler's eta; ``None`` takes :data:`DEFAULT_ETA`. DDIB is deterministic and
            accepts only ``None`` or 0.
        generator: the random draws of CycleDiffusion's encoder or of SDEdit.

    Returns:
        ``(B, C, H, W)`` translations.
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    eta = DEFAULT_ETA[method] if eta is None else eta
    if method in METHOD_ENCODER:
        return cycle_translate(src_unet, tgt_unet, scheduler, x0, eta=eta, strength=strength,
                               num_inference_steps=num_inference_steps, generator=generator,
                               encoder=METHOD_ENCODER[method])
    if method == "sdedit":
        return sdedit_translate(tgt_unet, scheduler, x0, eta=eta, strength=strength,
                                num_inference_steps=num_inference_steps, generator=generator)
    if eta != 0:
        raise ValueError(f"ddib is deterministic (eta = 0); got eta={eta}")
    return ddib_translate(src_unet, tgt_unet, scheduler, x0, strength=strength,
                          num_inference_steps=num_inference_steps)


@dataclasses.dataclass
class TranslationRow:
    """One line of a translation table (``nan`` where a column does not apply)."""

    method: str
    strength: float
    class_kept: float   # fraction whose digit label equals the source's label
    realism: float      # mean p(target domain | image) under the domain classifier
    frechet: float      # FD to real held-out target images (digit-classifier features)
    psnr: float         # mean PSNR to the source, dB (inf for the source itself)
    ssim: float         # mean SSIM to the source
    num_images: int | None = None   # how many translations the row averages (sets the printed precision)


def _check_labels(labels: torch.Tensor, n: int) -> None:
    if not isinstance(labels, torch.Tensor) or labels.shape != (n,):
        raise ValueError(f"labels must be a ({n},) tensor of digit labels, got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")


def _check_domain(target_domain: int, domain_classifier) -> None:
    k = domain_classifier.config.num_classes
    if not isinstance(target_domain, int) or not 0 <= target_domain < k:
        raise ValueError(f"target_domain must be an integer in [0, {k - 1}], got {target_domain!r}")


def evaluate_translation(method: str, strength: float, translated: torch.Tensor, source: torch.Tensor,
                         labels: torch.Tensor, *, target_domain: int, digit_classifier, domain_classifier,
                         real_target: torch.Tensor, real_target_features: torch.Tensor | None = None
                         ) -> TranslationRow:
    """Score ``translated`` (``(N, 1, 8, 8)``, the translations of ``source`` with digit ``labels``).

    Args:
        target_domain: the index of the target domain in the domain classifier's outputs
            (:data:`dpmlatent.train.DOMAINS`: 0 handwritten, 1 typeset).
        real_target: held-out real images of the target domain, the FD reference.
        real_target_features: their digit-classifier features, if already computed.
    """
    sc = score_images(translated, source, labels, target_domain=target_domain, digit_classifier=digit_classifier,
                      domain_classifier=domain_classifier)
    if real_target_features is None:
        _, real_target_features = metrics.classify(digit_classifier, real_target)
    return TranslationRow(
        method, strength,
        class_kept=sc["class_kept"].mean().item(),
        realism=sc["realism"].mean().item(),
        frechet=metrics.FrechetReference(real_target_features)(sc["features"]),
        psnr=sc["psnr"].mean().item(),
        ssim=sc["ssim"].mean().item(),
        num_images=len(translated),
    )


def reference_rows(source: torch.Tensor, labels: torch.Tensor, real_target_other: torch.Tensor,
                   other_labels: torch.Tensor, *, target_domain: int, digit_classifier, domain_classifier,
                   real_target: torch.Tensor) -> list[TranslationRow]:
    """The two ends of the trade-off, scored like translations.

    * ``"source (unchanged)"``: no translation at all (perfectly faithful, not realistic);
    * ``"real target"``: other real target-domain images (``real_target_other``, e.g. from the
      training split, with their own labels): the realism a perfect translator could reach;
      PSNR/SSIM do not apply (``nan``).
    """
    common = dict(target_domain=target_domain, digit_classifier=digit_classifier,
                  domain_classifier=domain_classifier, real_target=real_target)
    unchanged = evaluate_translation("source (unchanged)", 0.0, source, source, labels, **common)
    real = evaluate_translation("real target", math.nan, real_target_other, real_target_other,
                                other_labels, **common)
    real.psnr = real.ssim = math.nan
    return [unchanged, real]


@dataclasses.dataclass
class TranslationResult:
    """``rows``: one per (method, strength), in sweep order; ``images[(method, strength)]``: the
    translations ``(N, C, H, W)`` on the CPU."""

    rows: list[TranslationRow]
    images: dict[tuple[str, float], torch.Tensor]


def translation_sweep(src_unet, tgt_unet, scheduler, x0: torch.Tensor, labels: torch.Tensor, *,
                      target_domain: int, digit_classifier, domain_classifier, real_target: torch.Tensor,
                      methods: tuple[str, ...] = METHODS, strengths: tuple[float, ...] = STRENGTHS,
                      num_inference_steps: int = 50, eta: float | None = None, seed: int = 0,
                      label: str | None = None, progress: bool = True, store=None) -> TranslationResult:
    """Translate ``x0`` with every method at every strength and score each run.

    Every run starts from a fresh ``torch.Generator().manual_seed(seed)``, so all methods see the
    same inputs and the same seed. ``eta=None`` uses each method's :data:`DEFAULT_ETA`; a number
    sets CycleDiffusion's and SDEdit's eta (DDIB stays deterministic). ``label`` names the rows
    (and image keys) of a single-method sweep instead of the method, e.g.
    ``"cyclediffusion eta=1"`` for a variant. ``store`` (a :class:`~dpmlatent.run_store.RunStore`):
    each run's translated images are read from it (or recorded into it), as in :func:`matched_point`.
    """
    if label is not None and len(methods) != 1:
        raise ValueError(f"label names the rows of a single-method sweep; got {len(methods)} methods")
    for m in methods:
        if m not in ALL_METHODS:
            raise ValueError(f"methods must be drawn from {ALL_METHODS}, got {m!r}")
    for s in strengths:
        if not 0.0 < s <= 1.0:
            raise ValueError(f"every strength must be in (0, 1], got {s}")
    _check_labels(labels, len(x0))
    _check_domain(target_domain, domain_classifier)
    check_store(store)
    _, real_feats = metrics.classify(digit_classifier, real_target)
    runs = [(m, s) for m in methods for s in strengths]
    rows, images = [], {}
    inputs = None if store is None else fingerprint(src_unet, tgt_unet, scheduler.config, x0)
    for method, strength in tqdm(runs, desc="translating", disable=not progress):
        run_eta = None if method == "ddib" else eta

        def make():
            return translate(method, src_unet, tgt_unet, scheduler, x0, strength=strength, eta=run_eta,
                             num_inference_steps=num_inference_steps, generator=torch.Generator().manual_seed(seed))

        key = ("translation-sweep", inputs, method, run_eta, float(strength), num_inference_steps, seed)
        out = run_images(store, key, make, x0.device)
        name = method if label is None else label
        images[(name, strength)] = out.cpu()
        rows.append(evaluate_translation(name, strength, out, x0, labels, target_domain=target_domain,
                                         digit_classifier=digit_classifier,
                                         domain_classifier=domain_classifier, real_target=real_target,
                                         real_target_features=real_feats))
    return TranslationResult(rows, images)


def format_translation_table(rows: list[TranslationRow]) -> Table:
    """A :class:`~dpmlatent.reporting.Table` of :class:`TranslationRow` s (``-`` for ``nan``); the two
    columns in [0, 1] (class kept, mean p(target)) at the precision their number of images supports
    (:func:`dpmlatent.reporting.fmt_fraction`)."""
    def num(v: float, fmt: str) -> str:
        return "-" if math.isnan(v) else format(v, fmt)

    cols = [Column("method", "<", 20), Column("strength", ">"), Column("class kept", ">"), Column("p(target)", ">"),
            Column("FD", ">", 7), Column("PSNR", ">", 6), Column("SSIM", ">", 6)]
    return Table(cols, [[r.method, num(r.strength, ".2f"), share_column(r.class_kept, r.num_images, 0, name="class kept"),
                         share_column(r.realism, r.num_images, 0, name="p(target)"), f"{r.frechet:.2f}",
                         num(r.psnr, ".1f"), num(r.ssim, ".3f")] for r in rows])


def tradeoff_at(rows: list[TranslationRow], method: str, ssim: float, *, column: str = "realism") -> float:
    """``column`` of ``method`` at a given faithfulness, read off its trade-off curve.

    Strength moves a method along a curve from faithful (high SSIM) to free (low SSIM); to
    compare methods at *equal* faithfulness we interpolate ``column`` (``"realism"``,
    ``"class_kept"``, ``"frechet"`` or ``"psnr"``) linearly in SSIM between the two strengths
    that bracket ``ssim``. Outside the curve's SSIM range it returns ``nan`` (no extrapolation).
    """
    import numpy as np

    if column not in ("realism", "class_kept", "frechet", "psnr"):
        raise ValueError(f"column must be 'realism', 'class_kept', 'frechet' or 'psnr', got {column!r}")
    pts = sorted((r.ssim, getattr(r, column)) for r in rows if r.method == method)
    if len(pts) < 2:
        raise ValueError(f"rows must hold at least two strengths of method {method!r}, got {len(pts)}")
    xs, ys = zip(*pts)
    if not xs[0] <= ssim <= xs[-1]:
        return math.nan
    return float(np.interp(ssim, xs, ys))


#: The two directions of chapter 4: (source model, target model, source data, target data).
DIRECTIONS = {
    "handwritten->typeset": ("ddpm-handwritten", "ddpm-typeset", data.handwritten_digits, data.typeset_digits),
    "typeset->handwritten": ("ddpm-typeset", "ddpm-handwritten", data.typeset_digits, data.handwritten_digits),
}


@dataclasses.dataclass
class TranslationTask:
    """Everything one direction of the experiment needs, on one device.

    ``source``: the held-out inputs and their digit labels; ``real_target``: every held-out
    target image (the FD reference); ``target_train``: training images of the target domain,
    scored as the "real target" reference row; ``target_domain``: index into
    :data:`dpmlatent.train.DOMAINS`.
    """

    direction: str
    src_unet: torch.nn.Module
    tgt_unet: torch.nn.Module
    scheduler: object
    source: data.ImageData
    real_target: torch.Tensor
    target_train: data.ImageData
    target_domain: int


def translation_task(direction: str, *, num_images: int = 256, seed: int = 0, device=None,
                     dtype=None) -> TranslationTask:
    """Load the zoo models and held-out data of one of :data:`DIRECTIONS`.

    ``num_images`` source images are drawn from the source domain's test split by a permutation
    seeded with ``seed`` (the test splits are ordered by class); the reference row uses as many
    target training images, drawn the same way. The scheduler is a ``DDIMScheduler`` built from
    the source model's stored config (the target's is checked to have the same schedule).
    """
    from diffusers import DDIMScheduler

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {tuple(DIRECTIONS)}, got {direction!r}")
    src_name, tgt_name, src_data, tgt_data = DIRECTIONS[direction]
    test = src_data("test")
    if not isinstance(num_images, int) or not 2 <= num_images <= len(test.labels):
        raise ValueError(f"num_images must be an integer in [2, {len(test.labels)}], got {num_images!r}")
    src, tgt = zoo.load(src_name, device=device, dtype=dtype), zoo.load(tgt_name, device=device, dtype=dtype)
    check_same_schedule(src.scheduler, tgt.scheduler)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(test.labels), generator=gen)[:num_images]
    train_tgt = tgt_data("train")
    pick_t = torch.randperm(len(train_tgt.labels), generator=gen)[:num_images]

    def subset(d: data.ImageData, idx: torch.Tensor) -> data.ImageData:
        return data.ImageData(d.images[idx].to(device=device, dtype=dtype), d.labels[idx],
                              tuple(d.styles[i] for i in idx.tolist()))

    return TranslationTask(
        direction, src.unet, tgt.unet, DDIMScheduler.from_config(src.scheduler.config), subset(test, pick),
        tgt_data("test").images.to(device=device, dtype=dtype), subset(train_tgt, pick_t),
        DOMAINS.index(direction.split("->")[1]))


def run_translation(task: TranslationTask, digit_classifier, domain_classifier, **sweep_kwargs
                    ) -> tuple[list[TranslationRow], TranslationResult]:
    """:func:`reference_rows` and :func:`translation_sweep` for ``task`` (``sweep_kwargs``:
    methods, strengths, num_inference_steps, eta, seed, label, progress, store)."""
    common = dict(target_domain=task.target_domain, digit_classifier=digit_classifier,
                  domain_classifier=domain_classifier, real_target=task.real_target)
    refs = reference_rows(task.source.images, task.source.labels, task.target_train.images,
                          task.target_train.labels, **common)
    result = translation_sweep(task.src_unet, task.tgt_unet, task.scheduler, task.source.images,
                               task.source.labels, **common, **sweep_kwargs)
    return refs, result


# ---------------------------------------------------------------------------------------------
# Comparisons at matched faithfulness
# ---------------------------------------------------------------------------------------------

#: The per-image scores a matched point keeps (``frechet`` is a set-level score, from ``features``).
SCORES = ("class_kept", "realism", "ssim", "psnr")


def score_images(translated: torch.Tensor, source: torch.Tensor, labels: torch.Tensor, *, target_domain: int,
                 digit_classifier, domain_classifier) -> dict[str, torch.Tensor]:
    """Per-image scores of ``translated`` ``(N, C, H, W)`` against ``source`` (digit ``labels``): a dict
    of float64 ``(N,)`` tensors under :data:`SCORES` (``class_kept`` is 0 or 1, ``realism`` is
    p(target domain)), and ``"features"``: the ``(N, D)`` digit-classifier features (for FD)."""
    _check_labels(labels, len(source))
    _check_domain(target_domain, domain_classifier)
    if translated.shape != source.shape:
        raise ValueError(f"translated and source must have the same shape, got {tuple(translated.shape)} "
                         f"and {tuple(source.shape)}")
    probs, feats = metrics.classify(digit_classifier, translated)
    domain_probs, _ = metrics.classify(domain_classifier, translated)
    return {"class_kept": (probs.argmax(1) == labels.cpu()).double(),
            "realism": domain_probs[:, target_domain].double(),
            "ssim": metrics.ssim(translated, source).double().cpu(),
            "psnr": metrics.psnr(translated, source).double().cpu(),
            "features": feats.double()}


def strength_for_ssim(rows: list[TranslationRow], method: str, ssim: float) -> float:
    """The strength at which ``method``'s curve in ``rows`` reaches ``ssim`` (linear in SSIM between the
    bracketing strengths, clamped to the curve's ends): the first guess of :func:`matched_point`."""
    from .matching import first_guess

    mine = [r for r in rows if r.method == method]
    if len(mine) < 2:
        raise ValueError(f"rows must hold at least two strengths of method {method!r}, got {len(mine)}")
    return first_guess([r.strength for r in mine], [r.ssim for r in mine], ssim, anchor=False)


def matched_point(task: TranslationTask, method: str, level: float, *, digit_classifier, domain_classifier,
                  seeds: tuple[int, ...] = (0, 1, 2), num_inference_steps: int = 50, eta: float | None = None,
                  start: float | None = None, label: str | None = None, max_moves: int = 12,
                  store=None) -> MatchedPoint:
    """Find where ``method`` translates ``task``'s inputs with mean SSIM ``level``, and score it there
    (:func:`dpmlatent.matching.match_level`).

    Each run translates all inputs with ``k`` of ``num_inference_steps`` steps from
    ``torch.Generator().manual_seed(seed)`` (as in :func:`translation_sweep`) and is scored by
    :func:`score_images` (per image: class kept, p(target), SSIM, PSNR; and digit-classifier
    features for FD).

    Args:
        method: one of :data:`ALL_METHODS`; ``eta`` as in :func:`translate`; ``label`` names the point
            (e.g. ``"cyclediffusion eta=1"``).
        level: the SSIM to match, in (0, 1).
        seeds: at least one sampler seed (3 or more for an interval that covers the sampler's randomness).
        start: the first guess, a strength (e.g. :func:`strength_for_ssim` on a coarse sweep; default 0.5).
        max_moves: how many steps the search may walk before it gives up.
        store: a :class:`~dpmlatent.run_store.RunStore`: each run's translated images are read from it
            (or recorded into it), keyed by both UNets, the scheduler, the inputs, method, eta, steps
            and seed; the scores are computed from them as without a store.

    Raises:
        ValueError: bad arguments, or ``level`` outside the SSIM range the method reaches with
            1 to ``num_inference_steps`` steps (or not found within ``max_moves``).
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method must be one of {ALL_METHODS}, got {method!r}")
    run_eta = None if method == "ddib" else eta
    common = dict(target_domain=task.target_domain, digit_classifier=digit_classifier,
                  domain_classifier=domain_classifier)

    check_store(store)

    inputs = None if store is None else fingerprint(task.src_unet, task.tgt_unet, task.scheduler.config,
                                                     task.source.images)

    def run(k: int, seed: int) -> dict[str, torch.Tensor]:
        def make():
            return translate(method, task.src_unet, task.tgt_unet, task.scheduler, task.source.images,
                             strength=strength_of_steps(k, num_inference_steps), num_inference_steps=num_inference_steps,
                             eta=run_eta, generator=torch.Generator().manual_seed(seed))

        key = ("translation", inputs, method, run_eta, num_inference_steps, k, seed)
        out = run_images(store, key, make, task.source.images.device)
        return score_images(out, task.source.images, task.source.labels, **common)

    return match_level(run, level, num_inference_steps=num_inference_steps, seeds=seeds, start=start,
                       name=label or method, max_moves=max_moves, deterministic=method == "ddib")
