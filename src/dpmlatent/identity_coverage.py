"""The identity-coverage experiment (Wu & De la Torre, Sec. 5, "individuals"): does a guided diffusion
model reach *individuals* that a guided GAN misses, and does its advantage grow as they get rarer?

The paper guides with ArcFace, ``E(x) = 1 - cos(ArcFace(x), ArcFace(x_ref))``, and shows the claim as
a figure. At the book's scale an individual is a typeface (:func:`dpmlatent.data.font_split`): the
generators (``ddpm-fonts-zipf``, ``gan-fonts-zipf``) saw 40 individuals with Zipf frequencies; the
energy is :func:`dpmlatent.energies.identity_energy` of the ``identity-fonts`` embedding, its
references one glyph of each digit drawn by the target; every chain aims at one target, and many
targets share one batch (chain ``b`` of a seed aims at target ``b % T``).

The verdicts rest on models that took no part in guiding: the ``identity-fonts-judge`` embedding (an
MLP, another seed) and the ``digit-judge``. A chain succeeds when the digit judge reads a digit ``d``
with ``p >= 0.9`` and the identity judge puts the sample within the threshold of the target's own
glyphs of ``d`` (:func:`dpmlatent.identity.identity_matches`); the threshold is set at a 1% false-accept
rate on glyphs of held-out individuals (:func:`calibrate`).

Buckets: ``"frequent"`` (the 8 most frequent generator individuals, 40 to 5 glyphs per digit),
``"rare"`` (every other one of ranks 26 to 40, 1 or 2 glyphs per digit), ``"held-out"`` (8 individuals
of the held-out faces, which no model saw).

The whole experiment (:func:`run`) costs hours of float64 Langevin on two CPU cores (the stored run's
``run.json`` records the seconds), far more than the book's test budget leaves to one chapter. So it
runs once, in ``benchmarks/identity_coverage.py --save`` (and ``--extend``, which continues the stored
chains, unadjusted or Metropolis-adjusted: :func:`extend`), which stores the chains (:func:`save_run`:
final codes and energy traces, no images); the chapter loads them (:func:`load_run`), decodes and judges
every image itself, and re-runs the first steps of every model's first seed and of its last segment to
check, number by number, that the stored chains are what this code computes (:func:`verify_run`); the
settling test runs on the adjusted steps (:func:`settling`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from . import data
from .identity import centre_pairs, identity_matches, reference_centres, threshold_at_far

__all__ = ["BUCKETS", "Calibration", "buckets", "references", "calibrate", "chain_targets",
           "nearest_distance", "within_target_diversity", "Settings", "IdentityRun", "coverage_models",
           "run", "save_run", "load_run", "decode", "verify_run", "extend", "RESTART_OFFSET", "Segment",
           "settling", "Judged", "judge_run", "bucket_table", "verdicts", "RUN_PATH"]

#: Where the book keeps the stored run (written by ``benchmarks/identity_coverage.py --save``): the
#: repository's ``results/identity_coverage`` (the package is installed editable, ``pip install -e .``;
#: pass a folder to :func:`load_run` otherwise).
RUN_PATH = Path(__file__).resolve().parents[2] / "results" / "identity_coverage"

BUCKETS = ("frequent", "rare", "held-out")


def buckets(split: data.FontSplit | None = None, *, per_bucket: int = 8) -> dict[str, tuple[int, ...]]:
    """The target individuals of each bucket (indices into :func:`dpmlatent.data.font_names`):
    ``"frequent"`` the ``per_bucket`` most frequent generator individuals, ``"rare"`` ``per_bucket`` of the
    rarest spread evenly over the tail (ranks ``n - 2 per_bucket + 2, ..., n`` in steps of 2), ``"held-out"``
    ``per_bucket`` held-out individuals spread over the held-out faces."""
    split = data.font_split() if split is None else split
    if not isinstance(per_bucket, int) or isinstance(per_bucket, bool) or not 2 <= per_bucket <= len(split.generator) // 4:
        raise ValueError(f"per_bucket must be an integer in [2, {len(split.generator) // 4}], got {per_bucket!r}")
    gen, held = split.generator, split.held_out
    rare = gen[len(gen) - 2 * per_bucket + 1::2]
    step = len(held) / per_bucket
    return {"frequent": tuple(gen[:per_bucket]), "rare": tuple(rare),
            "held-out": tuple(held[math.floor(i * step)] for i in range(per_bucket))}


def references(targets: Sequence[int], *, seed: int = 11, dtype=torch.float64) -> list[torch.Tensor]:
    """The energy's references: one fresh glyph of every digit drawn by each target, ``(10, 1, 8, 8)``
    each (for :func:`dpmlatent.energies.identity_energy`'s list form)."""
    g = data.font_glyphs(targets, 1, seed=seed)
    return [g.images[g.individuals == t].to(dtype) for t in targets]


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The identity judge's gallery and threshold.

    ``centres``: ``(110, 10, D)`` :func:`~dpmlatent.identity.reference_centres` of the judge (8 fresh glyphs
    per digit of every individual); ``threshold``: the cosine at ``far`` false accepts on held-out probes;
    ``tar``: the share of held-out probes accepted by their own individual at that threshold (how often a
    *real* glyph of the target passes: the ceiling of any success rate); ``n_same`` / ``n_different``: the
    probe pairs behind them."""

    centres: torch.Tensor
    threshold: float
    far: float
    tar: float
    n_same: int
    n_different: int


@functools.lru_cache(maxsize=4)
def _gallery(per_digit: int, seed: int) -> data.FontIndividuals:
    """Every individual's gallery glyphs (8,800 renders at the defaults, about a second): drawn once per
    ``(per_digit, seed)`` and shared by every :func:`calibrate` call (read only)."""
    return data.font_glyphs(range(len(data.font_names())), per_digit, seed=seed)


@torch.no_grad()
def calibrate(judge: torch.nn.Module, split: data.FontSplit | None = None, *, far: float = 0.01,
              gallery_per_digit: int = 8, probes_per_digit: int = 2, seed: int = 12) -> Calibration:
    """Build the judge's gallery of every individual from ``gallery_per_digit`` fresh glyphs per digit
    (draw ``seed``), and set the "same individual" threshold at false-accept rate ``far`` from
    probes of the held-out individuals (draw ``seed + 1``) against every other held-out individual's
    centre of the same digit (:func:`~dpmlatent.identity.centre_pairs`)."""
    split = data.font_split() if split is None else split
    p = next(judge.parameters())
    gallery = _gallery(gallery_per_digit, seed)
    centres = reference_centres(judge, gallery.images.to(p.device, p.dtype), gallery.individuals, gallery.labels,
                                len(data.font_names()))
    probes = data.font_glyphs(split.held_out, probes_per_digit, seed=seed + 1)
    same, diff = centre_pairs(judge(probes.images.to(p.device, p.dtype)), probes.individuals.to(p.device),
                              probes.labels.to(p.device), centres, split.held_out)
    t = threshold_at_far(diff, far)
    return Calibration(centres, t, far, float((same >= t).double().mean()), len(same), len(diff))


def chain_targets(targets: Sequence[int], chains_per_seed: int, seeds: int) -> torch.Tensor:
    """``(chains_per_seed * seeds,)`` int64: the target of every chain of a coverage run (seed-major;
    within a seed, chain ``b`` aims at ``targets[b % T]``)."""
    targets = list(targets)
    if not targets or chains_per_seed % len(targets):
        raise ValueError(f"chains_per_seed ({chains_per_seed}) must be a multiple of the number of targets "
                         f"({len(targets)})")
    return torch.tensor(targets).repeat(chains_per_seed // len(targets) * seeds)


def nearest_distance(images: torch.Tensor, train: torch.Tensor, *, return_index: bool = False):
    """``(N,)`` float64: each image's L2 distance to its nearest image in ``train`` (pixels in
    ``[-1, 1]``): a sample much closer to the training set than fresh glyphs of the same individual
    would be a copy. With ``return_index``, also the ``(N,)`` index of that nearest training image."""
    a = images.flatten(1).double().cpu()
    b = train.flatten(1).double().cpu()
    nearest = torch.cdist(a, b).min(1)
    return (nearest.values, nearest.indices) if return_index else nearest.values


def within_target_diversity(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance among the images of each target that has at least two, ``(k,)``
    float64 (one value per such target): the spread of what guidance found for one individual."""
    if targets.shape != (len(images),):
        raise ValueError(f"targets must be ({len(images)},), got {tuple(targets.shape)}")
    out = []
    for t in targets.unique():
        x = images[targets == t].flatten(1).double()
        if len(x) >= 2:
            d = torch.cdist(x, x)
            out.append(d.sum() / (len(x) * (len(x) - 1)))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


# --- the experiment, stored once and checked by the chapter ---------------------------------------

@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of a model's chains between two restarts: Langevin steps ``start`` to ``stop``, the
    noise drawn from generators seeded ``seed + restart · RESTART_OFFSET``, Metropolis-adjusted or not."""

    start: int
    stop: int
    restart: int
    metropolis: bool

    @property
    def steps(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass(frozen=True)
class Settings:
    """The experiment's settings: ``seeds`` (each draws ``chains`` start codes and the Langevin noise
    of every model), ``chains`` per seed (a multiple of the 24 targets), the energy's ``weight`` (the
    same for both models), each model's Langevin step size and number of steps, ``every``: the
    stored traces keep every ``every``-th step (and the last).

    ``diffusion_restarts`` / ``gan_restarts``: the steps (increasing, below the model's steps, multiples
    of ``every``) after which that model's chains draw their Langevin noise from fresh generators (after
    the ``k``-th restart seeded ``seed + k · RESTART_OFFSET``): the run was made by extending a stored one
    (:func:`extend`), and a run from scratch with these settings makes the same chains.
    ``diffusion_metropolis_from`` / ``gan_metropolis_from``: ``None`` (unadjusted Langevin, ULA,
    throughout) or the step from which that model's chains are Metropolis-adjusted (MALA,
    :func:`~dpmlatent.guidance.langevin`) to the end: ``0`` or one of its restarts (unadjusted steps
    before it are burn-in)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    chains: int = 48
    weight: float = 300.0
    diffusion_step: float = 0.005
    diffusion_steps: int = 1600
    gan_step: float = 0.001
    gan_steps: int = 8000
    every: int = 5
    diffusion_restarts: tuple[int, ...] = ()
    gan_restarts: tuple[int, ...] = ()
    diffusion_metropolis_from: int | None = None
    gan_metropolis_from: int | None = None

    def __post_init__(self):
        is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or not all(is_int(x) and x >= 0 for x in self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds!r}")
        if not is_int(self.chains) or self.chains < 24 or self.chains % 24:
            raise ValueError(f"chains must be a positive multiple of 24 (the targets), got {self.chains!r}")
        for name in ("weight", "diffusion_step", "gan_step"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        if not is_int(self.every) or self.every < 1:
            raise ValueError(f"every must be an integer >= 1, got {self.every!r}")
        for model in ("diffusion", "gan"):
            steps = getattr(self, f"{model}_steps")
            if not is_int(steps) or steps < 1 or steps % self.every:
                raise ValueError(f"{model}_steps must be a positive multiple of every ({self.every}), got {steps!r}")
            r = getattr(self, f"{model}_restarts")
            if (not isinstance(r, tuple) or not all(is_int(x) and 0 < x < steps and not x % self.every for x in r)
                    or list(r) != sorted(set(r))):
                raise ValueError(f"{model}_restarts must be a tuple of increasing multiples of every ({self.every}) "
                                 f"in (0, {steps}), got {r!r}")
            m = getattr(self, f"{model}_metropolis_from")
            if m is not None and (not is_int(m) or m not in (0, *r)):
                raise ValueError(f"{model}_metropolis_from must be None, 0 or one of {model}_restarts {r}, got {m!r}")

    def _key(self, model: str) -> str:
        if model not in ("diffusion", "GAN"):
            raise ValueError(f"model must be 'diffusion' or 'GAN', got {model!r}")
        return model.lower()

    def langevin(self, model: str) -> tuple[float, int]:
        """``(step size, steps)`` of ``model``'s chains: ``"diffusion"`` or ``"GAN"``."""
        k = self._key(model)
        return getattr(self, f"{k}_step"), getattr(self, f"{k}_steps")

    def segments(self, model: str) -> list[Segment]:
        """``model``'s chains as :class:`Segment` s, split at its restarts."""
        k = self._key(model)
        ends = [0, *getattr(self, f"{k}_restarts"), getattr(self, f"{k}_steps")]
        mala = getattr(self, f"{k}_metropolis_from")
        return [Segment(a, b, i, mala is not None and a >= mala) for i, (a, b) in enumerate(zip(ends, ends[1:]))]

    def adjusted_steps(self, model: str) -> int:
        """How many of ``model``'s steps are Metropolis-adjusted (0 for unadjusted chains)."""
        return sum(seg.steps for seg in self.segments(model) if seg.metropolis)

    def metropolis_start(self, model: str) -> int | None:
        """The Langevin step where ``model``'s Metropolis-adjusted steps begin (``None``: none are)."""
        return next((seg.start for seg in self.segments(model) if seg.metropolis), None)


@dataclasses.dataclass
class IdentityRun:
    """A run of the experiment: its :class:`Settings`, the target of every chain ``targets``
    ``(S·N,)``, ``chains`` (model name -> :class:`~dpmlatent.coverage.Chains`, traces possibly thinned:
    row ``i`` of a trace is Langevin step ``trace_steps[name][i]``), the ``seconds`` each model took,
    and ``segment_start``: for a model whose chains have restarts, the codes ``(S·N, d)`` float64 where
    its last :meth:`Settings.segments` began (so a reader can re-run the start of that segment too)."""

    settings: Settings
    targets: torch.Tensor
    chains: dict
    trace_steps: dict
    seconds: dict
    segment_start: dict = dataclasses.field(default_factory=dict)


def _targets() -> list[int]:
    b = buckets()
    return [t for name in BUCKETS for t in b[name]]


def coverage_models(settings: Settings = Settings(), *, dtype=torch.float64) -> dict:
    """``{"diffusion": CoverageModel, "GAN": CoverageModel}``: ``ddpm-fonts-zipf`` through 10 DDIM steps
    with ``eta = 1`` (a 704-dimensional code) and ``gan-fonts-zipf`` (its code), with the settings'
    step sizes, in ``dtype``; ``steps`` and ``metropolis`` are those of each model's first
    :meth:`Settings.segments` (a run with restarts continues with :func:`extend`)."""
    from diffusers import DDIMScheduler

    from . import zoo
    from .coverage import CoverageModel
    from .guidance import diffusion_generator
    from .latent import sample_latent

    pipe = zoo.load("ddpm-fonts-zipf", dtype=dtype, memory_format=torch.channels_last)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    g_diff = diffusion_generator(pipe.unet.requires_grad_(False), sched, eta=1.0, checkpoint=False)
    gan = zoo.load("gan-fonts-zipf").to(dtype).requires_grad_(False)
    n = settings.chains
    first = {name: settings.segments(name)[0] for name in ("diffusion", "GAN")}
    return {
        "diffusion": CoverageModel(g_diff, lambda s: sample_latent((n, 1, 8, 8), sched, 10, 1.0, dtype=dtype,
                                                                  generator=torch.Generator().manual_seed(s)),
                                   settings.diffusion_step, first["diffusion"].steps,
                                   metropolis=first["diffusion"].metropolis),
        "GAN": CoverageModel(gan, lambda s: torch.randn(n, gan.config.latent_dim, dtype=dtype,
                                                        generator=torch.Generator().manual_seed(s)),
                             settings.gan_step, first["GAN"].steps, batch_seeds=True,
                             metropolis=first["GAN"].metropolis),
    }


def _energy(dtype=torch.float64):
    from . import zoo
    from .energies import identity_energy

    embed = zoo.load("identity-fonts").to(dtype).requires_grad_(False)
    return identity_energy(embed, references(_targets(), dtype=dtype))


RESTART_OFFSET = 1000
"""``k · RESTART_OFFSET`` is added to each seed for the Langevin noise after the ``k``-th restart."""


def run(settings: Settings = Settings(), *, progress: bool = True) -> IdentityRun:
    """Guide both models towards the 24 targets (chain ``b`` of a seed aims at target ``b % 24``) with
    :func:`~dpmlatent.coverage.coverage_experiment`, float64 on the portable grid (the same chains across
    kernel paths and Intel machines; on an AMD machine a few diffusion chains part, see
    :func:`verify_run`). About 80 minutes on two cores with the default settings; the stored run's
    ``run.json`` records what its settings took. A model with
    restarts runs its first :meth:`Settings.segments` and is continued segment by segment as
    :func:`extend` continues a stored run."""
    from .coverage import coverage_experiment
    from .guidance import PORTABLE_GRID

    energy = _energy()
    chains, seconds, segment_start = {}, {}, {}
    for name, m in coverage_models(settings).items():
        start = time.perf_counter()
        chains[name] = coverage_experiment({name: m}, {"identity": (settings.weight, energy)},
                                           seeds=list(settings.seeds), grid=PORTABLE_GRID,
                                           progress=progress)[name, "identity"]
        for seg in settings.segments(name)[1:]:
            segment_start[name] = chains[name].codes
            chains[name] = _continue(chains[name], m, settings, seg, energy, progress)
        seconds[name] = time.perf_counter() - start
    steps = {name: torch.arange(c.steps + 1) for name, c in chains.items()}
    return IdentityRun(settings, chain_targets(_targets(), settings.chains, len(settings.seeds)), chains, steps,
                       seconds, segment_start)


def _continue(old, m, settings: Settings, seg: Segment, energy, progress: bool):
    """``old`` :class:`~dpmlatent.coverage.Chains` continued from their final codes through ``seg``
    (noise offset ``seg.restart · RESTART_OFFSET``): traces concatenated, the new final codes and
    images, the acceptance averaged over every adjusted step."""
    from .coverage import CoverageModel, _code_of, coverage_experiment
    from .guidance import PORTABLE_GRID

    s, n = settings, settings.chains

    def stored(seed: int):
        i = s.seeds.index(seed)
        return _code_of(m.codes(seed), old.codes[i * n:(i + 1) * n])

    more = coverage_experiment({old.model: CoverageModel(m.generator, stored, m.step_size, seg.steps,
                                                         batch_seeds=m.batch_seeds, metropolis=seg.metropolis)},
                               {"identity": (s.weight, energy)}, seeds=list(s.seeds), grid=PORTABLE_GRID,
                               noise_offset=seg.restart * RESTART_OFFSET, progress=progress)[old.model, "identity"]
    done = sum(x.steps for x in s.segments(old.model) if x.metropolis and x.stop <= seg.start)
    acceptance = old.acceptance
    if seg.metropolis:
        acceptance = (more.acceptance if old.acceptance is None or done == 0
                      else (old.acceptance * done + more.acceptance * seg.steps) / (done + seg.steps))
    return dataclasses.replace(old, steps=seg.stop, images=more.images,
                               energy=torch.cat([old.energy, more.energy[1:].to(old.energy.dtype)]),
                               sq_norm=torch.cat([old.sq_norm, more.sq_norm[1:].to(old.sq_norm.dtype)]),
                               codes=more.codes, acceptance=acceptance)


def extend(result: IdentityRun, steps: int, *, model: str = "diffusion", metropolis: bool = False,
           progress: bool = True) -> IdentityRun:
    """Continue ``result``'s ``model`` chains (from their final codes) for ``steps`` more Langevin steps
    with fresh noise (seed ``s + k · RESTART_OFFSET`` for seed ``s`` at the ``k``-th restart), same step
    size, energy and grid; ``metropolis``: the new steps are Metropolis-adjusted (a chain that is
    adjusted already stays so). The returned run's settings say so (the model's steps grown, the old
    count appended to its restarts, ``*_metropolis_from`` set where the adjusted steps begin), and
    :func:`run` with them makes the same chains from scratch; its traces are the old ones followed
    by the new steps; the other model's chains are kept as they are."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or steps % result.settings.every:
        raise ValueError(f"steps must be a positive multiple of every ({result.settings.every}), got {steps!r}")
    if not isinstance(metropolis, bool):
        raise TypeError(f"metropolis must be True or False, got {metropolis!r}")
    s = result.settings
    if model not in result.chains:
        raise ValueError(f"model must be one of {sorted(result.chains)}, got {model!r}")
    k = s._key(model)
    old_steps, mala = getattr(s, f"{k}_steps"), getattr(s, f"{k}_metropolis_from")
    if mala is not None and not metropolis:
        raise ValueError(f"the {model} chains are Metropolis-adjusted from step {mala}: extend them with metropolis=True")
    if mala is None and metropolis:
        mala = old_steps
    new = dataclasses.replace(s, **{f"{k}_steps": old_steps + steps,
                                    f"{k}_restarts": getattr(s, f"{k}_restarts") + (old_steps,),
                                    f"{k}_metropolis_from": mala})
    start = time.perf_counter()
    chains = dict(result.chains)
    chains[model] = _continue(result.chains[model], coverage_models(s)[model], new, new.segments(model)[-1],
                              _energy(), progress)
    last = int(result.trace_steps[model][-1])
    trace_steps = dict(result.trace_steps)
    trace_steps[model] = torch.cat([result.trace_steps[model], last + torch.arange(1, steps + 1)])
    seconds = dict(result.seconds)
    seconds[model] = seconds[model] + time.perf_counter() - start
    return IdentityRun(new, result.targets, chains, trace_steps, seconds,
                       {**result.segment_start, model: result.chains[model].codes})


def settling(result: IdentityRun, name: str, what: str = "energy"):
    """:meth:`~dpmlatent.coverage.Chains.plateau` of model ``name``'s ``"energy"`` or ``"sq_norm"``
    trace, with both windows inside the stretch that one sampler made: the Metropolis-adjusted steps
    where there are any (a drift measured across the change from unadjusted to adjusted steps would
    count the change of sampler as drift), else the whole chain (a restart only draws fresh noise).
    The window is a quarter of the trace, or half that stretch if that is shorter."""
    if name not in result.chains:
        raise ValueError(f"name must be one of {sorted(result.chains)}, got {name!r}")
    if what not in ("energy", "sq_norm"):
        raise ValueError(f"what must be 'energy' or 'sq_norm', got {what!r}")
    s, c = result.settings, result.chains[name]
    rows = len(result.trace_steps[name])
    stretch = (s.adjusted_steps(name) or s.langevin(name)[1]) // s.every
    return c.plateau(what, window=max(1, min(rows // 4, stretch // 2)))


def _rebuild_command(s: Settings) -> str:
    """The benchmark command that stores a run with settings ``s``."""
    opts = []
    for k in ("diffusion", "gan"):
        if getattr(s, f"{k}_restarts"):
            opts.append(f" --{k}-restarts {' '.join(map(str, getattr(s, f'{k}_restarts')))}")
        if getattr(s, f"{k}_metropolis_from") is not None:
            opts.append(f" --{k}-metropolis-from {getattr(s, f'{k}_metropolis_from')}")
    return (f"python benchmarks/identity_coverage.py --save --seeds {' '.join(map(str, s.seeds))} --chains {s.chains} "
            f"--weight {s.weight:g} --diffusion-step {s.diffusion_step:g} --diffusion-steps {s.diffusion_steps} "
            f"--gan-step {s.gan_step:g} --gan-steps {s.gan_steps}{''.join(opts)}")


def save_run(result: IdentityRun, folder=RUN_PATH) -> Path:
    """Store ``result`` in ``folder``: ``chains.safetensors`` (every model's final codes in float64 and its
    energy and ``‖z‖²/d`` traces every ``settings.every`` steps in float32, a Metropolis-adjusted model's
    per-chain acceptance, the codes where a model's last segment starts as int16 multiples of the portable
    grid, the chains' targets) and ``run.json`` (settings, seconds, shapes, sha256 of the tensors file).
    No images: the reader decodes them from the codes (:func:`decode`)."""
    import hashlib

    from safetensors.torch import save_file

    from .guidance import PORTABLE_GRID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    every = result.settings.every
    tensors = {"targets": result.targets.contiguous()}
    for name, c in result.chains.items():
        keep = torch.nonzero(result.trace_steps[name] % every == 0).flatten()
        if not torch.equal(result.trace_steps[name][keep], torch.arange(0, c.steps + 1, every)):
            raise ValueError(f"the {name} traces must hold every {every}-th step from 0 to {c.steps}")
        tensors[f"{name}.codes"] = c.codes.double().contiguous()
        tensors[f"{name}.energy"] = c.energy[keep].float().contiguous()
        tensors[f"{name}.sq_norm"] = c.sq_norm[keep].float().contiguous()
        if c.acceptance is not None:
            tensors[f"{name}.acceptance"] = c.acceptance.double().contiguous()
        if name in result.segment_start:               # codes on the portable grid: int16 multiples of it, exact
            steps_of_grid = result.segment_start[name].double() / PORTABLE_GRID
            if not torch.equal(steps_of_grid, steps_of_grid.round()) or steps_of_grid.abs().max() > 32767:
                raise ValueError(f"the {name} codes where the last segment starts must lie on the portable grid")
            tensors[f"{name}.segment_start"] = steps_of_grid.round().to(torch.int16).contiguous()
    save_file(tensors, folder / "chains.safetensors")
    meta = {"settings": dataclasses.asdict(result.settings), "seconds": result.seconds,
            "dims": {name: c.dim for name, c in result.chains.items()},
            "rebuild": _rebuild_command(result.settings),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "sha256": hashlib.sha256((folder / "chains.safetensors").read_bytes()).hexdigest()}
    (folder / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_run(folder=RUN_PATH) -> IdentityRun:
    """The run :func:`save_run` stored (its sha256 checked). ``Chains.images`` and ``.before`` are left
    empty: get them with :func:`decode`."""
    import hashlib

    from safetensors.torch import load_file

    from .coverage import Chains
    from .guidance import PORTABLE_GRID

    folder = Path(folder)
    if not (folder / "run.json").exists():
        raise FileNotFoundError(f"no stored identity-coverage run in {folder}; make one with "
                                f"'python benchmarks/identity_coverage.py --save'")
    meta = json.loads((folder / "run.json").read_text())
    digest = hashlib.sha256((folder / "chains.safetensors").read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise ValueError(f"{folder / 'chains.safetensors'} does not match the sha256 in run.json")
    t = load_file(folder / "chains.safetensors")
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    chains, steps = {}, {}
    for name in meta["dims"]:                                   # the models the run stored, in its order
        step, n_steps = settings.langevin(name)
        empty = torch.zeros(0)
        chains[name] = Chains(name, "identity", settings.weight, step, n_steps, meta["dims"][name],
                              len(settings.seeds), empty, empty, t[f"{name}.energy"].double(),
                              t[f"{name}.sq_norm"].double(), t[f"{name}.codes"], t.get(f"{name}.acceptance"))
        steps[name] = torch.arange(0, n_steps + 1, settings.every)
    starts = {name: t[f"{name}.segment_start"].double() * PORTABLE_GRID for name in meta["dims"]
              if f"{name}.segment_start" in t}
    return IdentityRun(settings, t["targets"], chains, steps, meta["seconds"], starts)


@torch.no_grad()
def decode(result: IdentityRun, name: str, *, models: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(before, images)``: ``G(z0)`` of the start codes (drawn again from the seeds) and ``G(z)`` of
    the stored final codes of model ``name``, ``(S·N, 1, 8, 8)`` float64 each (``models``:
    :func:`coverage_models` of the run's settings, if the caller has them already)."""
    if name not in result.chains:
        raise ValueError(f"name must be one of {sorted(result.chains)}, got {name!r}")
    from .coverage import _code_of

    m = (coverage_models(result.settings) if models is None else models)[name]
    starts = [m.codes(seed) for seed in result.settings.seeds]
    n = result.settings.chains
    codes = result.chains[name].codes
    before, after = [], []
    for i, z0 in enumerate(starts):
        before.append(m.generator(z0))
        after.append(m.generator(_code_of(z0, codes[i * n:(i + 1) * n])))
    return torch.cat(before), torch.cat(after)


def verify_run(result: IdentityRun, *, steps: dict | None = None, progress: bool = False) -> dict:
    """Re-run the first ``steps[name]`` Langevin steps of every model's first seed (default: 50 for the
    diffusion model, 400 for the GAN) and compare the energy and ``‖z‖²/d`` traces, step by step, with
    the stored ones; where a model's chains have restarts, do the same for the first ``steps[name]``
    steps of its last segment, from the stored codes where it began (``IdentityRun.segment_start``,
    with that segment's noise and sampler: the Metropolis-adjusted steps are checked too); decode the
    stored final codes and compare their energy with the trace's last value.

    Returns ``{name: {"steps": k, "trace": max |difference| over the re-run steps, "agree": the share of
    the first seed's chains whose traces all agree to 1e-6, "final": max |difference| of the final
    energy, "segment": None or {"start": the step where the last segment began, "trace", "agree"} of its
    re-run}}`` (the stored traces are float32: a chain the code makes again on the same kind of CPU
    differs by about 1e-7, far below anything a chaotic chain that went another way shows; on a CPU
    whose BLAS sums in another order, an AMD against the Intel machine that made the store, a few
    diffusion chains cross a boundary of the portable grid within tens of steps and go their own way,
    so ``agree`` falls below 1 there while a change of the code would bring it near 0)."""
    from .coverage import CoverageModel, _code_of, coverage_experiment
    from .guidance import PORTABLE_GRID

    steps = {"diffusion": 50, "GAN": 400} if steps is None else steps
    s = result.settings
    if not isinstance(steps, dict) or set(steps) != set(result.chains):
        raise ValueError(f"steps must map every model {sorted(result.chains)} to a number of steps, got {steps!r}")
    for name, c in result.chains.items():
        shortest = min(seg.steps for seg in s.segments(name))
        if not 1 <= steps[name] <= shortest or steps[name] % s.every:
            raise ValueError(f"steps[{name!r}] must be a multiple of {s.every} in [1, {shortest}] (the shortest "
                             f"segment), got {steps[name]!r}")
    energy, models = _energy(), coverage_models(s)
    n, seed = s.chains, s.seeds[0]

    def compare(name, m, seg, k):
        again = coverage_experiment({name: dataclasses.replace(m, steps=k, metropolis=seg.metropolis)},
                                    {"identity": (s.weight, energy)}, seeds=[seed], grid=PORTABLE_GRID,
                                    noise_offset=seg.restart * RESTART_OFFSET, progress=progress)[name, "identity"]
        mine = torch.arange(0, k + 1, s.every)
        rows = (seg.start + mine) // s.every                      # rows of the stored (thinned) traces
        c = result.chains[name]
        diff = torch.maximum((again.energy[mine].float().double() - c.energy[rows, :n]).abs().amax(0),
                             (again.sq_norm[mine].float().double() - c.sq_norm[rows, :n]).abs().amax(0))
        return float(diff.max()), float((diff <= 1e-6).double().mean())

    out = {}
    for name, c in result.chains.items():
        k, m, segs = steps[name], models[name], s.segments(name)
        trace, agree = compare(name, m, segs[0], k)
        segment = None
        if len(segs) > 1:
            if name not in result.segment_start:
                raise ValueError(f"the run does not hold the codes where the {name} chains' last segment began; "
                                 f"store it again with this version of save_run")
            start = _code_of(m.codes(seed), result.segment_start[name][:n])
            resumed = CoverageModel(m.generator, lambda _: start, m.step_size, k, batch_seeds=m.batch_seeds)
            seg_trace, seg_agree = compare(name, resumed, segs[-1], k)
            segment = {"start": segs[-1].start, "trace": seg_trace, "agree": seg_agree}
        _, images = decode(result, name, models=models)
        final = float((energy(images).double().float().double() - c.energy[-1]).abs().max())
        out[name] = {"steps": k, "trace": trace, "agree": agree, "final": final, "segment": segment}
    return out


@dataclasses.dataclass
class Judged:
    """Every chain's verdicts. ``before`` / ``images``: model -> ``G(z0)`` / ``G(z)``; ``ok``: model ->
    ``(S·N,)`` bool, success by the independent judges (``identity-fonts-judge`` + ``digit-judge``);
    ``ok_before``: the same of the unguided starts; ``ok_self``: success by the energy's own embedding
    (self-judged, shown only to compare); ``calibration`` / ``calibration_self``: the two thresholds."""

    before: dict
    images: dict
    ok: dict
    ok_before: dict
    ok_self: dict
    calibration: Calibration
    calibration_self: Calibration


def judge_run(result: IdentityRun, *, far: float = 0.01) -> Judged:
    """Decode every model's chains (:func:`decode`) and judge them (:func:`dpmlatent.identity.identity_matches`),
    both identity thresholds set at false-accept rate ``far`` (:func:`calibrate`)."""
    from . import zoo

    f64 = torch.float64
    embed = zoo.load("identity-fonts").to(f64)
    judge = zoo.load("identity-fonts-judge").to(f64)
    digit_judge = zoo.load("digit-judge").to(f64)
    cal, cal_self = calibrate(judge, far=far), calibrate(embed, far=far)
    before, images, ok, ok_before, ok_self = {}, {}, {}, {}, {}
    who = result.targets
    models = coverage_models(result.settings)
    for name in result.chains:
        before[name], images[name] = decode(result, name, models=models)
        match = dict(digit_judge=digit_judge, centres=cal.centres, threshold=cal.threshold)
        ok[name] = identity_matches(images[name], who, embed=judge, **match)
        ok_before[name] = identity_matches(before[name], who, embed=judge, **match)
        ok_self[name] = identity_matches(images[name], who, embed=embed, digit_judge=digit_judge,
                                         centres=cal_self.centres, threshold=cal_self.threshold)
    return Judged(before, images, ok, ok_before, ok_self, cal, cal_self)


def bucket_table(result: IdentityRun, judged: Judged):
    """One row per model and bucket: chains, success of the unguided starts, success with its 95%
    Wilson interval (independent judges), self-judged success, final energy and ``‖z‖²/d`` (mean ±
    standard error over chains), diversity of the successes (mean pairwise L2 within a target, and how
    many targets had two or more), and the nearest-training-image distance of the successes beside that
    of fresh real glyphs of the same targets (a copy of the training set would sit far below)."""
    from .evidence import as_share, wilson_interval
    from .reporting import Column, Table, fmt

    b_all = buckets()
    train = data.zipf_fonts("train").images
    fresh = data.font_glyphs(_targets(), 1, seed=21)
    who = result.targets
    rows = []
    for name, c in result.chains.items():
        ok = judged.ok[name]
        for b in BUCKETS:
            mask = torch.isin(who, torch.tensor(b_all[b]))
            k, n = int(ok[mask].sum()), int(mask.sum())
            good = judged.images[name][mask][ok[mask]]
            real = fresh.images[torch.isin(fresh.individuals, torch.tensor(b_all[b]))]
            div = within_target_diversity(good, who[mask][ok[mask]])
            near, near_real = nearest_distance(good, train), nearest_distance(real, train)
            rows.append([name, b, f"{n}", f"{judged.ok_before[name][mask].double().mean():.2f}",
                         str(as_share(wilson_interval(k, n))), f"{judged.ok_self[name][mask].double().mean():.2f}",
                         fmt(c.energy[-1, mask].mean(), float(c.energy[-1, mask].std() / n ** 0.5)),
                         fmt(c.sq_norm[-1, mask].mean(), float(c.sq_norm[-1, mask].std() / n ** 0.5)),
                         f"{div.mean():.2f} ({len(div)})" if len(div) else "-",
                         f"{near.mean():.2f}" if len(near) else "-", f"{near_real.mean():.2f}"])
    return Table([Column("model"), Column("bucket"), Column("chains", ">"), Column("success unguided", ">"),
                  Column("success [95% CI]", ">"), Column("self-judged", ">"), Column("E after", ">"),
                  Column("|z|²/d after", ">"), Column("diversity (targets)", ">"), Column("NN dist, successes", ">"),
                  Column("NN dist, real glyphs", ">")], rows,
                 title=f"Identity guidance, weight {result.settings.weight:g}, judged by identity-fonts-judge + "
                       f"digit-judge")


def verdicts(result: IdentityRun, judged: Judged, *, self_judged: bool = False) -> list:
    """The paper's claim, per bucket (diffusion - GAN success over targets, :func:`~dpmlatent.coverage.target_gap`),
    and "the advantage grows as individuals get rarer" (rare and held-out against frequent,
    :func:`~dpmlatent.coverage.target_rarity_gap`). ``self_judged``: success by the energy's own model
    (``judged.ok_self``), marked as such, only to show what self-judging would conclude."""
    from .coverage import target_gap, target_rarity_gap
    from .evidence import Verdict

    b = buckets()
    ok, who = (judged.ok_self if self_judged else judged.ok), result.targets
    far = (judged.calibration_self if self_judged else judged.calibration).far
    judge = (f"identity-fonts (defines the energy) + digit-judge, FAR {far:.0%}" if self_judged
             else f"identity-fonts-judge (MLP) + digit-judge, FAR {far:.0%}")
    claim = "guided diffusion reaches individuals more often than a guided GAN"
    out = [Verdict(claim + f" ({name})", f"success, diffusion - GAN, mean over {len(b[name])} targets", judge,
                   target_gap(ok["diffusion"], ok["GAN"], who, b[name]), self_judged=self_judged) for name in BUCKETS]
    out += [Verdict("the advantage grows as individuals get rarer",
                    f"(diffusion - GAN) {rare} - (diffusion - GAN) frequent", judge,
                    target_rarity_gap(ok["diffusion"], ok["GAN"], who, b[rare], b["frequent"]), self_judged=self_judged)
            for rare in ("rare", "held-out")]
    return out
