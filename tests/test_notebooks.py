"""The published chapters: stored executed, error-free, and launchable from our repository."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]


def test_every_notebook_is_in_the_toc():
    toc = _toc_files()
    assert NOTEBOOKS, "no notebooks found"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in toc, f"{nb.name} is not in _toc.yml"


def _profile_chapters():
    from tooling import import_tool

    return import_tool("profile_chapters")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_run_time_box_states_the_stored_timings(path):
    """A chapter's "*Time to run:*" box is its cells' stored total, to the half minute
    (`tools/profile_chapters.py --boxes` writes it after `make execute`)."""
    tool = _profile_chapters()
    written, measured = tool.box_minutes(path)
    if written is not None:
        assert measured is not None, f"{path.name} has a run-time box but no stored cell timings"
        assert written == measured, (f"{path.name}: the box says about {written} minutes, the stored cells take "
                                     f"{measured}; run tools/profile_chapters.py --boxes")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_run_time_table_states_the_box(path):
    """The README's chapter table gives the same run time as the chapter's box."""
    written, _ = _profile_chapters().box_minutes(path)
    row = next((line for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith(f"| `notebooks/{path.name}` |")), None)
    assert row is not None, f"README's chapter table has no row for {path.name}"
    if written is not None:
        assert row.rstrip().endswith(f"| about {written} min |"), (f"README says {row.split('|')[-2].strip()!r} for "
                                                               f"{path.name}, its box about {written} min")


def test_half_minutes_rounds_as_the_boxes_read():
    tool = _profile_chapters()
    assert [tool.half_minutes(s) for s in (1, 44, 45, 75, 89, 91, 600, 629)] == ["½", "½", "1", "1", "1½", "1½", "10", "10½"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_complete_and_error_free(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for i, cell in enumerate(code):
        assert cell["execution_count"] is not None, f"{path.name}: code cell {i} was never executed"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name}: code cell {i} stored an error"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: not executed top to bottom"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_and_launch_links_name_our_repository(path):
    """The Colab setup block and the launch line are tools/colab.py's, from _config.yml's repository."""
    from tooling import import_tool

    assert import_tool("colab").check_cells(path) == []
    setup = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert CONFIG["repository"]["url"] in "".join(setup["source"]) and "setup(" in "".join(setup["source"])


def _git_files():
    proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


def test_book_builds_without_warnings_and_launch_links_are_ours(built_html):
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    branch = CONFIG["repository"]["branch"]
    tracked = _git_files()
    for nb in NOTEBOOKS:
        page = (built_html / "notebooks" / f"{nb.stem}.html").read_text()
        colab = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', page)
        binder = re.findall(r'href="(https://mybinder\.org/[^"]+)"', page)
        assert colab and binder, f"{nb.name}: launch buttons missing"
        path = f"notebooks/{nb.name}"
        # the theme's launch buttons and the chapter's own "Run it" line (tools/colab.py)
        assert set(colab) == {f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path}"}
        assert set(binder) == {f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=lab/tree/{path}"}
        assert path in tracked, f"{path} is not tracked by git"


def test_no_script_is_declared_twice(built_html):
    for page in built_html.rglob("*.html"):
        scripts = re.findall(r"<script>(.*?)</script>", page.read_text(), flags=re.S)
        dupes = {s for s in scripts if scripts.count(s) > 1}
        assert not dupes, f"{page.name}: repeated inline scripts {sorted(dupes)[:1]}"
