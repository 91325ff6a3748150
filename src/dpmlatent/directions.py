"""Editing along a direction found from labelled examples, in any latent space (chapter 9).

The simplest semantic direction needs no loss and no training: the difference between the mean
code of images that have a property and the mean code of images that lack it,

    d = mean_{i in positive} c_i - mean_{i in negative} c_i ,

for codes ``c`` in any space: the Gaussian code ``z`` of DPM-Encoder, the bottleneck ``h_t`` of a
frozen U-Net (one direction per timestep), or an LRDM's representation ``r``. An edit adds
``scale * d`` to an image's code and decodes. Because each space reacts differently to a unit of
its own scale, spaces are compared at **matched faithfulness**: :func:`matched_direction` finds,
with :func:`dpmlatent.matching.match_level`, the scale at which the mean SSIM of the edits to
their inputs equals a level, and scores every edit there (:func:`dpmlatent.edit_experiment.matched_asyrp`
is this search with Asyrp's decoder and learned h-space directions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["mean_difference", "matched_direction"]


def mean_difference(codes: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, *, dim: int = 0,
                    fraction: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``mean(codes[positive]) - mean(codes[negative])`` along the sample axis ``dim``.

    Args:
        codes: any tensor whose axis ``dim`` indexes the ``N`` examples (e.g. ``(N, D)`` codes, or
            ``(S, N, C, H, W)`` bottlenecks of ``S`` timesteps with ``dim=1``).
        positive, negative: ``(N,)`` boolean masks, disjoint, each selecting at least one example.
        fraction: in ``(0, 1]``; below 1, a random ``fraction`` of each group (at least one) is used,
            drawn from ``generator`` -- different generators give the spread of the estimate.

    Returns:
        the direction, ``codes``' shape without axis ``dim``.
    """
    if not isinstance(codes, torch.Tensor) or not -codes.ndim <= dim < codes.ndim:
        raise ValueError(f"codes must be a tensor with an axis dim={dim}")
    n = codes.shape[dim]
    for name, mask in (("positive", positive), ("negative", negative)):
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (n,):
            raise ValueError(f"{name} must be a ({n},) boolean mask, got {getattr(mask, 'shape', mask)!r}")
        if not mask.any():
            raise ValueError(f"{name} selects no example")
    if (positive & negative).any():
        raise ValueError("positive and negative must not share examples")
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")

    def group_mean(mask):
        idx = mask.nonzero().flatten()
        if fraction < 1:
            keep = max(1, int(len(idx) * fraction))
            idx = idx[torch.randperm(len(idx), generator=generator)[:keep]]
        return codes.index_select(dim, idx.to(codes.device)).mean(dim)

    return group_mean(positive) - group_mean(negative)


def matched_direction(edit: Callable[[object, float], torch.Tensor], task, directions: dict, level: float, *,
                      digit_classifier, domain_classifier, scale_step: float, max_scale: float, clip=None,
                      start: float | None = None, label: str = "direction", max_moves: int = 40, store=None,
                      feature_network=None):
    """Edit ``task``'s inputs along each of ``directions`` at the scale where the mean SSIM to the
    inputs is ``level``, and score every edit there.

    Args:
        edit: ``edit(direction, scale) -> images`` ``(N, 1, 8, 8)``: the space's decoder of the
            inputs' codes moved by ``scale * direction`` (``scale = 0``: the inputs' reconstruction).
        task: an :class:`~dpmlatent.edit_experiment.EditTask` (its images are the inputs).
        directions: ``{seed: direction}``, e.g. :func:`mean_difference` with three generators; the
            search brackets the level over all of them, as over a sampler's seeds.
        level: the mean SSIM in (0, 1) to match.
        scale_step, max_scale: the grid of scales ``k * scale_step``, ``k = 1 .. max_scale / scale_step``.
        clip: an open_clip ``(model, tokenizer)`` pair, for the CLIP scores of
            :func:`~dpmlatent.edit_experiment.edit_scores` (optional).
        start: the first guess, a scale in ``(0, max_scale]`` (default ``max_scale / 2``).
        store: a :class:`~dpmlatent.run_store.RunStore`: each run's edited images are read from it (or
            recorded into it). ``edit`` is opaque, so the key is ``label`` (name the space and its
            model there), the inputs, the direction's seed and the scale, not the direction's values
            (they move with the CPU's rounding); the store's random re-made runs catch a changed edit.
        feature_network: a classifier whose features (:func:`dpmlatent.metrics.classify`) every edit
            also returns as ``"features"`` (``(inputs, seeds, D)`` in the point), for a Frechet distance
            at the matched point (``matching.matched_difference(..., "frechet", reference=...)``).

    Returns:
        :class:`~dpmlatent.matching.MatchedPoint`; the matched scale is ``strength * max_scale``.
    """
    from . import metrics
    from .edit_experiment import edit_scores
    from .matching import match_level

    if not callable(edit):
        raise TypeError(f"edit must be callable as edit(direction, scale), got {type(edit).__name__}")
    if not isinstance(directions, dict) or not directions:
        raise ValueError("directions must be a non-empty dict {seed: direction}")
    if not (isinstance(scale_step, (int, float)) and isinstance(max_scale, (int, float)) and 0 < scale_step < max_scale):
        raise ValueError(f"scale_step and max_scale must satisfy 0 < scale_step < max_scale, got {scale_step}, {max_scale}")
    n = round(max_scale / scale_step)
    if abs(n * scale_step - max_scale) > 1e-9 * max_scale:
        raise ValueError(f"max_scale ({max_scale}) must be a whole multiple of scale_step ({scale_step})")
    if start is not None and not 0 < start <= max_scale:
        raise ValueError(f"start must be a scale in (0, {max_scale}], got {start!r}")

    from .run_store import check_store, fingerprint, run_images

    check_store(store)
    inputs = None if store is None else fingerprint(task.images)

    def run(k: int, seed: int) -> dict[str, torch.Tensor]:
        def make():
            with torch.no_grad():
                return edit(directions[seed], k * scale_step)

        key = ("direction", label, inputs, seed, k, float(scale_step))
        out = run_images(store, key, make, task.images.device)
        scores = edit_scores(task, out, digit_classifier=digit_classifier, domain_classifier=domain_classifier, clip=clip)
        if feature_network is not None:
            scores["features"] = metrics.classify(feature_network, out)[1].double()
        return scores

    return match_level(run, level, num_inference_steps=n, seeds=tuple(directions),
                       start=0.5 if start is None else start / max_scale, name=label, max_moves=max_moves)
