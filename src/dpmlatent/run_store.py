"""Sampler runs made once, stored, and checked when read back.

A comparison at matched faithfulness (:mod:`dpmlatent.matching`) runs each method a hundred times
or more over all inputs (chapter 4: 120 translation runs over 256 inputs; chapter 5: 150 editing
runs). The runs are deterministic given their seed, so a chapter need not make them all again
every time it is checked: a :class:`RunStore` keeps the *output images* of every run (not the
scores: those are computed again from the images, by the code that ships, every time), keyed by
everything the run depends on, and re-makes a random sample of them when they are read to check
that the store still is what the code makes.

* ``RunStore.open(folder, check=8)``: if ``folder`` holds a store, read it; the chapter's code asks
  for each run by key (:meth:`RunStore.images`), and the ``check`` runs picked at random (seeded)
  are made again and compared with the stored images. If it holds none, every run is made and
  recorded, and :meth:`RunStore.save` writes it (how a store is rebuilt: delete the folder and run
  the chapter).
* :meth:`RunStore.summary` says how many runs were read, made and checked, and the largest pixel
  difference a check found (floating-point noise between machines; a real change of the code is
  orders of magnitude larger).

Images are kept on a grid of :data:`GRID` (``2**-12``, 0.00024, a quarter of the smallest step an
8-bit image file has) as 16-bit integers: half the bytes of float32, and finer than any score the
book prints. A run is rounded to the grid *before* anything scores it, whether it was just made or
read back, so a chapter's numbers are the same in both cases.

Files: ``images.npz`` (compressed int16 arrays, one per run: the images divided by :data:`GRID`)
and ``run.json`` (the keys, the grid, the command that rebuilds the store, the torch version, the
sha256 of ``images.npz``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["GRID", "RESULTS_DIR", "RunStore", "StoreSummary", "check_store", "fingerprint", "run_images"]

#: Where the chapters' stores live (``results/`` at the repository root).
RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"

#: The grid the stored images are rounded to (int16 holds images in ``[-8, 8)``).
GRID = 2.0 ** -12


def _quantize(images: torch.Tensor, key) -> torch.Tensor:
    q = torch.round(images.detach().to("cpu", torch.float64) / GRID)
    if q.numel() and (not torch.isfinite(q).all() or q.abs().max() > 32767):
        raise ValueError(f"run {key!r} made images outside [-8, 8) or not finite; a store holds images in [-8, 8)")
    return q.to(torch.int16).contiguous()


def _dequantize(q: torch.Tensor) -> torch.Tensor:
    return q.to(torch.float32) * GRID


def _key_text(key) -> str:
    if not isinstance(key, tuple) or not key:
        raise TypeError(f"key must be a non-empty tuple of str/int/float/None, got {key!r}")
    for part in key:
        if not isinstance(part, (str, int, float, type(None))) or isinstance(part, bool):
            raise TypeError(f"key parts must be str, int, float or None, got {part!r} in {key!r}")
        if isinstance(part, str) and "|" in part:
            raise ValueError(f"key parts must not contain '|', got {part!r}")
    return "|".join(repr(p) for p in key)


def fingerprint(*parts) -> str:
    """A short hex digest (12 characters) of tensors (their dtype, shape and bytes), modules (every
    parameter and buffer, by name), mappings such as a scheduler's config (as sorted JSON) and strings
    or lists of strings: part of a run's key, so that a store never serves the runs of one model,
    scheduler or input set for another."""
    h = hashlib.sha256()

    def tensor(t: torch.Tensor) -> None:
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor(part)
        elif isinstance(part, torch.nn.Module):
            for name, t in part.state_dict().items():
                h.update(name.encode())
                tensor(t)
        elif isinstance(part, dict) or hasattr(part, "keys") and hasattr(part, "items"):
            h.update(json.dumps(dict(part), sort_keys=True, default=str).encode())
        elif isinstance(part, str):
            h.update(part.encode())
        elif isinstance(part, (list, tuple)) and all(isinstance(p, str) for p in part):
            h.update("\x00".join(part).encode())
        else:
            raise TypeError(f"fingerprint takes tensors and strings or lists of strings, got {type(part).__name__}")
        h.update(b"\x01")
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class StoreSummary:
    """What a store did in one session: ``stored`` runs in it, ``read`` of them asked for, ``made``
    (runs computed: all of them when recording, the checks when reading), ``checked`` (stored runs
    made again and compared), ``picked`` (runs picked for a check), ``max_difference`` (largest
    absolute pixel difference over the checked runs, both on the grid: 0, or a multiple of
    :data:`GRID` where floating-point noise crossed a rounding boundary), ``recording`` (the store
    was being built)."""

    stored: int
    read: int
    made: int
    checked: int
    picked: int
    max_difference: float
    recording: bool


class RunStore:
    """Output images of deterministic runs, keyed by what each run depends on (see the module)."""

    def __init__(self, folder=None, *, check: int = 8, seed: int = 0, tolerance: float = 1e-3):
        if not isinstance(check, int) or isinstance(check, bool) or check < 0:
            raise ValueError(f"check must be an integer >= 0 (stored runs re-made when read), got {check!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an integer, got {seed!r}")
        if not isinstance(tolerance, (int, float)) or not 0 < tolerance:
            raise ValueError(f"tolerance must be a number > 0 (largest pixel difference a check accepts), got {tolerance!r}")
        self.folder = None if folder is None else Path(folder)
        self.tolerance = float(tolerance)
        self._runs: dict[str, torch.Tensor] = {}          # int16, images / GRID
        self._read: set[str] = set()
        self._made = 0
        self._diffs: dict[str, float] = {}
        self._picked: set[str] = set()
        self.rebuild = ""
        self.recording = True
        if self.folder is not None and (self.folder / "run.json").exists():
            self._load()
            self.recording = False
            keys = sorted(self._runs)
            if check > len(keys):
                raise ValueError(f"check must be at most the {len(keys)} stored runs, got {check}")
            order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed))[:check]
            self._picked = {keys[i] for i in order.tolist()}

    @classmethod
    def open(cls, folder, *, check: int = 8, seed: int = 0, tolerance: float = 1e-3) -> RunStore:
        """Read the store in ``folder``, picking ``check`` runs (seeded by ``seed``) to make again and
        compare (a difference above ``tolerance`` raises); or start recording one if ``folder`` holds
        none."""
        if folder is None:
            raise TypeError("folder must be a path")
        return cls(folder, check=check, seed=seed, tolerance=tolerance)

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, key) -> bool:
        return _key_text(key) in self._runs

    def images(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The images of the run ``key``: read from the store (made again and compared if this run was
        picked for a check), or, while recording, ``make()``'s result, stored. Always the stored images
        (float32 on the CPU, on the grid :data:`GRID`), so a chapter computes the same scores whether it
        records or reads; a fresh tensor each time, so nothing a caller does to it changes the store.

        Raises:
            KeyError: reading a store that lacks ``key`` (the chapter changed: rebuild the store).
            ValueError: a checked run differs from the stored one by more than ``tolerance``.
        """
        name = _key_text(key)
        if name not in self._runs:
            if not self.recording:
                raise KeyError(f"run {key!r} is not in the store {self.folder}; the code asks for runs it was not "
                               f"built with: rebuild it ({self.rebuild or 'delete the folder and run the chapter'})")
            out = make()
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"make() must return a tensor of images, got {type(out).__name__}")
            self._made += 1
            self._runs[name] = _quantize(out, key)
        elif name in self._picked and name not in self._diffs:
            fresh = make()
            self._made += 1
            stored = self._runs[name]
            if not isinstance(fresh, torch.Tensor) or fresh.shape != stored.shape:
                raise ValueError(f"run {key!r} made images of shape {tuple(getattr(fresh, 'shape', ()))}, the store "
                                 f"holds {tuple(stored.shape)}: rebuild the store ({self.rebuild})")
            diff = float((_quantize(fresh, key).int() - stored.int()).abs().max()) * GRID if fresh.numel() else 0.0
            if not diff <= self.tolerance:
                raise ValueError(f"run {key!r} made again differs from the stored images by {diff:.3g} "
                                 f"(> tolerance {self.tolerance:g}): the code changed; rebuild the store ({self.rebuild})")
            self._diffs[name] = diff
        self._read.add(name)
        return _dequantize(self._runs[name])

    def summary(self) -> StoreSummary:
        return StoreSummary(len(self._runs), len(self._read), self._made, len(self._diffs), len(self._picked),
                            max(self._diffs.values(), default=0.0), self.recording)

    def save(self, *, rebuild: str) -> Path:
        """Write the store into its folder (``images.npz`` and ``run.json``); only while recording."""
        import numpy as np

        if not isinstance(rebuild, str) or not rebuild.strip():
            raise ValueError("rebuild must be the command that makes the store again, got an empty value")
        if self.folder is None:
            raise ValueError("this store has no folder to save into (RunStore.open(folder))")
        if not self.recording:
            raise ValueError(f"{self.folder} was read, not recorded: delete it and run again to rebuild it")
        if not self._runs:
            raise ValueError("the store holds no runs")
        keys = sorted(self._runs)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **{str(i): self._runs[k].numpy() for i, k in enumerate(keys)})
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "images.npz").write_bytes(buffer.getvalue())
        info = {"keys": keys, "grid": GRID, "rebuild": rebuild, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
        (self.folder / "run.json").write_text(json.dumps(info, indent=1) + "\n")
        self.rebuild = rebuild
        return self.folder

    def _load(self) -> None:
        import numpy as np

        info = json.loads((self.folder / "run.json").read_text())
        if info.get("grid") != GRID:
            raise ValueError(f"{self.folder} holds images on the grid {info.get('grid')}, this code uses {GRID}: rebuild it")
        data = (self.folder / "images.npz").read_bytes()
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ValueError(f"{self.folder / 'images.npz'} does not match the sha256 in run.json")
        with np.load(io.BytesIO(data)) as arrays:
            self._runs = {k: torch.from_numpy(arrays[str(i)].copy()) for i, k in enumerate(info["keys"])}
        self.rebuild = info["rebuild"]


def check_store(store) -> None:
    """Refuse a ``store=`` argument that is neither ``None`` nor a :class:`RunStore`."""
    if store is not None and not isinstance(store, RunStore):
        raise TypeError(f"store must be a RunStore or None, got {type(store).__name__}")


def run_images(store: RunStore | None, key: tuple, make: Callable[[], torch.Tensor], device) -> torch.Tensor:
    """The images of one run: ``make()`` without a store, else :meth:`RunStore.images` of ``key`` on ``device``."""
    return make() if store is None else store.images(key, make).to(device)
