"""The autograded assignments (assignments/*.py) and the grading command.

Without options these tests check the book's own functions (the reference solutions in src).
``make grade A=NAME`` (``pytest tests/test_assignments.py --grade NAME [--student FILE]``) runs the
checks of one assignment against the student's function instead. The last tests run the grading
command itself: on the stubs it must fail with a readable message, on a correct solution pass.
"""

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent import encoder, guidance, hspace, latent

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ROOT / "assignments"

#: assignment name -> the reference solution in the package
REFERENCE = {
    "slerp": latent.slerp,
    "encoder_noise": encoder.encoder_noise,
    "asymmetric_update": hspace.asymmetric_update,
    "langevin_proposal": guidance.langevin_proposal,
}


def _student_function(name: str, path: str | None):
    file = Path(path) if path else ASSIGNMENTS / f"{name}.py"
    if not file.is_file():
        pytest.fail(f"no file {file}: write your solution there (copy assignments/{name}.py)", pytrace=False)
    spec = importlib.util.spec_from_file_location(f"student_{name}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        pytest.fail(f"{file} must define a function named {name!r}", pytrace=False)
    return getattr(module, name)


def _implementation(request, name: str):
    if request.config.getoption("--grade") == name:
        return _student_function(name, request.config.getoption("--student"))
    return REFERENCE[name]


def _fixture(name: str):
    """A fixture named like the assignment: the student's function when grading it, else the reference."""
    @pytest.fixture(name=name)
    def implementation(request):
        return _implementation(request, name)
    return implementation


for _name in REFERENCE:                          # fixtures slerp, encoder_noise, asymmetric_update, langevin_proposal
    globals()[f"_{_name}_fixture"] = _fixture(_name)


def _scheduler(steps: int = 50) -> DDIMScheduler:
    """An epsilon-predicting DDIM scheduler without clipping, timesteps set (the setting the
    assignments' docstrings describe)."""
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                          set_alpha_to_one=False, prediction_type="epsilon")
    sched.set_timesteps(steps)
    return sched


def _close(got, want, atol=1e-5, what="output"):
    assert isinstance(got, torch.Tensor), f"the {what} must be a torch.Tensor, got {type(got).__name__}"
    assert got.shape == want.shape, f"the {what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"the {what} has dtype {got.dtype}, expected {want.dtype}"
    err = (got - want).abs().max().item()
    assert err <= atol, f"the {what} differs from the reference by up to {err:.3g} (allowed {atol:g})"


# --- slerp -----------------------------------------------------------------------------------------

@pytest.mark.assignment("slerp")
def test_slerp_endpoints(slerp):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    out = slerp(a, b, torch.tensor([0.0, 1.0]))
    _close(out[0], a, what="slerp at w=0")
    _close(out[1], b, what="slerp at w=1")


@pytest.mark.assignment("slerp")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_matches_reference(slerp, dtype):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3264, generator=g, dtype=dtype), torch.randn(3264, generator=g, dtype=dtype)
    w = torch.linspace(0, 1, 7)
    _close(slerp(a, b, w), REFERENCE["slerp"](a, b, w), what="slerp")


@pytest.mark.assignment("slerp")
def test_slerp_keeps_the_norm_of_a_gaussian_code(slerp):
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(3264, generator=g), torch.randn(3264, generator=g)
    mid = slerp(a, b, torch.tensor([0.5]))[0]
    ratio = (mid.norm() / 3264 ** 0.5).item()
    assert 0.95 < ratio < 1.05, (f"at w=0.5 the norm is {ratio:.2f} x sqrt(D); a spherical path keeps it near 1 "
                                 f"(a straight line would give about 0.71)")


@pytest.mark.assignment("slerp")
def test_slerp_parallel_codes(slerp):
    a = torch.randn(16)
    out = slerp(a, 2 * a, torch.tensor([0.5]))
    assert torch.isfinite(out).all(), "slerp of parallel codes (theta = 0) must not divide by sin(0)"
    _close(out[0], 1.5 * a, what="slerp of parallel codes at w=0.5")


@pytest.mark.assignment("slerp")
def test_slerp_rejects_bad_shapes(slerp):
    with pytest.raises(ValueError):
        slerp(torch.randn(4), torch.randn(5), torch.tensor([0.5]))
    with pytest.raises(ValueError):
        slerp(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0.5]))


# --- encoder_noise ---------------------------------------------------------------------------------

@pytest.mark.assignment("encoder_noise")
@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_encoder_noise_lands_on_the_target(encoder_noise, eta):
    sched, g = _scheduler(), torch.Generator().manual_seed(3)
    for t in sched.timesteps[[0, 10, 25, 48]]:
        x, out, target = (torch.randn(4, 1, 8, 8, generator=g) for _ in range(3))
        eps = encoder_noise(sched, out, t, x, target, eta)
        _close(eps, REFERENCE["encoder_noise"](sched, out, t, x, target, eta), atol=1e-4, what=f"noise at t={int(t)}")
        landed = latent.step_with_noise(sched, out, t, x, eps, eta)
        _close(landed, target, atol=1e-4, what=f"step with your noise at t={int(t)} (must land on the target)")


@pytest.mark.assignment("encoder_noise")
def test_encoder_noise_float64(encoder_noise):
    sched, g = _scheduler(), torch.Generator().manual_seed(4)
    x, out, target = (torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
    t = sched.timesteps[5]
    _close(encoder_noise(sched, out, t, x, target, 1.0), REFERENCE["encoder_noise"](sched, out, t, x, target, 1.0),
           atol=1e-9, what="float64 noise")


# --- asymmetric_update -----------------------------------------------------------------------------

@pytest.mark.assignment("asymmetric_update")
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_asymmetric_update_matches_reference(asymmetric_update, eta):
    sched, g = _scheduler(), torch.Generator().manual_seed(5)
    for t in sched.timesteps[[0, 20, 49]]:
        x, out, out_edit, noise = (torch.randn(3, 1, 8, 8, generator=g) for _ in range(4))
        want = REFERENCE["asymmetric_update"](sched, out, out_edit, t, x, noise, eta)
        _close(asymmetric_update(sched, out, out_edit, t, x, noise, eta), want, atol=1e-4,
               what=f"asymmetric step at t={int(t)}, eta={eta}")


@pytest.mark.assignment("asymmetric_update")
def test_asymmetric_update_without_edit_is_the_plain_step(asymmetric_update):
    sched, g = _scheduler(), torch.Generator().manual_seed(6)
    x, out, noise = (torch.randn(3, 1, 8, 8, generator=g) for _ in range(3))
    t = sched.timesteps[10]
    _close(asymmetric_update(sched, out, out, t, x, noise, 1.0), latent.step_with_noise(sched, out, t, x, noise, 1.0),
           atol=1e-5, what="step with edited_output == model_output (must be the plain DDIM step)")


@pytest.mark.assignment("asymmetric_update")
def test_asymmetric_update_moves_only_the_clean_image_term(asymmetric_update):
    """The edit enters through sqrt(abar_prev) P_t only: its effect is -sqrt(abar_prev (1-abar_t)/abar_t) d_eps."""
    sched, g = _scheduler(), torch.Generator().manual_seed(7)
    x, out, noise, d = (torch.randn(2, 1, 8, 8, generator=g) for _ in range(4))
    t = sched.timesteps[15]
    w_p, _ = hspace.step_weights(sched, t, 1.0, x)
    moved = asymmetric_update(sched, out, out + d, t, x, noise, 1.0) - asymmetric_update(sched, out, out, t, x, noise, 1.0)
    _close(moved, w_p * d, atol=1e-4, what="change made by the edit")


# --- langevin_proposal -----------------------------------------------------------------------------

@pytest.mark.assignment("langevin_proposal")
def test_langevin_proposal_matches_reference(langevin_proposal):
    g = torch.Generator().manual_seed(8)
    z, grad, noise = (torch.randn(5, 32, generator=g) for _ in range(3))
    for s in (1e-3, 0.1, 2.0):
        _close(langevin_proposal(z, grad, s, noise), REFERENCE["langevin_proposal"](z, grad, s, noise),
               what=f"proposal with step_size={s}")


@pytest.mark.assignment("langevin_proposal")
def test_langevin_proposal_samples_a_gaussian(langevin_proposal):
    """For U(z) = |z|^2 / 2 the unadjusted chain's stationary variance is 1 / (1 - s/4) (a known bias)."""
    g, s = torch.Generator().manual_seed(9), 0.2
    z = torch.zeros(4096, 8)
    for _ in range(300):
        z = langevin_proposal(z, z, s, torch.randn(z.shape, generator=g))
    var = z.var().item()
    assert abs(var - 1 / (1 - s / 4)) < 0.03, f"the chain's variance is {var:.3f}, expected {1 / (1 - s / 4):.3f}"


# --- the grading command ---------------------------------------------------------------------------

def _grade(name: str, student: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__)), "--grade", name, "-q", "--tb=short",
           "-p", "no:cacheprovider"]
    if student is not None:
        cmd += ["--student", str(student)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_every_stub_fails_readably(name):
    """Each stub raises NotImplementedError naming itself and the grading command (the stub's message is
    what `make grade` shows for every one of its checks)."""
    stub = _student_function(name, None)
    n_args = len(inspect.signature(stub).parameters)
    with pytest.raises(NotImplementedError, match=f"{name} is not implemented yet.*make grade A={name}"):
        stub(*(torch.zeros(4),) * n_args)


def test_grading_command_end_to_end(tmp_path):
    """`make grade`'s pytest call: the stub fails every check readably, a correct solution passes them all."""
    run = _grade("slerp")
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "slerp is not implemented yet" in out and "make grade A=slerp" in out, out
    assert "passed" not in out.splitlines()[-1], out.splitlines()[-1]
    solution = tmp_path / "slerp.py"
    solution.write_text("from dpmlatent.latent import slerp  # the reference solution\n")
    run = _grade("slerp", solution)
    assert run.returncode == 0 and " passed" in run.stdout.splitlines()[-1], run.stdout + run.stderr


def test_grading_an_unknown_assignment_is_a_clear_error():
    run = _grade("no_such_assignment")
    assert run.returncode != 0 and "no assignment named 'no_such_assignment'" in run.stdout + run.stderr


def test_every_assignment_has_a_stub_and_checks():
    stubs = {p.stem for p in ASSIGNMENTS.glob("*.py")}
    assert stubs == set(REFERENCE), f"stubs {sorted(stubs)} vs graded {sorted(REFERENCE)}"
    for name in REFERENCE:
        stub_params = list(inspect.signature(_student_function(name, None)).parameters)
        assert list(inspect.signature(REFERENCE[name]).parameters)[:len(stub_params)] == stub_params, name
