import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


#: One thread per process when pytest-xdist runs the suite in two worker processes (``make test``:
#: ``-n 2``; the tests are small and gain more from two processes than from two threads), else two.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture
def tiny_unet():
    """A seeded random UNet2DModel, small enough that the suite takes seconds."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8).eval()


@pytest.fixture
def tiny_cond_unet():
    """A seeded random UNet2DConditionModel (cross-attention on 8-dim 'text' states)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=2).eval()


@pytest.fixture
def x0():
    from dpmlatent import data

    return data.handwritten_digits("test").images[:3]


@pytest.fixture(scope="session")
def built_html(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(ROOT), "--path-output", str(out), "-W", "-n",
                           "--keep-going"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "_build" / "html"


def pytest_addoption(parser):
    """``--grade NAME [--student FILE]``: grade an assignment (``make grade A=NAME``): run only its
    tests in tests/test_assignments.py, against the function in FILE (default assignments/NAME.py)."""
    group = parser.getgroup("assignments")
    group.addoption("--grade", default=None, metavar="NAME", help="grade the assignment NAME (see assignments/)")
    group.addoption("--student", default=None, metavar="FILE", help="the student's file (default assignments/NAME.py)")


def pytest_collection_modifyitems(config, items):
    """When grading, keep only the graded assignment's tests."""
    name = config.getoption("--grade", default=None)
    if name is None:
        return
    keep = [item for item in items if (m := item.get_closest_marker("assignment")) and m.args[0] == name]
    if not keep:
        raise pytest.UsageError(f"--grade: no assignment named {name!r} (see the files in assignments/)")
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep
