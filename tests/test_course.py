"""Course material: exercises with solutions in every chapter, the student edition (`make student`),
and the licence and citation files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tooling import import_tool

ROOT = Path(__file__).resolve().parents[1]
student = import_tool("student_edition")
CHAPTERS = student.chapters()


def _cells(path):
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_has_a_solution_and_one_is_checked_code(path):
    cells = _cells(path)
    text = lambda c: "".join(c["source"])                                   # noqa: E731
    labels = [m for c in cells if c["cell_type"] == "markdown"
              for m in re.findall(r"\{exercise\}[^\n]*\n:label: (\S+)", text(c))]
    solved = [m for c in cells if student.is_solution(c)
              for m in re.findall(r"\{solution(?:-start)?\} (\S+)", text(c))]
    assert labels, f"{path.name} has no exercises"
    assert sorted(labels) == sorted(solved), f"{path.name}: exercises {labels}, solutions {solved}"
    stem = path.stem.split("_")[0]
    assert all(label.startswith(f"ex-{stem}-") for label in labels), labels
    checked = [c for c in cells if c["cell_type"] == "code" and student.is_solution(c) and "assert" in text(c)]
    assert checked, f"{path.name}: no coding exercise whose solution checks its answer with an assert"
    for c in checked:
        assert c["outputs"] and not any(o["output_type"] == "error" for o in c["outputs"]), \
            f"{path.name}: a solution cell was not executed or stored an error"
    starts = sum(text(c).count("{solution-start}") for c in cells)
    assert starts == sum(text(c).count("{solution-end}") for c in cells), f"{path.name}: unbalanced solution-start/end"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_solution_code_is_in_code_cells_that_run(path):
    """Solution code runs with the chapter (and under nbval): no solution hides a code block in
    Markdown, where nothing would run it, and every solution code cell was executed without error."""
    for c in _cells(path):
        if not student.is_solution(c):
            continue
        body = "".join(c["source"])
        if c["cell_type"] == "markdown":
            assert not re.search(r"^```(?:python|\{code-cell\})", body, re.M), \
                f"{path.name}: a solution shows code in Markdown, where it never runs: {body[:80]!r}"
        else:
            assert c["outputs"] is not None and c.get("execution_count") is not None, \
                f"{path.name}: a solution code cell was not executed: {body[:80]!r}"
            assert not any(o["output_type"] == "error" for o in c["outputs"]), \
                f"{path.name}: a solution code cell stored an error: {body[:80]!r}"


def test_labels_are_unique_across_the_book():
    labels = [m for p in CHAPTERS for c in _cells(p) for m in re.findall(r":label: (ex-\S+)", "".join(c["source"]))]
    assert len(labels) == len(set(labels))


def test_strip_refuses_an_untagged_solution():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": [":::{solution} ex-00-1\n", "x\n", ":::"]}]}
    with pytest.raises(ValueError, match="not tagged 'solution'"):
        student.strip_solutions(nb, "toy.ipynb")


def test_student_edition_from_the_repository(tmp_path):
    """`make student`'s tool: notebooks without solutions, the stubs, and a book without solutions."""
    out = tmp_path / "student"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "student_edition.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for path in CHAPTERS:
        stripped = _cells(out / "notebooks" / path.name)
        original = _cells(path)
        assert not any(student.is_solution(c) for c in stripped)
        assert not any("{solution" in "".join(c["source"]) for c in stripped)
        assert len(stripped) == len(original) - sum(student.is_solution(c) for c in original)
        assert student.exercises({"cells": stripped}) == student.exercises({"cells": original}) > 0
        page = (out / "html" / "notebooks" / f"{path.stem}.html").read_text()
        assert "exercise" in page and 'class="solution' not in page, path.name
    assert sorted(p.name for p in (out / "assignments").glob("*.py")) == \
        sorted(p.name for p in (ROOT / "assignments").glob("*.py"))
    assert "NotImplementedError" in (out / "assignments" / "slerp.py").read_text()


def test_full_book_shows_the_solutions_in_toggles(built_html):
    """The website has every chapter's solutions, each behind a dropdown toggle."""
    for path in CHAPTERS:
        page = (built_html / "notebooks" / f"{path.stem}.html").read_text()
        n_solutions = sum(len(re.findall(r"\{solution(?:-start)?\} ", "".join(c["source"]))) for c in _cells(path))
        assert page.count('class="solution dropdown') == n_solutions, path.name


def test_licence_and_citation():
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "CC BY 4.0" in licence
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cff["repository-code"] == config["repository"]["url"]
    readme = (ROOT / "README.md").read_text()
    assert "## Licences" in readme and "## For teachers" in readme
