"""The image-by-image nonlinear solver behind DPM-Encoder's deterministic last step."""

import pytest
import torch

from dpmlatent.rootfinding import gmres, jacobian, solve_per_image


def _matrix(d, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.linspace(-3, 3, d, dtype=torch.float64)
    ev = torch.where(ev.abs() > 0.5, ev, torch.ones_like(ev))          # both signs, |ev| in [0.5, 3]
    return q @ torch.diag(ev) @ q.T


def test_gmres_solves_independent_linear_systems():
    d = 12
    a = torch.stack([_matrix(d, s) for s in range(3)])
    x_true = torch.randn(3, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    b = (a @ x_true.unsqueeze(-1)).squeeze(-1)
    x = gmres(lambda v: (a @ v.unsqueeze(-1)).squeeze(-1), b, iters=d)
    assert torch.allclose(x, x_true, atol=1e-8)
    with pytest.raises(ValueError, match="iters"):
        gmres(lambda v: v, b, iters=0)


def _per_image_map(m):
    """f(x) = M x + 0.1 x^3 per image (images do not interact)."""
    def fn(x, idx):
        flat = x.reshape(len(x), -1)
        return ((m.to(x.dtype) @ flat.unsqueeze(-1)).squeeze(-1) + 0.1 * flat ** 3).reshape(x.shape)
    return fn


def test_jacobian_matches_autograd():
    m = _matrix(8, 1)
    fn = _per_image_map(m)
    x = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    j = jacobian(fn, x, torch.arange(3), chunk=10)                     # chunk < B*D: several calls
    for i in range(3):
        ref = torch.autograd.functional.jacobian(lambda z: fn(z[None], None)[0], x[i]).reshape(8, 8)
        assert torch.allclose(j[i], ref, atol=1e-12)


@pytest.mark.parametrize("dense_max", [1024, 0])  # dense Jacobian, and Newton-Krylov (GMRES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solve_per_image_where_the_plain_iteration_diverges(dense_max, dtype):
    """M has eigenvalues of both signs up to 3 in size: x <- x + (y - f(x)) diverges, Newton solves."""
    m = _matrix(8, 0)
    fn = _per_image_map(m)
    x_true = 0.5 * torch.randn(4, 2, 2, 2, generator=torch.Generator().manual_seed(3), dtype=dtype)
    y = fn(x_true, torch.arange(4))
    start = x_true + 0.2 * torch.randn(x_true.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
    x, err = solve_per_image(fn, y, start, gain=torch.ones(()), dense_max=dense_max, krylov=8)
    assert err.max() <= 8 * torch.finfo(dtype).eps * 10
    assert (fn(x, torch.arange(4)) - y).abs().max() <= 8 * torch.finfo(dtype).eps * 10
    x_plain, err_plain = solve_per_image(fn, y, start, gain=torch.ones(()), newton_iter=0)
    assert err_plain.min() > 1e-3                                      # the plain iteration alone fails


def test_solve_per_image_reports_the_miss_where_no_solution_exists():
    """f(x) = x^2 never reaches y = -1: the best miss comes back, the caller decides."""
    fn = lambda x, idx: x ** 2  # noqa: E731
    y = -torch.ones(2, 1, 2, 2, dtype=torch.float64)
    x, err = solve_per_image(fn, y, torch.full_like(y, 0.5), gain=torch.ones(()))
    assert (err >= 1.0 - 1e-12).all()


def test_solve_per_image_checks_arguments():
    y = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match="starts"):
        solve_per_image(lambda x, i: x, y, torch.zeros(3, 1, 2, 2), gain=torch.ones(()))
    with pytest.raises(ValueError, match="newton_iter"):
        solve_per_image(lambda x, i: x, y, y, gain=torch.ones(()), newton_iter=-1)
    with pytest.raises(ValueError, match="krylov"):
        solve_per_image(lambda x, i: x, y, y, gain=torch.ones(()), krylov=0)
