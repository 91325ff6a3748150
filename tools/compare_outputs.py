"""Compare the text outputs of two executions of the same notebooks, as nbval would.

    python tools/compare_outputs.py notebooks/ _build/other-kernel/

For every notebook in the first folder that also exists in the second, each code cell's text
outputs (streams and ``text/plain`` results; images are not compared, as in nbval) are
sanitised with ``nbval_sanitize.cfg`` and compared line by line. Cells tagged
``nbval-ignore-output`` are skipped. Prints every differing line pair and exits 1 if any differ.
Used to see which printed numbers depend on the CPU's floating-point kernels
(``make portability``).
"""

from __future__ import annotations

import argparse
import configparser
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sanitizers(path: Path = ROOT / "nbval_sanitize.cfg"):
    cfg = configparser.ConfigParser()
    cfg.read(path)
    return [(re.compile(cfg[s]["regex"]), cfg[s]["replace"]) for s in cfg.sections()]


def cell_texts(nb_path: Path, subs) -> list[tuple[int, str | None]]:
    """``(index, text)`` for each code cell; ``None`` for cells nbval does not compare."""
    nb = json.loads(nb_path.read_text())
    out = []
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        if "nbval-ignore-output" in cell.get("metadata", {}).get("tags", []):
            out.append((i, None))
            continue
        parts = []
        for o in cell["outputs"]:
            if o["output_type"] == "stream":
                parts.append("".join(o["text"]))
            elif o["output_type"] in ("execute_result", "display_data") and "image/png" not in o["data"]:
                parts.append("".join(o["data"].get("text/plain", "")))
        text = "\n".join(parts)
        for rx, rep in subs:
            text = rx.sub(rep, text)
        out.append((i, text))
    return out


def compare(a: Path, b: Path, subs) -> int:
    n_diff = 0
    for (i, ta), (_, tb) in zip(cell_texts(a, subs), cell_texts(b, subs)):
        if ta is None or ta == tb:
            continue
        n_diff += 1
        print(f"{a.name}, code cell {i}:")
        la, lb = ta.splitlines(), (tb or "").splitlines()
        for k in range(max(len(la), len(lb))):
            x, y = (la[k] if k < len(la) else ""), (lb[k] if k < len(lb) else "")
            if x != y:
                print(f"  - {x}\n  + {y}")
    return n_diff


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="folder (or notebook) with the stored outputs")
    parser.add_argument("second", type=Path, help="folder (or notebook) with the other execution")
    args = parser.parse_args(argv)
    subs = sanitizers()
    pairs = ([(args.first, args.second)] if args.first.is_file() else
             [(p, args.second / p.name) for p in sorted(args.first.glob("*.ipynb"))
              if (args.second / p.name).exists()])
    if not pairs:
        print("no notebooks to compare", file=sys.stderr)
        return 2
    total = sum(compare(a, b, subs) for a, b in pairs)
    print(f"{len(pairs)} notebook(s) compared: {total} cell(s) differ")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
