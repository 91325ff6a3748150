"""RunStore: runs recorded once, read back unchanged, a seeded sample made again and compared."""

import json

import pytest
import torch

from dpmlatent.run_store import GRID, RunStore, fingerprint


def _maker(calls, key, shift=0.0):
    def make():
        calls.append(key)
        g = torch.Generator().manual_seed(hash(key) % 1000)
        return torch.randn(5, 1, 8, 8, generator=g) + shift
    return make


KEYS = [("t", "a", None, 10, k, s) for k in (3, 4, 5) for s in (0, 1)]


def test_record_save_read_and_check(tmp_path):
    folder = tmp_path / "store"
    rec, calls = RunStore.open(folder), []
    made = {k: rec.images(k, _maker(calls, k)) for k in KEYS}
    raw = _maker([], KEYS[0])()                                      # what is returned is the run on the grid
    assert torch.equal(made[KEYS[0]], torch.round(raw.double() / GRID).float() * GRID)
    assert 0 < (made[KEYS[0]] - raw).abs().max() <= GRID / 2
    assert rec.recording and len(calls) == len(KEYS) and len(rec) == len(KEYS) and KEYS[0] in rec
    again = rec.images(KEYS[0], _maker(calls, KEYS[0]))          # a second request is served, not made
    assert torch.equal(again, made[KEYS[0]]) and len(calls) == len(KEYS)
    again.add_(1.0)                                                  # a copy: the store is not changed
    assert torch.equal(rec.images(KEYS[0], _maker(calls, KEYS[0])), made[KEYS[0]])
    s = rec.summary()
    assert (s.stored, s.read, s.made, s.checked, s.picked, s.recording) == (6, 6, 6, 0, 0, True)
    rec.save(rebuild="python -c 'rebuild'")
    info = json.loads((folder / "run.json").read_text())
    assert info["rebuild"] == "python -c 'rebuild'" and len(info["keys"]) == 6

    store, calls = RunStore.open(folder, check=2, seed=0), []
    assert not store.recording and store.rebuild == "python -c 'rebuild'"
    for k in KEYS:
        assert torch.equal(store.images(k, _maker(calls, k)), made[k])
    s = store.summary()
    assert (s.stored, s.read, s.made, s.checked, s.picked, s.max_difference) == (6, 6, 2, 2, 2, 0.0)
    assert len(set(calls)) == 2                                     # only the picked runs were made again
    other = RunStore.open(folder, check=2, seed=1)
    assert other._picked != store._picked or len(KEYS) < 3          # the seed picks the sample
    with pytest.raises(ValueError, match="was read, not recorded"):
        store.save(rebuild="x")


def test_a_changed_run_a_missing_run_and_a_damaged_file_are_refused(tmp_path):
    folder = tmp_path / "store"
    rec = RunStore.open(folder)
    for k in KEYS:
        rec.images(k, _maker([], k))
    rec.save(rebuild="make it")
    store = RunStore.open(folder, check=len(KEYS), tolerance=1e-3)
    with pytest.raises(ValueError, match="differs from the stored images by 0.01"):
        store.images(KEYS[0], _maker([], KEYS[0], shift=0.01))
    store.images(KEYS[1], _maker([], KEYS[1], shift=1e-4))          # within the tolerance: accepted, recorded
    assert store.summary().max_difference in (0.0, GRID)            # on the grid: 0 or one step
    with pytest.raises(KeyError, match="not in the store.*make it"):
        store.images(("t", "a", None, 10, 9, 0), _maker([], "x"))
    data = bytearray((folder / "images.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "images.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        RunStore.open(folder, check=0)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="check must be an integer >= 0"):
        RunStore.open(tmp_path, check=-1)
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        RunStore.open(tmp_path, tolerance=0)
    store = RunStore.open(tmp_path / "s")
    with pytest.raises(TypeError, match="key must be a non-empty tuple"):
        store.images(["a"], lambda: torch.zeros(1))
    with pytest.raises(TypeError, match="key parts must be"):
        store.images(("a", [1]), lambda: torch.zeros(1))
    with pytest.raises(TypeError, match="make\\(\\) must return a tensor"):
        store.images(("a",), lambda: [0.0])
    with pytest.raises(ValueError, match="outside \\[-8, 8\\)"):
        store.images(("big",), lambda: torch.full((2,), 9.0))
    with pytest.raises(ValueError, match="rebuild must be"):
        store.save(rebuild=" ")
    with pytest.raises(ValueError, match="holds no runs"):
        store.save(rebuild="x")
    rec = RunStore.open(tmp_path / "t")
    rec.images(("a",), lambda: torch.zeros(2))
    rec.save(rebuild="x")
    with pytest.raises(ValueError, match="check must be at most the 1 stored runs"):
        RunStore.open(tmp_path / "t", check=2)


def test_fingerprint_tells_inputs_apart():
    a = torch.zeros(3, 1, 8, 8)
    assert fingerprint(a, ["one"]) == fingerprint(a.clone(), ["one"]) and len(fingerprint(a)) == 12
    assert fingerprint(a, ["one"]) != fingerprint(a, ["two"])
    assert fingerprint(a) != fingerprint(a.double()) != fingerprint(a[:2])
    lin = torch.nn.Linear(2, 2)
    before = fingerprint(lin, {"steps": 10})
    assert before == fingerprint(lin, {"steps": 10}) != fingerprint(lin, {"steps": 11})
    with torch.no_grad():
        lin.weight[0, 0] += 1e-7
    assert fingerprint(lin, {"steps": 10}) != before
    with pytest.raises(TypeError, match="fingerprint takes"):
        fingerprint(3)
