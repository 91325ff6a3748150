"""The Colab path (tools/colab.py): one requirements file that covers every chapter's imports, and
one setup block and launch line per chapter, written from _config.yml."""

import json
import tomllib
from pathlib import Path

import pytest

from tooling import import_tool

ROOT = Path(__file__).resolve().parents[1]
colab = import_tool("colab")


def _pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {colab.normalise(d.split("==")[0]): d.split("==")[1] for d in deps}


def test_requirements_cover_every_chapter():
    assert colab.coverage() == {}


def test_a_missing_dependency_is_caught():
    """Remove one requirement and the check names the chapters that need it (chapter 5 loads the tiny
    CLIP through open_clip: the dependency its old setup cell forgot)."""
    reqs = colab.requirements()
    del reqs["open-clip-torch"]
    missing = colab.coverage(reqs)
    assert "05_zero_shot_editing.ipynb" in missing and "open_clip" in missing["05_zero_shot_editing.ipynb"]
    reqs = colab.requirements()
    del reqs["diffusers"]
    assert all("diffusers" in modules for modules in colab.coverage(reqs).values())
    assert len(colab.coverage(reqs)) == len(colab.chapters())


def test_requirements_agree_with_pyproject():
    """Every runtime dependency except what Colab brings, pinned (where pinned) as pyproject.toml pins it."""
    pins, reqs = _pyproject_pins(), colab.requirements()
    assert set(reqs) == set(pins) - set(colab.COLAB_PROVIDES)
    for name, version in reqs.items():
        assert version is None or version == pins[name], f"{name}: {version} here, {pins[name]} in pyproject.toml"
    for name in ("diffusers", "open-clip-torch", "torchmetrics"):       # what Colab does not have
        assert reqs[name] == pins[name], f"{name} must be pinned"


def test_imports_are_followed_through_the_package():
    found = colab.third_party_imports("from dpmlatent.clip import load_clip\nimport numpy as np\n%matplotlib inline\n")
    assert {"open_clip", "numpy", "torch"} <= found and "dpmlatent" not in found and "os" not in found


@pytest.mark.parametrize("path", colab.chapters(), ids=lambda p: p.name)
def test_setup_block_and_launch_line(path):
    assert colab.check_cells(path) == []
    cell = "".join(next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"])
    assert cell.count("requirements-colab.txt") == 2 and "pip install" in cell


def test_write_is_idempotent(tmp_path):
    for path in colab.chapters()[:2]:
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        assert colab.write(copy) is False


def test_version_note_names_the_checked_versions(monkeypatch):
    from dpmlatent import notebook

    monkeypatch.setattr(notebook, "_pins", lambda: {"torch": "0.0.1", "diffusers": __import__("diffusers").__version__})
    note = notebook.version_note()
    assert "torch" in note and "(checked with 0.0.1)" in note and "diffusers" not in note
    monkeypatch.setattr(notebook, "_pins", lambda: {"diffusers": __import__("diffusers").__version__})
    assert "please report it" in notebook.version_note()


def test_a_failed_check_in_ipython_is_followed_by_the_note(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from dpmlatent import notebook

    shell = InteractiveShell.instance()
    try:
        notebook._explain_failed_checks()
        result = shell.run_cell("assert 1 == 2, 'a claim'")
        assert isinstance(result.error_in_exec, AssertionError)
        out = capsys.readouterr().out
        assert "AssertionError" in out and "a claim" in out and "A check of this chapter failed" in out
    finally:
        InteractiveShell.clear_instance()
