"""Where does a chapter's time go?

Without arguments: every chapter's run time and its slowest cells, read from the timing that
nbclient stores in each executed cell's metadata (``execution``: execute_input -> execute_reply),
so nothing is re-run. With ``--profile NB``: run that chapter's code (converted to a script, in a
fresh process) under cProfile and print the functions that take the most time, cumulative and own,
grouped so that the UNet, the metrics, plotting and Python loops can be told apart.

With ``--boxes``: write each chapter's measured time into its "*Time to run:*" box (to the half
minute, from the same stored timings); ``tests/test_notebooks.py`` fails when a box and the stored
timings disagree.

    .venv/bin/python tools/profile_chapters.py [--top 5]
    .venv/bin/python tools/profile_chapters.py --profile notebooks/07_h_space.ipynb [--top 30]
    .venv/bin/python tools/profile_chapters.py --boxes
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import pstats
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cell_times(path: pathlib.Path) -> list[tuple[float, int, str]]:
    """``(seconds, cell index, first source line)`` of every executed code cell of ``path``."""
    out = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        ex = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] != "code" or "iopub.execute_input" not in ex or "shell.execute_reply" not in ex:
            continue
        t0, t1 = (dt.datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
        first = next((line.strip() for line in "".join(cell["source"]).splitlines()
                      if line.strip() and not line.lstrip().startswith("#")), "")
        out.append(((t1 - t0).total_seconds(), i, first[:70]))
    return out


#: The chapter's run-time box: "*Time to run:* about 2½ minutes on 2 CPU cores (measured ...".
BOX = re.compile(r"(\*Time to run:\* about )([0-9]+½?|½)( minutes?| seconds)( on 2 CPU cores)")


def half_minutes(seconds: float) -> str:
    """``seconds`` to the nearest half minute (at least ½), as the box writes it: "½", "2", "10½"."""
    halves = max(1, round(seconds / 30))
    whole = halves // 2
    return (str(whole) if whole else "") + ("½" if halves % 2 else "")


def box_minutes(path: pathlib.Path) -> tuple[str | None, str | None]:
    """``(written, measured)``: the minutes the box of ``path`` states (None if it has no box) and
    the stored cells' total to the half minute (None if not executed)."""
    cells = json.loads(path.read_text())["cells"]
    written = next((m.group(2) for c in cells if c["cell_type"] == "markdown"
                    for m in [BOX.search("".join(c["source"]))] if m), None)
    times = cell_times(path)
    return written, (half_minutes(sum(t for t, _, _ in times)) if times else None)


def write_boxes(paths: list[pathlib.Path]) -> None:
    """Write every chapter's measured time (:func:`box_minutes`) into its box."""
    for path in paths:
        written, measured = box_minutes(path)
        if written is None or measured is None or written == measured:
            print(f"{path.name}: box {written!r}, measured {measured!r}: unchanged")
            continue
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "markdown" and BOX.search(src):
                unit = " minute" if measured in ("½", "1") else " minutes"
                src = BOX.sub(lambda m: m.group(1) + measured + unit + m.group(4), src, count=1)
                cell["source"] = src.splitlines(keepends=True)
                break
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        print(f"{path.name}: box {written} -> {measured} minutes")


def report_times(paths: list[pathlib.Path], top: int) -> None:
    total = 0.0
    for path in paths:
        times = cell_times(path)
        if not times:
            print(f"{path.name}: no stored cell timings (execute it with `make execute`)")
            continue
        meta = json.loads(path.read_text()).get("metadata", {}).get("dpmlatent", {})
        s = sum(t for t, _, _ in times)
        total += s
        print(f"\n{path.name}: {s / 60:.1f} min in {len(times)} code cells"
              f" (executed with {meta.get('executed_with', '?')})")
        for t, i, first in sorted(times, reverse=True)[:top]:
            print(f"  cell {i:>3} {t:7.1f} s  {100 * t / s:4.0f}%  {first}")
    print(f"\nall chapters: {total / 60:.1f} min")


def profile(path: pathlib.Path, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / (path.stem + ".py")
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "script", "--output-dir", tmp,
                        str(path)], check=True, capture_output=True)
        prof = pathlib.Path(tmp) / "chapter.prof"
        script.write_text("import matplotlib; matplotlib.use('Agg')\n" + script.read_text())   # no display; chapters use no magics
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), str(script)], check=True, cwd=ROOT)
        stats = pstats.Stats(str(prof))
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=pathlib.Path, help="a notebook to run under cProfile")
    parser.add_argument("--top", type=int, default=None, help="cells (or functions) to list")
    parser.add_argument("--boxes", action="store_true", help="write the measured times into the chapters' boxes")
    args = parser.parse_args()
    if args.boxes:
        write_boxes(sorted((ROOT / "notebooks").glob("*.ipynb")))
    elif args.profile is not None:
        if not args.profile.is_file():
            raise SystemExit(f"--profile: no such notebook {args.profile}")
        profile(args.profile, args.top or 30)
    else:
        report_times(sorted((ROOT / "notebooks").glob("*.ipynb")), args.top or 5)


if __name__ == "__main__":
    main()
