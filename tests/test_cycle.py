import copy

import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent.cycle import (check_same_schedule, cycle_translate, ddib_translate, schedule_differences,
                             sdedit_translate)


def _sched(**kw):
    return DDIMScheduler(beta_schedule="squaredcos_cap_v2", **kw)


@pytest.mark.parametrize("encoder", ["dpm", "edit-friendly"])
def test_cycle_with_the_same_model_is_the_identity(tiny_unet, x0, encoder):
    out = cycle_translate(tiny_unet, tiny_unet, _sched(), x0, eta=0.1, num_inference_steps=10, strength=0.8,
                          generator=torch.Generator().manual_seed(0), encoder=encoder)
    assert (out - x0).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="encoder must be one of"):
        cycle_translate(tiny_unet, tiny_unet, _sched(), x0, num_inference_steps=10, strength=0.8, encoder="ddim")


def test_cycle_with_another_model_translates(tiny_unet, x0):
    other = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = cycle_translate(tiny_unet, other, _sched(), x0, num_inference_steps=10, strength=0.8,
                          generator=torch.Generator().manual_seed(0))
    assert out.shape == x0.shape and torch.isfinite(out).all()
    assert (out - x0).abs().max() > 1e-3


def test_sdedit_and_ddib_shapes_and_reproducibility(tiny_unet, x0):
    s = _sched()
    a = sdedit_translate(tiny_unet, s, x0, num_inference_steps=10, strength=0.5,
                         generator=torch.Generator().manual_seed(0))
    b = sdedit_translate(tiny_unet, s, x0, num_inference_steps=10, strength=0.5,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x0.shape
    d = ddib_translate(tiny_unet, tiny_unet, s, x0, num_inference_steps=10, strength=0.5)
    assert d.shape == x0.shape and torch.isfinite(d).all()


def test_schedule_mismatch_names_what_differs(tiny_unet, x0):
    a, b = _sched(), DDIMScheduler(beta_schedule="linear", prediction_type="v_prediction")
    diff = schedule_differences(a, b)
    assert set(diff) == {"beta_schedule", "prediction_type"}
    with pytest.raises(ValueError, match="beta_schedule: 'squaredcos_cap_v2' vs 'linear'"):
        check_same_schedule(a, b)
    with pytest.raises(ValueError, match="prediction_type"):
        cycle_translate(tiny_unet, tiny_unet, a, x0, num_inference_steps=5, strength=0.5, tgt_scheduler=b)
    check_same_schedule(a, _sched())
