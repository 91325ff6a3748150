"""Which CPU kernel path stores the chapters' outputs, and which one checks them.

PyTorch picks its vectorised CPU kernels per machine (``torch.backends.cpu.get_cpu_capability()``:
AVX512, AVX2, DEFAULT, ...), and floating-point results differ between them in the last bits.
A book whose stored outputs only reproduce on the CPU that wrote them fails elsewhere, so the
tests simulate another machine. Each notebook records the path that stored its outputs
(``make execute`` stamps it), and the tests run every notebook's kernel on a path of this machine
*other than that one*, the fastest there is:

    stored AVX512, machine AVX512 -> check with avx2        (machine AVX2 -> its own AVX2)
    stored AVX2,   machine AVX512 -> check with AVX512      (machine AVX2 -> the scalar "default")
    stored DEFAULT (scalar)       -> check with the machine's own vector path
    no record                     -> treated as stored on this machine's default

``make test`` is that check (``pytest --kernel-paths=check``); ``make nbval`` is the second pass
(``--kernel-paths=second``): each notebook on the path that stored it where this machine has it,
otherwise on a third path, so that the two passes always use two different paths. A machine with
only one path runs both on it, and the test log's header says so.

    python tools/kernel_path.py --describe            # one line for humans, and the plan
    python tools/kernel_path.py --check NOTEBOOK      # ATEN_CPU_CAPABILITY=... for its check
    python tools/kernel_path.py --stamp notebooks/*.ipynb   # record the path in the notebooks
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: The paths a machine whose default is the key has, fastest first.
PATHS = {"AVX512": ("AVX512", "AVX2", "DEFAULT"), "AVX2": ("AVX2", "DEFAULT")}
#: The ``ATEN_CPU_CAPABILITY`` value that selects each path.
ENV_VALUE = {"AVX512": "avx512", "AVX2": "avx2", "DEFAULT": "default"}
MODES = ("check", "second")
METADATA_KEY = "dpmlatent"
ROOT = Path(__file__).resolve().parent.parent


def notebooks() -> list[Path]:
    """The book's notebooks, sorted (the ones ``make test`` checks)."""
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def capability(env_value: str | None = None) -> str:
    """The ATen CPU capability a fresh Python process gets with ``ATEN_CPU_CAPABILITY=env_value``
    (``None``: the variable unset, i.e. the machine's default)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if env_value is not None:
        env["ATEN_CPU_CAPABILITY"] = env_value
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def plan(stored: str, default: str, mode: str = "check") -> str:
    """The path on which to run a notebook whose outputs were stored with ``stored``, on a machine
    whose default path is ``default``.

    ``mode="check"``: the fastest path of this machine other than ``stored`` (``"unknown"`` counts
    as ``default``). ``mode="second"``: a path other than the check's: ``stored`` where this machine
    has it, else the fastest remaining one. Where the machine has no other path, ``default``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    paths = PATHS.get(default, (default,))
    stored = default if stored == "unknown" else stored
    check = next((p for p in paths if p != stored), default)
    if mode == "check":
        return check
    if stored in paths and stored != check:
        return stored
    return next((p for p in paths if p != check), check)


def stored_paths(notebooks) -> dict[str, str]:
    """``{notebook name: kernel path it was executed with}`` from the notebooks' metadata."""
    found = {}
    for path in notebooks:
        meta = json.loads(Path(path).read_text()).get("metadata", {}).get(METADATA_KEY, {})
        found[Path(path).name] = meta.get("executed_with", "unknown")
    return found


def env_value(path: str) -> str:
    """The ``ATEN_CPU_CAPABILITY`` value selecting ``path`` (e.g. ``"AVX2"`` -> ``"avx2"``)."""
    return ENV_VALUE.get(path, path.lower())


def env_assignment(path: str) -> str:
    """``ATEN_CPU_CAPABILITY=...`` selecting ``path``."""
    return f"ATEN_CPU_CAPABILITY={env_value(path)}"


def stamp(notebooks) -> None:
    """Record this process's kernel path in each notebook's metadata (after ``make execute``)."""
    current = capability(os.environ.get("ATEN_CPU_CAPABILITY"))
    import nbformat

    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nb.metadata.setdefault(METADATA_KEY, {})["executed_with"] = current
        nbformat.write(nb, path)


def describe(notebooks, default: str) -> str:
    """The machine's default path and, per notebook, stored -> check / second pass."""
    lines = [f"machine default {default}; its paths: {', '.join(PATHS.get(default, (default,)))}"]
    for name, stored in stored_paths(notebooks).items():
        check, second = plan(stored, default, "check"), plan(stored, default, "second")
        note = "" if check != stored else "  (no other path here: the check does not simulate another machine)"
        lines.append(f"  {name}: stored {stored}; make test checks with {check}, make nbval with {second}{note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describe", action="store_true", help="the machine's paths and each notebook's plan")
    parser.add_argument("--check", metavar="NOTEBOOK", help="print the environment assignment for its check")
    parser.add_argument("--stamp", nargs="+", metavar="NOTEBOOK", help="record the kernel path in these notebooks")
    args = parser.parse_args(argv)
    if args.stamp:
        stamp(args.stamp)
        return 0
    default = capability()                                   # one subprocess, not two
    if args.check:
        print(env_assignment(plan(stored_paths([args.check])[Path(args.check).name], default)))
    else:
        print(describe(notebooks(), default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
