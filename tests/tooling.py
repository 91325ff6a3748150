"""Helpers the test modules share (not a conftest: the repository root has its own conftest.py)."""


def import_tool(name: str):
    """Import ``tools/<name>.py`` (the tools are scripts, not a package)."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)
