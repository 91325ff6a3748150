"""The choice of CPU kernel path per notebook (tools/kernel_path.py): the check never runs a
notebook on the path that stored its outputs when the machine has another one, and the second
pass always uses a path other than the check's."""

import pytest
from tooling import import_tool

kp = import_tool("kernel_path")


@pytest.mark.parametrize("default", ["AVX512", "AVX2"])
@pytest.mark.parametrize("stored", ["AVX512", "AVX2", "DEFAULT", "unknown"])
def test_check_and_second_differ_from_each_other_and_check_from_stored(default, stored):
    check, second = kp.plan(stored, default, "check"), kp.plan(stored, default, "second")
    assert check in kp.PATHS[default] and second in kp.PATHS[default]
    assert check != (default if stored == "unknown" else stored)
    assert second != check


@pytest.mark.parametrize("stored, default, check, second", [
    ("AVX512", "AVX512", "AVX2", "AVX512"),     # the build machine checks on avx2, re-checks on its own path
    ("AVX512", "AVX2", "AVX2", "DEFAULT"),      # another CPU: its own path is already another one
    ("AVX2", "AVX2", "DEFAULT", "AVX2"),
    ("AVX2", "AVX512", "AVX512", "AVX2"),
    ("DEFAULT", "AVX2", "AVX2", "DEFAULT"),     # stored on the scalar path: every vector machine checks natively
    ("unknown", "AVX2", "DEFAULT", "AVX2"),     # no record: as if stored on this machine's default
])
def test_plan_prefers_the_fastest_other_path(stored, default, check, second):
    assert kp.plan(stored, default, "check") == check
    assert kp.plan(stored, default, "second") == second


def test_a_machine_with_one_path_uses_it_and_the_header_says_so():
    assert kp.plan("AVX2", "NEON", "check") == "NEON" == kp.plan("AVX2", "NEON", "second")


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mode must be one of"):
        kp.plan("AVX2", "AVX2", "both")


def test_env_assignment_selects_the_path():
    assert kp.env_assignment("DEFAULT") == "ATEN_CPU_CAPABILITY=default"
    assert kp.capability(kp.ENV_VALUE["DEFAULT"]) == "DEFAULT"      # the value really selects it


def test_the_root_conftest_sets_each_notebooks_path():
    """The plugin's hook: a notebook item gets its planned path; any other item the original."""
    import os
    import types
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("root_conftest", kp.ROOT / "conftest.py")
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    config = types.SimpleNamespace(getoption=lambda name: "check", stash={})
    name = kp.notebooks()[0]
    saved = os.environ.get("ATEN_CPU_CAPABILITY")
    try:
        conf.pytest_runtest_setup(types.SimpleNamespace(config=config, fspath=str(name)))
        default, plan = conf._plan(config)
        stored = kp.stored_paths([name])[name.name]
        assert os.environ["ATEN_CPU_CAPABILITY"] == kp.env_value(plan[name.name])
        assert plan[name.name] == kp.plan(stored, default, "check")
        conf.pytest_runtest_setup(types.SimpleNamespace(config=config, fspath=__file__))
        assert os.environ.get("ATEN_CPU_CAPABILITY") == conf._ORIGINAL
    finally:
        if saved is None:
            os.environ.pop("ATEN_CPU_CAPABILITY", None)
        else:
            os.environ["ATEN_CPU_CAPABILITY"] = saved
