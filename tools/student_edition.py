"""The student edition (`make student`): the chapters without their solutions, and a book built from them.

Solutions are marked by a cell tag, never by hand-made copies: every cell tagged ``solution`` (the
``solution-start``/``solution-end`` Markdown cells of sphinx-exercise and the solution code between
them, or a text-only ``solution`` directive) is removed. A ``solution`` directive in an untagged
cell is an error, so a forgotten tag cannot leak an answer.

Writes into ``--out`` (default ``_build/student``):
  notebooks/*.ipynb   the chapters, solution cells removed, every other cell and output kept;
  assignments/*.py    the assignment stubs (make grade A=NAME grades them);
  html/               the book built from those notebooks (Jupyter Book 1, warnings are errors);
                      ``--no-book`` skips it.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from colab import chapters      # the chapters in _toc.yml's order (tools/colab.py)

ROOT = Path(__file__).resolve().parents[1]
TAG = "solution"
SOLUTION_DIRECTIVE = re.compile(r"[`:]{3,}\{solution(-start|-end)?\}")
EXERCISE_DIRECTIVE = re.compile(r"[`:]{3,}\{exercise(-start)?\}")
BOOK_FILES = ("_config.yml", "_toc.yml", "references.bib")


def is_solution(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def strip_solutions(nb: dict, name: str = "notebook") -> dict:
    """A copy of ``nb`` without its solution cells. Raises ValueError naming the cell if a cell holds
    a ``solution`` directive without the tag."""
    out = copy.deepcopy(nb)
    for i, cell in enumerate(nb["cells"]):
        if not is_solution(cell) and SOLUTION_DIRECTIVE.search("".join(cell["source"])):
            raise ValueError(f"{name}, cell {i}: a solution directive in a cell not tagged {TAG!r}; tag the cell")
    out["cells"] = [cell for cell in nb["cells"] if not is_solution(cell)]
    return out


def exercises(nb: dict) -> int:
    """How many exercise directives the notebook has."""
    return sum(len(EXERCISE_DIRECTIVE.findall("".join(c["source"]))) for c in nb["cells"] if c["cell_type"] == "markdown")


def write_notebooks(out: Path) -> list[Path]:
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters():
        nb = json.loads(path.read_text())
        target = out / "notebooks" / path.name
        target.write_text(json.dumps(strip_solutions(nb, path.name), indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def write_assignments(out: Path) -> list[Path]:
    (out / "assignments").mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, out / "assignments" / p.name)) for p in sorted((ROOT / "assignments").glob("*"))
            if p.is_file()]


def build_book(out: Path) -> Path:
    """Stage the book's sources with the stripped notebooks and build it into ``out/html``."""
    src = out / "book-src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in BOOK_FILES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "book", src / "book")
    shutil.copytree(out / "notebooks", src / "notebooks")
    with open(src / "_config.yml", "a") as f:
        f.write("\n# Student edition (tools/student_edition.py): solution cells were removed.\n")
    build = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(src), "-W", "-n", "--keep-going",
                            "--path-output", str(out)], capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"the student book did not build:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}")
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.move(out / "_build" / "html", html)
    shutil.rmtree(out / "_build", ignore_errors=True)
    shutil.rmtree(src)
    return html


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "student")
    parser.add_argument("--no-book", action="store_true", help="write the notebooks and stubs only")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    notebooks = write_notebooks(out)
    stubs = write_assignments(out)
    removed = sum(sum(is_solution(c) for c in json.loads(p.read_text())["cells"]) for p in chapters())
    print(f"{len(notebooks)} chapters ({removed} solution cells removed) -> {out / 'notebooks'}")
    print(f"{len(stubs)} assignment files -> {out / 'assignments'}")
    if not args.no_book:
        print(f"book without solutions -> {build_book(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
