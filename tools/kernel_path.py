"""Which CPU kernel path stores the chapters' outputs, and which one checks them.

PyTorch picks its vectorised CPU kernels per machine (``torch.backends.cpu.get_cpu_capability()``:
AVX512, AVX2, DEFAULT, ...), and floating-point results differ between them in the last bits.
A book whose stored outputs only reproduce on the CPU that wrote them fails elsewhere, so the
tests simulate another machine: ``make execute`` runs the chapters on this machine's default
path and ``make test`` checks them under another one, chosen here:

    machine default AVX512 -> check with ATEN_CPU_CAPABILITY=avx2
    machine default AVX2   -> check with ATEN_CPU_CAPABILITY=default (no vector kernels)
    anything else          -> no other path: the check runs on the same path, and says so

    python tools/kernel_path.py            # prints the environment assignment for the check
    python tools/kernel_path.py --describe # one line for humans
    python tools/kernel_path.py --stamp notebooks/*.ipynb   # record the path in the notebooks
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ALTERNATIVE = {"AVX512": "avx2", "AVX2": "default"}
METADATA_KEY = "dpmlatent"


def capability(env_value: str | None = None) -> str:
    """The ATen CPU capability a fresh Python process gets with ``ATEN_CPU_CAPABILITY=env_value``
    (``None``: the variable unset, i.e. the machine's default)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if env_value is not None:
        env["ATEN_CPU_CAPABILITY"] = env_value
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def check_env(default: str | None = None) -> str:
    """``ATEN_CPU_CAPABILITY=...`` for the check, or ``""`` when this machine has no other path
    (``default``: the machine's default capability, if already known)."""
    alt = ALTERNATIVE.get(default or capability())
    return f"ATEN_CPU_CAPABILITY={alt}" if alt else ""


def stored_paths(notebooks) -> dict[str, str]:
    """``{notebook name: kernel path it was executed with}`` from the notebooks' metadata."""
    found = {}
    for path in notebooks:
        meta = json.loads(Path(path).read_text()).get("metadata", {}).get(METADATA_KEY, {})
        found[Path(path).name] = meta.get("executed_with", "unknown")
    return found


def stamp(notebooks) -> None:
    """Record this process's kernel path in each notebook's metadata (after ``make execute``)."""
    current = capability(os.environ.get("ATEN_CPU_CAPABILITY"))
    import nbformat

    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nb.metadata.setdefault(METADATA_KEY, {})["executed_with"] = current
        nbformat.write(nb, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describe", action="store_true", help="a line for humans")
    parser.add_argument("--stamp", nargs="+", metavar="NOTEBOOK", help="record the kernel path in these notebooks")
    args = parser.parse_args(argv)
    if args.stamp:
        stamp(args.stamp)
        return 0
    default = capability()                                   # one subprocess, not two
    env = check_env(default)
    if args.describe:
        print(f"machine default {default}; the check runs with {env}" if env else
              f"machine default {default}; no other kernel path on this machine: the check runs on the same one")
    else:
        print(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
