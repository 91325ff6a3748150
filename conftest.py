"""Root pytest configuration: on which CPU kernel path each notebook's kernel runs.

``--kernel-paths=check`` (``make test``) starts every notebook's kernel on a path of this machine
other than the one that stored its outputs, as a machine with another CPU would;
``--kernel-paths=second`` (``make nbval``) on a path other than the check's, so the two passes
together check every chapter on two paths. The plan per notebook is ``tools/kernel_path.plan``.
Without the option, kernels inherit the environment (``ATEN_CPU_CAPABILITY`` as set, or unset).
The unit tests always run in pytest's own process, on whatever path it started with.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("kernel_path", Path(__file__).resolve().parent / "tools" / "kernel_path.py")
kernel_path = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernel_path)

_ORIGINAL = os.environ.get("ATEN_CPU_CAPABILITY")
_PLAN_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser):
    parser.addoption("--kernel-paths", choices=kernel_path.MODES, default=None,
                     help="run each notebook's kernel on another CPU kernel path than the one that stored its "
                          "outputs (check) or on a second one (second); see tools/kernel_path.py")


def _plan(config) -> tuple[str, dict[str, str]]:
    """``(machine default path, {notebook name: path for this run})``, computed once per process
    (one subprocess for the machine default)."""
    if _PLAN_KEY not in config.stash:
        mode = config.getoption("--kernel-paths")
        default = kernel_path.capability()
        stored = kernel_path.stored_paths(kernel_path.notebooks())
        config.stash[_PLAN_KEY] = (default, {name: kernel_path.plan(path, default, mode)
                                             for name, path in stored.items()})
    return config.stash[_PLAN_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before nbval starts a notebook's kernel (in the setup of its first cell), set the kernel
    path that notebook is planned to run on; restore the environment for every other test."""
    if item.config.getoption("--kernel-paths") is None:
        return
    path = Path(str(item.fspath))
    planned = _plan(item.config)[1].get(path.name) if path.suffix == ".ipynb" else None
    value = kernel_path.env_value(planned) if planned else _ORIGINAL
    if value is None:
        os.environ.pop("ATEN_CPU_CAPABILITY", None)
    else:
        os.environ["ATEN_CPU_CAPABILITY"] = value


def pytest_report_header(config):
    """Say which path this process runs on and, per notebook, which path stored its outputs and
    which one this run uses, so a log shows whether nbval simulated another machine."""
    import torch

    current = torch.backends.cpu.get_cpu_capability()
    mode = config.getoption("--kernel-paths")
    if mode is None:
        stored = kernel_path.stored_paths(kernel_path.notebooks())
        return (f"CPU kernel path: {current} for this process and every notebook (ATEN_CPU_CAPABILITY="
                f"{_ORIGINAL or 'unset'}); the notebooks' outputs were stored with "
                f"{', '.join(sorted(set(stored.values())))}")
    default, _ = _plan(config)
    return [f"CPU kernel paths: unit tests on {current}; notebooks as planned for --kernel-paths={mode} "
            "(check: make test's path, second: make nbval's):",
            *kernel_path.describe(kernel_path.notebooks(), default).splitlines()]
