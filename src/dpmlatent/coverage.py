"""The coverage experiment (Wu & De la Torre, Sec. 5): do guided diffusion models reach rare
sub-populations that guided GANs miss?

Both kinds of model are maps ``x = G(z)`` from a Gaussian code, so the *same* energy and the *same*
sampler (:func:`dpmlatent.guidance.guide`) guide both. Each model is guided towards one class from
``N`` codes for each of several seeds (a seed draws the start codes *and* the Langevin noise, so
the ``N x seeds`` chains are independent), with Langevin settings of its own (a 704-dimensional
diffusion code and a 32-dimensional GAN code do not settle at the same step size). Every chain
is then scored by a **judge** that had no part in guiding it:

* **success**: the judge reads the target class with ``p >= 0.9`` (:func:`successes`);
* the **energy** ``E(G(z))`` and the code's ``‖z‖²/d`` at every Langevin step (:class:`Chains`),
  to show whether the chains settled (:func:`dpmlatent.guidance.plateau`);
* **diversity**: the mean pairwise L2 distance among the successful samples (a model that reaches
  the class by collapsing onto one image scores low).

The claim is about *rare* classes, so the experiment runs twice, on models trained with the class
at its usual share and with the class cut to 2%: :func:`success_gap` compares diffusion and GAN on
one data set, :func:`rarity_gap` asks whether the gap grows when the class is rare (a difference of
differences, with an interval).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from . import metrics
from .evidence import (Interval, as_share, difference_of_shares, paired_bootstrap_ci, unpaired_bootstrap_ci,
                       wilson_interval)
from .guidance import Plateau, _as_flat, guide, plateau
from .latent import LatentCode
from .reporting import Column, Table, fmt, fmt_fraction

__all__ = ["CoverageModel", "Chains", "mean_pairwise_distance", "coverage_experiment", "save_chains", "load_chains",
           "decode_chains", "verify_chains", "settling_sweep", "successes",
           "success_gap", "rarity_gap", "format_coverage_table", "per_target_share", "target_gap",
           "target_rarity_gap"]


@dataclasses.dataclass(frozen=True)
class CoverageModel:
    """A generator with its own Langevin settings.

    ``generator``: ``G``, code -> images (a GAN module or :func:`~dpmlatent.guidance.diffusion_generator`);
    ``codes(seed)``: the ``N`` start codes of one seed (a tensor ``(N, d)`` or a ``LatentCode``);
    ``step_size`` and ``steps``: the Langevin settings chosen for this code space; ``batch_seeds``: run
    all seeds' chains in one batch (same chains, each seed's block with its own noise; faster for a
    small generator, slower for a diffusion model's, whose batch of 48 already fills the cores);
    ``metropolis``: Metropolis-adjusted Langevin (MALA, :func:`~dpmlatent.guidance.langevin`) instead of
    unadjusted."""

    generator: Callable
    codes: Callable[[int], object]
    step_size: float
    steps: int
    batch_seeds: bool = False
    metropolis: bool = False


@dataclasses.dataclass
class Chains:
    """The guided chains of one (model, energy) pair, over all seeds (seed-major: ``N`` chains of the
    first seed, then the next).

    ``before``: ``G(z0)`` ``(S·N, C, H, W)``; ``images``: ``G(z)`` of the final codes; ``energy``:
    ``E(G(z_k))`` ``(steps + 1, S·N)``; ``sq_norm``: ``‖z_k‖²/d`` ``(steps + 1, S·N)`` (1 on average
    under the prior ``N(0, I)``); ``codes``: the final codes, flattened, ``(S·N, d)`` on the CPU (``None``
    where a caller did not keep them); ``acceptance``: ``(S·N,)`` float64, the share of each chain's
    Metropolis-adjusted steps whose proposal was accepted (``None`` where no step was adjusted)."""

    model: str
    energy_name: str
    weight: float
    step_size: float
    steps: int
    dim: int
    seeds: int
    before: torch.Tensor
    images: torch.Tensor
    energy: torch.Tensor
    sq_norm: torch.Tensor
    codes: torch.Tensor | None = None
    acceptance: torch.Tensor | None = None

    @property
    def num_chains(self) -> int:
        return self.energy.shape[1]

    def plateau(self, what: str = "energy", **kwargs) -> Plateau:
        """:func:`~dpmlatent.guidance.plateau` of ``"energy"`` (drift measured against the whole change
        along the chain) or ``"sq_norm"`` (against its level)."""
        if what not in ("energy", "sq_norm"):
            raise ValueError(f"what must be 'energy' or 'sq_norm', got {what!r}")
        kwargs.setdefault("scale", "change" if what == "energy" else "level")
        return plateau(getattr(self, what), **kwargs)


def _distance_to_others(images: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64: each image's mean L2 distance to the other ``N - 1`` (``N >= 2``)."""
    flat = images.reshape(len(images), -1).double()
    return torch.cdist(flat, flat).sum(1) / (len(flat) - 1)


def mean_pairwise_distance(images: torch.Tensor) -> float:
    """Mean L2 distance over all pairs of ``images`` ``(N, ...)``; ``nan`` for fewer than 2."""
    if len(images) < 2:
        return math.nan
    return _distance_to_others(images).mean().item()


def _dim(z) -> int:
    return z.dim if isinstance(z, LatentCode) else z[0].numel()


def _flat(z) -> torch.Tensor:
    return _as_flat(z)[0].detach().cpu()


def coverage_experiment(models: dict[str, CoverageModel], energies: dict[str, tuple[float, Callable]], *,
                        seeds: Sequence[int], grid: float | None = None, noise_offset: int = 0,
                        progress: bool = True) -> dict[tuple[str, str], Chains]:
    """Guide every model with every energy, from the same seeds.

    For each seed ``s``, model and energy: start codes ``model.codes(s)``, Langevin noise from
    ``torch.Generator().manual_seed(s + noise_offset)`` (an offset gives chains that continue stored ones
    fresh noise), ``model.steps`` steps of size ``model.step_size``
    (:func:`~dpmlatent.guidance.guide`; ``grid`` as there, e.g.
    :data:`~dpmlatent.guidance.PORTABLE_GRID` for float64 chains that are the same across kernel paths,
    though not on every CPU: see its note).

    Args:
        models: name -> :class:`CoverageModel`.
        energies: name -> ``(weight, E)``, ``E`` images -> ``(B,)``.
        seeds: at least one distinct integer seed (use 3 or more for an interval that covers the
            sampler's randomness).
        noise_offset: an integer >= 0 added to every seed of the Langevin noise (not of the codes).

    Returns:
        ``{(model, energy): Chains}``.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    if not models or not energies:
        raise ValueError("models and energies must each name at least one entry")
    if not isinstance(noise_offset, int) or isinstance(noise_offset, bool) or noise_offset < 0:
        raise ValueError(f"noise_offset must be an integer >= 0, got {noise_offset!r}")
    out = {}
    for name, m in models.items():
        if not isinstance(m, CoverageModel):
            raise TypeError(f"models[{name!r}] must be a CoverageModel, got {type(m).__name__}")
        starts = [m.codes(s) for s in seeds]
        with torch.no_grad():
            before = torch.cat([m.generator(z) for z in starts])
        for energy_name, (weight, energy) in energies.items():
            if m.batch_seeds:
                if not all(isinstance(z, torch.Tensor) for z in starts):
                    raise TypeError(f"models[{name!r}]: batch_seeds needs tensor codes (a GAN's), not a LatentCode")
                runs = [guide(m.generator, energy, torch.cat(starts), weight=weight, steps=m.steps,
                              step_size=m.step_size,
                              generator=[torch.Generator().manual_seed(s + noise_offset) for s in seeds],
                              grid=grid, metropolis=m.metropolis, progress=progress)]
            else:
                runs = [guide(m.generator, energy, z, weight=weight, steps=m.steps, step_size=m.step_size,
                              generator=torch.Generator().manual_seed(s + noise_offset), grid=grid,
                              metropolis=m.metropolis, progress=progress)
                        for s, z in zip(seeds, starts)]
            d = _dim(starts[0])
            sq = torch.cat([2.0 * (r.result.energies - weight * r.energies) / d for r in runs], dim=1)
            acceptance = (torch.cat([r.result.accepted.double().mean(0) for r in runs]) if m.metropolis
                          else None)
            out[name, energy_name] = Chains(name, energy_name, float(weight), float(m.step_size), m.steps, d,
                                            len(seeds), before, torch.cat([r.images for r in runs]),
                                            torch.cat([r.energies for r in runs], dim=1), sq,
                                            torch.cat([_flat(r.result.z) for r in runs]), acceptance)
    return out


# --- chains stored once, checked and decoded by the reader ---------------------------------------

_FIELDS = ("weight", "step_size", "steps", "dim", "seeds")


def save_chains(runs: dict[tuple[str, str], Chains], folder, *, rebuild: str, every: int = 1) -> Path:
    """Store the chains of :func:`coverage_experiment` in ``folder``: ``chains.safetensors`` (per run the
    final codes in float64, so that a reader decodes exactly the final images, and the energy and
    ``‖z‖²/d`` traces, every ``every``-th step, in float32, half the bytes and far finer than any
    printed number) and ``run.json`` (each run's settings, ``rebuild``: the command that makes the
    file again, torch version, sha256 of the tensors). No images: a reader decodes them from the codes
    (:func:`decode_chains`).

    Args:
        runs: ``{(model, energy): Chains}`` with final codes (``Chains.codes`` not ``None``).
        folder: created if missing; its two files are overwritten.
        rebuild: a non-empty command line.
        every: an integer ``>= 1`` dividing every run's number of steps.
    """
    from safetensors.torch import save_file

    if not isinstance(rebuild, str) or not rebuild.strip():
        raise ValueError("rebuild must be the command that makes the stored chains again, got an empty value")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if not runs:
        raise ValueError("runs must hold at least one (model, energy) -> Chains entry")
    tensors, meta = {}, []
    for i, ((model, energy), c) in enumerate(runs.items()):
        if not isinstance(c, Chains) or c.codes is None:
            raise TypeError(f"runs[{(model, energy)!r}] must be Chains with final codes")
        if c.steps % every:
            raise ValueError(f"every ({every}) must divide the steps of every run; {(model, energy)!r} has {c.steps}")
        tensors[f"{i}.codes"] = c.codes.to(torch.float64).contiguous()
        tensors[f"{i}.energy"] = c.energy[::every].float().contiguous()
        tensors[f"{i}.sq_norm"] = c.sq_norm[::every].float().contiguous()
        meta.append({"model": model, "energy": energy, **{k: getattr(c, k) for k in _FIELDS}})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "chains.safetensors")
    info = {"runs": meta, "every": every, "rebuild": rebuild, "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "sha256": hashlib.sha256((folder / "chains.safetensors").read_bytes()).hexdigest()}
    (folder / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def load_chains(folder) -> dict[tuple[str, str], Chains]:
    """The chains :func:`save_chains` stored, in their order (sha256 checked; traces as float64).
    ``Chains.before`` and ``.images`` are empty: :func:`decode_chains` fills them."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "run.json").exists():
        raise FileNotFoundError(f"no stored chains in {folder}: make them with the rebuild command of the "
                                f"chapter that reads them")
    info = json.loads((folder / "run.json").read_text())
    if hashlib.sha256((folder / "chains.safetensors").read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError(f"{folder / 'chains.safetensors'} does not match the sha256 in run.json")
    t = load_file(folder / "chains.safetensors")
    empty = torch.zeros(0)
    return {(m["model"], m["energy"]): Chains(m["model"], m["energy"], *(m[k] for k in _FIELDS), empty, empty,
                                              t[f"{i}.energy"].double(), t[f"{i}.sq_norm"].double(),
                                              t[f"{i}.codes"])
            for i, m in enumerate(info["runs"])}


def _code_of(start, flat: torch.Tensor):
    """``flat`` ``(N, d)`` in the form of the start code ``start`` (a tensor or a ``LatentCode``)."""
    if isinstance(start, LatentCode):
        return start.unflatten(flat.to(start.x_start.device, start.x_start.dtype))
    return flat.to(start.device, start.dtype).reshape(start.shape)


@torch.no_grad()
def decode_chains(runs: dict[tuple[str, str], Chains], models: dict[str, CoverageModel], *,
                  seeds: Sequence[int]) -> dict[tuple[str, str], Chains]:
    """``runs`` with ``before`` = ``G(z0)`` (the start codes drawn again from ``seeds``) and ``images`` =
    ``G(z)`` of the stored final codes, batched as :func:`coverage_experiment` batched them (each seed's
    ``N`` chains, or all seeds at once for a ``batch_seeds`` model), so the images are the ones it returned.

    Args:
        runs: from :func:`load_chains`; every run's model must be in ``models``.
        models: name -> the :class:`CoverageModel` that made the chains.
        seeds: the seeds of the run, in its order.
    """
    seeds = list(seeds)
    out = {}
    for (name, energy), c in runs.items():
        if name not in models:
            raise ValueError(f"models must include {name!r} (the stored chains' model); got {sorted(models)}")
        if len(seeds) != c.seeds:
            raise ValueError(f"seeds must list the run's {c.seeds} seeds, got {seeds!r}")
        m = models[name]
        starts = [m.codes(s) for s in seeds]
        n = c.num_chains // len(seeds)
        before = torch.cat([m.generator(z) for z in starts])
        if m.batch_seeds:
            images = m.generator(_code_of(torch.cat(starts), c.codes))
        else:
            images = torch.cat([m.generator(_code_of(z, c.codes[i * n:(i + 1) * n])) for i, z in enumerate(starts)])
        out[name, energy] = dataclasses.replace(c, before=before, images=images)
    return out


def verify_chains(runs: dict[tuple[str, str], Chains], models: dict[str, CoverageModel],
                  energies: dict[str, tuple[float, Callable]], *, seeds: Sequence[int], steps: int,
                  grid: float | None = None, progress: bool = False,
                  per_chain: bool = False) -> dict[tuple[str, str], float | torch.Tensor]:
    """Re-run the first ``steps`` Langevin steps of every stored run's first seed with
    :func:`coverage_experiment` and compare the energy and ``‖z‖²/d`` traces, step by step, with the
    stored ones (rounded to float32 as they were stored).

    Returns:
        ``{(model, energy): max relative difference}``, ``|a - b| / max(1, |b|)`` over both traces: 0, or
        one float32 rounding step (about 1e-7) where another CPU's float64 value falls on the other side
        of a float32 rounding boundary; a chain that went another way differs by far more. With
        ``per_chain=True`` the value is a ``(N,)`` tensor, the difference of each of the first seed's
        chains: on a CPU whose BLAS sums in another order (an AMD against the Intel build machine) a
        few diffusion chains land on the other side of a boundary of the portable grid within ten steps
        and then go their own way, while the others stay identical.
    """
    if not isinstance(per_chain, bool):
        raise TypeError(f"per_chain must be True or False, got {per_chain!r}")
    seeds = list(seeds)
    out = {}
    for (name, energy), c in runs.items():
        if name not in models or energy not in energies:
            raise ValueError(f"models and energies must include the stored run {(name, energy)!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= c.steps:
            raise ValueError(f"steps must be an integer in [1, {c.steps}], got {steps!r}")
        rows = len(c.energy)
        every = c.steps // (rows - 1)
        if steps % every:
            raise ValueError(f"steps must be a multiple of the stored traces' spacing ({every}), got {steps}")
        m = dataclasses.replace(models[name], steps=steps)
        again = coverage_experiment({name: m}, {energy: energies[energy]}, seeds=seeds[:1], grid=grid,
                                    progress=progress)[name, energy]
        n, k = again.num_chains, steps // every + 1
        diffs = []
        for mine, stored in ((again.energy, c.energy), (again.sq_norm, c.sq_norm)):
            ref = stored[:k, :n].double()
            diffs.append(((mine[::every].float().double() - ref).abs() / ref.abs().clamp(min=1.0)).amax(0))
        chain = torch.maximum(*diffs)
        out[name, energy] = chain if per_chain else float(chain.max())
    return out


def settling_sweep(model: CoverageModel, weight: float, energy: Callable, *, step_sizes: Sequence[float],
                   steps: int, seed: int, judge, target: int, grid: float | None = None, threshold: float = 0.9,
                   progress: bool = False) -> tuple[Table, dict[float, Chains]]:
    """Choose a model's Langevin step size: run ``steps`` steps at each of ``step_sizes`` from one
    seed's codes (use a seed the experiment itself does not use) and report, per step size, where the
    energy and ``‖z‖²/d`` end (mean over the last quarter of the steps), their drift over the last
    quarter (:func:`~dpmlatent.guidance.plateau`, 95% interval), whether both settled, and the
    ``judge``'s success share. A larger step moves faster but Langevin's discretisation bias grows
    with it (the chain settles at a higher energy, or its codes leave the prior's typical set,
    ``‖z‖²/d`` well above 1); the book takes the smallest step that settles within the budget.

    Returns:
        The table, and ``{step_size: Chains}``.
    """
    sizes = list(step_sizes)
    if not sizes or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in sizes):
        raise ValueError(f"step_sizes must be a non-empty list of numbers > 0, got {step_sizes!r}")
    runs = {}
    for size in sizes:
        m = dataclasses.replace(model, step_size=float(size), steps=steps)
        runs[size] = coverage_experiment({"m": m}, {"e": (weight, energy)}, seeds=[seed], grid=grid,
                                         progress=progress)["m", "e"]
    cols = [Column("step", ">"), Column("steps", ">"), Column("E (last quarter)", ">"), Column("E drift [95% CI]", ">"),
            Column("|z|²/d (last quarter)", ">"), Column("|z|²/d drift [95% CI]", ">"), Column("settled", ">"),
            Column("success [95% CI]", ">")]
    rows = []
    for size, c in runs.items():
        pe, pz = c.plateau("energy"), c.plateau("sq_norm")
        ok = successes(judge, c.images, target, threshold=threshold)
        rows.append([f"{size:g}", f"{steps}", fmt(pe.level, max(pe.level_se, 1e-12)), f"{pe.drift}",
                     fmt(pz.level, max(pz.level_se, 1e-12)), f"{pz.drift}",
                     "yes" if pe.plateaued and pz.plateaued else "no",
                     f"{_share(ok)}"])
    return Table(cols, rows), runs


def successes(judge, images: torch.Tensor, target: int, *, threshold: float = 0.9) -> torch.Tensor:
    """``(N,)`` bool: the ``judge`` (a classifier) gives class ``target`` a probability ``>= threshold``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    probs, _ = metrics.classify(judge, images)
    if not 0 <= target < probs.shape[1]:
        raise ValueError(f"target must be a class index in [0, {probs.shape[1] - 1}], got {target}")
    return probs[:, target] >= threshold


def _share(ok: torch.Tensor) -> Interval:
    """The share of ``True`` in ``ok`` with its Wilson interval, printed as a share of its items."""
    return as_share(wilson_interval(int(ok.sum()), len(ok)))


def _per_seed(iv: Interval, seeds: int) -> Interval:
    """``iv`` over chains from ``seeds`` seeds: ``n`` counts the chains per seed; printed as a share."""
    return as_share(dataclasses.replace(iv, n=iv.n // seeds, seeds=seeds))


def _check_ok(ok, name):
    if not isinstance(ok, torch.Tensor) or ok.dtype != torch.bool or ok.ndim != 1 or len(ok) < 2:
        raise ValueError(f"{name} must be a 1-D bool tensor of at least 2 chains (from successes), got "
                         f"{getattr(ok, 'dtype', type(ok).__name__)} {tuple(getattr(ok, 'shape', ()))}")


def success_gap(ok_a: torch.Tensor, ok_b: torch.Tensor, *, seeds: int = 1) -> Interval:
    """Share of successes of ``ok_a`` minus that of ``ok_b`` (two independent sets of chains, e.g. a
    diffusion model's and a GAN's), with Newcombe's interval
    (:func:`~dpmlatent.evidence.difference_of_shares`), printed as a share of its items
    (:func:`~dpmlatent.evidence.as_share`). ``seeds``: how many seeds the chains come from (``n`` is
    then the chains per seed)."""
    _check_ok(ok_a, "ok_a"), _check_ok(ok_b, "ok_b")
    iv = difference_of_shares(int(ok_a.sum()), len(ok_a), int(ok_b.sum()), len(ok_b))
    return _per_seed(iv, seeds)


def rarity_gap(a_full: torch.Tensor, a_rare: torch.Tensor, b_full: torch.Tensor, b_rare: torch.Tensor, *,
               seeds: int = 1, n_resamples: int = 2000) -> Interval:
    """Does the gap between two kinds of model grow when the target is rare? The difference of differences

        (share_a_rare - share_b_rare) - (share_a_full - share_b_full)
        = mean(a_rare - a_full) - mean(b_rare - b_full),

    where model ``a``'s full-data and rare-data versions are run from the *same* codes and noises
    (chain ``i`` of ``a_full`` and of ``a_rare`` are paired), and likewise for ``b``; the two kinds are
    independent. The interval is the BCa bootstrap of two independent samples of paired differences
    (:func:`~dpmlatent.evidence.unpaired_bootstrap_ci`), printed as a share of its items.
    """
    for name, ok in (("a_full", a_full), ("a_rare", a_rare), ("b_full", b_full), ("b_rare", b_rare)):
        _check_ok(ok, name)
    if len(a_full) != len(a_rare) or len(b_full) != len(b_rare):
        raise ValueError("a_full/a_rare (and b_full/b_rare) must hold the same chains, paired: got lengths "
                         f"{len(a_full)}/{len(a_rare)} and {len(b_full)}/{len(b_rare)}")
    da, db = a_rare.double() - a_full.double(), b_rare.double() - b_full.double()
    iv = unpaired_bootstrap_ci(da, db, n_resamples=n_resamples)
    return _per_seed(iv, seeds)


def _mean(values: torch.Tensor) -> str:
    """A mean over chains, to the first significant digit of its standard error."""
    v = values.double()
    return fmt(v.mean(), max(float(v.std() / math.sqrt(len(v))), 1e-12))


def _diversity(images: torch.Tensor) -> str:
    """:func:`mean_pairwise_distance`, to the first significant digit of its standard error (the spread
    of each image's mean distance to the others, over sqrt(k)); "-" for fewer than 3 images."""
    if len(images) < 3:
        return "-"
    row = _distance_to_others(images)
    return fmt(row.mean(), max(float(row.std() / math.sqrt(len(row))), 1e-12))


def format_coverage_table(chains: Sequence[Chains], judges: dict[str, object], target: int, *,
                          threshold: float = 0.9) -> Table:
    """One row per (model, energy): Langevin settings, success before and after guidance under each
    judge (Wilson intervals, at the precision of ``N x seeds`` chains), the energy before and after and
    whether it settled, ``‖z‖²/d`` at the end and whether it settled (:meth:`Chains.plateau`), the share
    of chains whose code ran away (``‖z‖²/d > 2``; 1 is the prior's typical value), and the diversity of
    the successes under the first judge. Means print to the first significant digit of their standard
    error over chains.

    ``judges``: name -> classifier; the first one is the independent judge of the chapter's verdicts."""
    if not judges:
        raise ValueError("judges must name at least one classifier")
    names = list(judges)
    cols = [Column("model"), Column("energy"), Column("step", ">"), Column("steps", ">"), Column("chains", ">"),
            Column(f"before ({names[0]})", ">")]
    cols += [Column(f"success ({n}) [95% CI]", ">") for n in names]
    cols += [Column("E before", ">"), Column("E after", ">"), Column("E settled", ">"), Column("|z|²/d", ">"),
             Column("|z|²/d settled", ">"), Column("|z|²/d > 2", ">"), Column("diversity", ">")]
    rows = []
    for c in chains:
        n = c.num_chains
        ok0 = successes(judges[names[0]], c.before, target, threshold=threshold)
        cells = [c.model, c.energy_name, f"{c.step_size:g}", f"{c.steps}", f"{n // c.seeds} x {c.seeds}",
                 fmt_fraction(float(ok0.double().mean()), n)]
        first_ok = None
        for name in names:
            ok = successes(judges[name], c.images, target, threshold=threshold)
            first_ok = ok if first_ok is None else first_ok
            cells.append(str(_share(ok)))
        good = c.images[first_ok.to(c.images.device)]
        runaway = float((c.sq_norm[-1] > 2).double().mean())
        cells += [_mean(c.energy[0]), _mean(c.energy[-1]), "yes" if c.plateau("energy").plateaued else "no",
                  _mean(c.sq_norm[-1]), "yes" if c.plateau("sq_norm").plateaued else "no", fmt_fraction(runaway, n),
                  _diversity(good)]
        rows.append(cells)
    return Table(cols, rows)


# --- many targets in one run (the identity experiment: one target individual per chain) --------

def per_target_share(ok: torch.Tensor, targets: torch.Tensor, among) -> torch.Tensor:
    """``(len(among),)`` float64: the share of successes among the chains aimed at each target in
    ``among`` (``ok`` and ``targets`` ``(N,)``, chain ``n`` aimed at ``targets[n]``)."""
    _check_ok(ok, "ok")
    if targets.shape != ok.shape:
        raise ValueError(f"targets must be {tuple(ok.shape)}, got {tuple(targets.shape)}")
    out = []
    for t in among:
        hit = targets == int(t)
        if not hit.any():
            raise ValueError(f"no chain was aimed at target {int(t)}")
        out.append(ok[hit].double().mean())
    return torch.stack(out)


def _chains_per_target(targets: torch.Tensor, among) -> int:
    return min(int((targets == int(t)).sum()) for t in among)


def target_gap(ok_a: torch.Tensor, ok_b: torch.Tensor, targets: torch.Tensor, among, *,
               n_resamples: int = 2000) -> Interval:
    """Success share of model ``a`` minus model ``b`` over the targets ``among`` (a bucket of
    individuals), both guided towards the same targets (``targets`` ``(N,)`` for both): the mean over
    targets of the per-target difference, with a BCa bootstrap **over targets** (paired: a target that
    is hard for one model tends to be hard for the other), so the interval covers which individuals
    happened to be chosen as well as the chains' randomness. ``n`` is the number of targets and
    ``seeds`` the chains per target (every chain is an independent draw of start code and noise; ``unit``
    is ``"chains"``, so a table reads "8 x 6 chains": 8 targets, 6 chains each); printed as a share of
    ``n x seeds``."""
    among = list(among)
    if len(among) < 2:
        raise ValueError(f"among must name at least 2 targets, got {among!r}")
    a, b = per_target_share(ok_a, targets, among), per_target_share(ok_b, targets, among)
    iv = paired_bootstrap_ci(a, b, n_resamples=n_resamples)
    return as_share(dataclasses.replace(iv, n=len(among), seeds=_chains_per_target(targets, among), unit="chains"))


def target_rarity_gap(ok_a: torch.Tensor, ok_b: torch.Tensor, targets: torch.Tensor, rare, common, *,
                      n_resamples: int = 2000) -> Interval:
    """Does model ``a``'s advantage over ``b`` grow from the ``common`` targets to the ``rare`` ones?
    ``mean_rare(a - b) - mean_common(a - b)`` of the per-target differences, the two buckets
    resampled independently (BCa, :func:`~dpmlatent.evidence.unpaired_bootstrap_ci`); printed as a share."""
    rare, common = list(rare), list(common)
    if len(rare) < 2 or len(common) < 2 or set(rare) & set(common):
        raise ValueError("rare and common must each name at least 2 targets, and no target twice")
    d = {name: per_target_share(ok_a, targets, among) - per_target_share(ok_b, targets, among)
         for name, among in (("rare", rare), ("common", common))}
    iv = unpaired_bootstrap_ci(d["rare"], d["common"], n_resamples=n_resamples)
    return as_share(dataclasses.replace(iv, seeds=min(_chains_per_target(targets, rare),
                                                      _chains_per_target(targets, common)), unit="chains"))
