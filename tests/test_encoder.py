import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from dpmlatent.encoder import SIGMA_ZERO, ddim_decode, ddim_invert, dpm_encode, edit_friendly_encode
from dpmlatent.latent import decode

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# Both exact encoders share the loop and differ only in their targets: every exactness test runs on both.
ENCODE = pytest.mark.parametrize("encode", [dpm_encode, edit_friendly_encode], ids=["dpm", "edit-friendly"])


def _roundtrip(unet, scheduler, x0, eta, steps, strength=1.0, encode=dpm_encode, **guidance):
    z = encode(unet, scheduler, x0, eta=eta, num_inference_steps=steps, strength=strength,
               generator=torch.Generator().manual_seed(0), **guidance)
    with torch.no_grad():
        x = decode(unet, scheduler, z, eta=eta, **guidance)
    assert z.x_start.dtype == x0.dtype and torch.isfinite(z.flatten()).all()
    return (x - x0).abs().max().item()


@pytest.mark.parametrize("eta,steps", list(itertools.product([0.1, 0.5, 1.0], [10, 50, 100])))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@ENCODE
def test_exact_roundtrip_ddim(tiny_unet, x0, eta, steps, dtype, encode):
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2")  # set_alpha_to_one=True: last step has sigma=0
    assert _roundtrip(tiny_unet.to(dtype), s, x0.to(dtype), eta, steps, encode=encode) <= TOL[dtype]


SCHEDULERS = {
    "ddim-sd": lambda p: DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                       prediction_type=p),
    "ddim-default": lambda p: DDIMScheduler(prediction_type=p),
    "ddim-trailing": lambda p: DDIMScheduler(prediction_type=p, timestep_spacing="trailing",
                                             set_alpha_to_one=False),
    "ddim-threshold": lambda p: DDIMScheduler(prediction_type=p, thresholding=True, set_alpha_to_one=False,
                                              steps_offset=1),
    "ddpm": lambda p: DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=p),
}


@pytest.mark.parametrize("name,prediction", [(n, p) for n in SCHEDULERS
                                             for p in ("epsilon", "v_prediction", "sample")
                                             if not (p == "sample" and n in ("ddim-default", "ddpm"))])
@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@ENCODE
def test_exact_roundtrip_scheduler_options(tiny_unet, x0, name, prediction, strength, dtype, encode):
    s = SCHEDULERS[name](prediction)
    eta = 1.0 if name == "ddpm" else 0.3
    assert _roundtrip(tiny_unet.to(dtype), s, x0.to(dtype), eta, 20, strength, encode=encode) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@ENCODE
def test_exact_roundtrip_conditional_with_cfg(tiny_cond_unet, x0, dtype, encode):
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(3, 4, 8, generator=g, dtype=dtype), torch.zeros(3, 4, 8, dtype=dtype)
    s = SCHEDULERS["ddim-sd"]("epsilon")
    unet = tiny_cond_unet.to(dtype)
    err = _roundtrip(unet, s, x0.to(dtype), 0.5, 20, encode=encode, cond=cond, uncond=uncond, guidance_scale=3.0)
    assert err <= TOL[dtype]
    z = encode(unet, s, x0.to(dtype), eta=0.5, num_inference_steps=20, cond=cond, uncond=uncond,
               guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # decoding under another condition gives another image
        other = decode(unet, s, z, eta=0.5, cond=-cond, uncond=uncond, guidance_scale=3.0)
    assert (other - x0.to(dtype)).abs().max() > 1e-3


def test_same_generator_same_code_and_no_nan_at_deterministic_last_step(tiny_unet, x0):
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", set_alpha_to_one=True)
    a = dpm_encode(tiny_unet, s, x0, eta=1.0, num_inference_steps=10, generator=torch.Generator().manual_seed(5))
    b = dpm_encode(tiny_unet, s, x0, eta=1.0, num_inference_steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.flatten(), b.flatten()) and torch.isfinite(a.flatten()).all()
    assert torch.equal(a.noises[-1], torch.zeros_like(a.noises[-1]))  # the sigma = 0 step


@ENCODE
def test_single_deterministic_step(tiny_unet, x0, encode):
    s = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    assert _roundtrip(tiny_unet, s, x0, 1.0, 10, strength=0.1, encode=encode) <= 1e-5


def test_encoder_errors(tiny_unet, x0):
    s = DDIMScheduler()
    with pytest.raises(ValueError, match="ddim_invert"):
        dpm_encode(tiny_unet, s, x0, eta=0.0, num_inference_steps=10)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        dpm_encode(tiny_unet, s, x0 * 2, eta=0.5, num_inference_steps=10)
    with pytest.raises(ValueError, match="in_channels"):
        dpm_encode(tiny_unet, s, x0.repeat(1, 3, 1, 1), eta=0.5, num_inference_steps=10)
    with pytest.raises(ValueError, match="strength"):
        dpm_encode(tiny_unet, s, x0, eta=0.5, num_inference_steps=10, strength=1.5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        dpm_encode(tiny_unet, s, x0, eta=0.5, num_inference_steps=-1)
    with pytest.raises(TypeError, match="floating"):
        dpm_encode(tiny_unet, s, x0.to(torch.int64), eta=0.5, num_inference_steps=10)
    with pytest.raises(ValueError, match="does not depend on x_t"):
        dpm_encode(tiny_unet, DDPMScheduler(prediction_type="sample"), x0, eta=1.0, num_inference_steps=10)


def test_edit_friendly_states_are_independent_draws_from_q_xt_given_x0(tiny_unet, x0):
    """The definition: x_{t_i} = sqrt(abar) x0 + sqrt(1 - abar) n_i with independent n_i, drawn from the
    smallest t to the largest (x_T last); the states the decoder computes are those draws (to rounding)."""
    from dpmlatent.latent import denoiser_output, sampling_timesteps, step_with_noise

    s = DDIMScheduler(set_alpha_to_one=False, steps_offset=1)
    x = x0.double()
    unet = tiny_unet.double()
    z = edit_friendly_encode(unet, s, x, eta=1.0, num_inference_steps=6, generator=torch.Generator().manual_seed(3))
    ts = sampling_timesteps(s, 6)
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in ts][::-1]    # noise[i] belongs to ts[i]
    drawn = [s.add_noise(x, n, t.repeat(len(x))) for n, t in zip(noise, ts)]
    assert torch.equal(z.x_start, drawn[0])
    state = z.x_start
    with torch.no_grad():
        for i, t in enumerate(ts[:-1]):
            state = step_with_noise(s, denoiser_output(unet, state, t), t, state, z.noises[i], 1.0)
            assert (state - drawn[i + 1]).abs().max() < 1e-10                   # lands on the independent draw
    # DPM-Encoder from the same generator: the same x_T draw is not even the first one it makes
    d = dpm_encode(unet, s, x, eta=1.0, num_inference_steps=6, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(d.x_start, z.x_start)


def test_edit_friendly_noises_carry_the_gap_between_independent_draws(x0):
    """With a perfect denoiser (the ideal denoiser of the one image encoded), DPM-Encoder's noises are
    exactly the fresh N(0, I) draws of its posterior samples; the edit-friendly ones must also bridge
    two independent draws of x_t and x_{t-1}, so their variance is well above 1 and they are
    correlated across steps."""
    from dpmlatent.encoder import ideal_noise_variance, noise_statistics, step_sigma
    from dpmlatent.ideal import IdealDenoiser
    from dpmlatent.latent import sampling_timesteps

    s = DDIMScheduler(set_alpha_to_one=False, steps_offset=1)
    x = x0[:1].double().repeat(16, 1, 1, 1)                       # 16 encodings of one image: 1,024 numbers a step
    oracle = IdealDenoiser(x[:1], s)
    kw = dict(eta=1.0, num_inference_steps=50)
    dpm = noise_statistics(dpm_encode(oracle, s, x, generator=torch.Generator().manual_seed(0), **kw), x)
    ef = noise_statistics(edit_friendly_encode(oracle, s, x, generator=torch.Generator().manual_seed(0), **kw), x)
    assert (dpm["var"][:-1].mean() - 1).abs() < 0.05 and dpm["lag1"].mean().abs() < 0.03
    assert dpm["ks"][:-1].mean() < 0.05
    # a difference of two independent draws: variance far above 1, lag-1 correlation near -1/2
    assert ef["var"][:-1].mean() > 3 and -0.55 < ef["lag1"].mean() < -0.4 and ef["ks"][:-1].mean() > 0.1
    # and the closed form read off the scheduler predicts each step's variance (1,024 numbers: 5% error or so)
    ts = sampling_timesteps(s, 50)
    ideal = ideal_noise_variance(s, ts, 1.0)
    assert ((ef["var"] / ideal - 1).abs() < 0.2).all() and ((ef["var"] / ideal - 1).abs().mean() < 0.06)
    ideal_dpm = ideal_noise_variance(s, ts, 1.0, encoder="dpm")          # 1, but the last step lands on x0 itself
    assert torch.equal(ideal_dpm[:-1], torch.ones(49, dtype=torch.float64)) and ideal_dpm[-1] == ideal[-1] < 1
    assert ((dpm["var"] / ideal_dpm - 1).abs() < 0.2).all()
    # the docstring's closed form for DDIM: 2 (1 - abar_prev) / sigma^2 - 1
    abar_prev = s.alphas_cumprod.double()[ts[1:]]
    sigma2 = torch.stack([step_sigma(s, t, 1.0, torch.ones(1, dtype=torch.float64)) for t in ts[:-1]]).flatten() ** 2
    assert torch.allclose(ideal[:-1], 2 * (1 - abar_prev) / sigma2 - 1, rtol=1e-5)
    # grows like 1 / eta^2
    ratio = ideal_noise_variance(s, ts, 0.1)[:-1] / ideal[:-1]
    assert ratio.min() > 50
    with pytest.raises(ValueError, match="encoder must be one of"):
        ideal_noise_variance(s, ts, 1.0, encoder="ddim")
    s.set_timesteps(20)                                                  # another schedule: refused, not misread
    with pytest.raises(ValueError, match="set_timesteps"):
        ideal_noise_variance(s, ts, 1.0)


def test_noise_statistics_of_a_known_code():
    """Standard normal noises: mean 0, variance 1, no correlation; a noise built from the image and
    from the previous step's: the correlations it was built with."""
    from dpmlatent.encoder import noise_statistics
    from dpmlatent.latent import LatentCode

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    x0 = (x0 - x0.mean()) / x0.std()
    white = torch.randn(6, 64, 1, 8, 8, generator=g, dtype=torch.float64)
    st = noise_statistics(LatentCode(torch.zeros_like(x0), white, torch.arange(6, 0, -1), 6), x0)
    assert st["mean"].abs().max() < 0.05 and (st["var"] - 1).abs().max() < 0.07
    assert st["lag1"].abs().max() < 0.06 and st["image_corr"].abs().max() < 0.06 and st["ks"].max() < 0.03
    assert st["lag1"].shape == (5,) and st["ks_p"].min() > 1e-3
    mixed = white.clone()
    mixed[1] = 0.6 * white[0] + 0.8 * white[1]                       # corr(step 0, step 1) = 0.6
    mixed[3] = 0.8 * x0 + 0.6 * white[3]                             # corr(step 3, image) = 0.8
    mixed[5] = 0
    st = noise_statistics(LatentCode(torch.zeros_like(x0), mixed, torch.arange(6, 0, -1), 6), x0)
    assert abs(st["lag1"][0] - 0.6) < 0.05 and abs(st["image_corr"][3] - 0.8) < 0.05
    assert torch.isnan(st["image_corr"][5]) and st["var"][5] == 0 and st["ks"][5] > 0.4
    # white noise that cancels in the sum: each step 0.3 x0 + w_i - w_{i-1}; one step's correlation with
    # the image is small, the running sum's grows to 1 (sum = i 0.3 x0 + w_i - w_0)
    w = torch.randn(7, 64, 1, 8, 8, generator=g, dtype=torch.float64)
    cancel = 0.3 * x0 + w[1:] - w[:-1]
    st = noise_statistics(LatentCode(torch.zeros_like(x0), cancel, torch.arange(6, 0, -1), 6), x0)
    assert st["image_corr"].max() < 0.3 and abs(st["sum_image_corr"][0] - st["image_corr"][0]) < 1e-12
    assert st["sum_image_corr"][-1] > 0.7 and (st["lag1"] + 0.5).abs().max() < 0.1
    one = noise_statistics(LatentCode(torch.zeros_like(x0), cancel, torch.arange(6, 0, -1), 6), x0, per_image=True)
    assert all(v.shape[-1] == 64 for v in one.values()) and one["lag1"].shape == (5, 64)
    first = noise_statistics(LatentCode(x0[:1], cancel[:, :1], torch.arange(6, 0, -1), 6), x0[:1])
    assert all(torch.allclose(one[k][:, 0], first[k], equal_nan=True) for k in first)
    with pytest.raises(TypeError, match="per_image"):
        noise_statistics(LatentCode(torch.zeros_like(x0), cancel, torch.arange(6, 0, -1), 6), x0, per_image=1)
    with pytest.raises(ValueError, match="x0 must have the code's image shape"):
        noise_statistics(LatentCode(torch.zeros_like(x0), mixed, torch.arange(6, 0, -1), 6), x0[:3])
    with pytest.raises(TypeError, match="LatentCode"):
        noise_statistics(mixed, x0)


def test_edit_friendly_encoder_errors(tiny_unet, x0):
    s = DDIMScheduler()
    with pytest.raises(ValueError, match="ddim_invert"):
        edit_friendly_encode(tiny_unet, s, x0, eta=0.0, num_inference_steps=10)
    with pytest.raises(TypeError, match="eta must be a number"):
        edit_friendly_encode(tiny_unet, s, x0, eta="1", num_inference_steps=10)
    with pytest.raises(ValueError, match=r"eta must be in \[0, 1\]"):
        edit_friendly_encode(tiny_unet, s, x0, eta=1.5, num_inference_steps=10)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        edit_friendly_encode(tiny_unet, s, x0 * 2, num_inference_steps=10)
    with pytest.raises(ValueError, match="num_inference_steps"):
        edit_friendly_encode(tiny_unet, s, x0, num_inference_steps=0)
    with pytest.raises(ValueError, match="does not depend on x_t"):
        edit_friendly_encode(tiny_unet, DDPMScheduler(prediction_type="sample"), x0, num_inference_steps=10)
    with pytest.raises(ValueError, match="encoder must be one of"):
        from dpmlatent.encoder import _Targets
        _Targets("ledits", tiny_unet, s, x0, torch.tensor([1]), 1.0, None, {})


def _zero_unet():
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    return unet.eval()


def test_ddim_inversion_is_exact_for_a_linear_model(x0):
    """With eps_theta = 0 every DDIM step is linear in x, so inversion must be exact: this
    checks that the inverse and forward timesteps line up."""
    for s in (DDIMScheduler(beta_schedule="squaredcos_cap_v2"),
              DDIMScheduler(set_alpha_to_one=False, steps_offset=1)):
        for strength in (1.0, 0.5):
            z = ddim_invert(_zero_unet(), s, x0, num_inference_steps=25, strength=strength)
            assert torch.equal(z.noises, torch.zeros_like(z.noises))
            with torch.no_grad():
                assert (ddim_decode(_zero_unet(), s, z) - x0).abs().max() < 1e-4


def test_ddim_inversion_accepts_ddpm_config(tiny_unet, x0):
    z = ddim_invert(tiny_unet, DDPMScheduler(beta_schedule="squaredcos_cap_v2"), x0, num_inference_steps=10)
    with torch.no_grad():
        assert torch.isfinite(ddim_decode(tiny_unet, DDPMScheduler(beta_schedule="squaredcos_cap_v2"), z)).all()


# --- The deterministic last step, over the whole option matrix (issue 16) --------------------------
# For each scheduler configuration the expected outcome follows from the last step's own numbers:
# sigma > 0 -> exact; sigma = 0 with alpha_prev = 1 (the step returns clip(P(x))) -> exact for
# epsilon / v prediction, a ValueError for "sample" (the step ignores x); sigma = 0 with
# alpha_prev = alpha_t (DDIM's final timestep 0 with set_alpha_to_one=False: without clipping the
# step is the identity) -> exact without clipping; with clipping a code may not exist, and the
# encoder must then say so rather than return an inexact code. A deterministic last step from a
# high noise level (trailing spacing with one step: t = 999) is an ill-posed solve; the encoder
# either lands on x0 or says that it did not converge.

CLIPPING = {"none": {"clip_sample": False}, "clip": {"clip_sample": True},
            "threshold": {"thresholding": True, "clip_sample": False}}
MATRIX = ([("ddim", spacing, clip, one, p, steps)
           for spacing in ("leading", "trailing", "linspace") for clip in CLIPPING for one in (True, False)
           for p in ("epsilon", "v_prediction", "sample") for steps in (1, 10, 50)]
          + [("ddpm", spacing, clip, True, p, steps)
             for spacing in ("leading", "trailing", "linspace") for clip in CLIPPING
             for p in ("epsilon", "v_prediction", "sample") for steps in (1, 10, 50)])


def _make(kind, spacing, clip, one, prediction):
    common = dict(beta_schedule="squaredcos_cap_v2", timestep_spacing=spacing, prediction_type=prediction,
                  **CLIPPING[clip])
    if kind == "ddim":
        return DDIMScheduler(set_alpha_to_one=one, **common)
    return DDPMScheduler(**common)


def _last_step_kind(scheduler, steps, like):
    """'stochastic', 'alpha-one' or 'identity', read off the scheduler's own numbers."""
    from dpmlatent.encoder import step_sigma
    from dpmlatent.latent import sampling_timesteps

    t = sampling_timesteps(scheduler, steps)[-1]
    if (step_sigma(scheduler, t, 1.0 if isinstance(scheduler, DDPMScheduler) else 0.5, like) >= SIGMA_ZERO).any():
        return "stochastic"
    zeros = torch.zeros_like(like)  # the step's gain on x at eps = 0 is sqrt(alpha_prev / alpha_t)
    free = type(scheduler).from_config(scheduler.config, clip_sample=False, thresholding=False,
                                       prediction_type="epsilon")
    free.set_timesteps(steps)
    gain = free.step(zeros, t, torch.ones_like(like)).prev_sample
    return "identity" if torch.allclose(gain, torch.ones_like(gain)) else "alpha-one"


@pytest.mark.parametrize("kind,spacing,clip,one,prediction,steps", MATRIX,
                         ids=lambda v: str(v))
@ENCODE
def test_exact_roundtrip_matrix(tiny_unet, x0, kind, spacing, clip, one, prediction, steps, encode):
    s = _make(kind, spacing, clip, one, prediction)
    eta = 1.0 if kind == "ddpm" else 0.5
    last = _last_step_kind(s, steps, x0)
    abar_last = s.alphas_cumprod[int(s.timesteps[-1])].item()
    if last == "alpha-one" and prediction == "sample" and abar_last >= 0.25:
        with pytest.raises(ValueError, match="does not depend on x_t"):
            _roundtrip(tiny_unet, s, x0, eta, steps, encode=encode)
    elif abar_last < 0.25:
        # a last step from a high noise level (trailing spacing, 1 step: t = 999). Deterministic, the
        # solve need not converge and must then say why; stochastic, the step multiplies x_T by
        # 1 / sqrt(abar_t) (2e4 here), and float32 rounding with it
        try:
            err = _roundtrip(tiny_unet, s, x0, eta, steps, encode=encode)
        except ValueError as e:
            assert last != "stochastic" and ("did not converge" in str(e) or "does not depend" in str(e))
        else:
            assert err <= TOL[torch.float32] / abar_last ** 0.5
    elif last == "identity" and clip != "none":
        try:
            err = _roundtrip(tiny_unet, s, x0, eta, steps, encode=encode)
        except ValueError as e:
            assert "no latent code found" in str(e) and "clips" in str(e)
        else:
            assert err <= TOL[torch.float32]
    else:
        assert _roundtrip(tiny_unet, s, x0, eta, steps, encode=encode) <= TOL[torch.float32], last


def test_matrix_covers_every_kind_of_last_step(x0):
    kinds = {_last_step_kind(_make(k, sp, c, one, p), n, x0) for k, sp, c, one, p, n in MATRIX}
    assert kinds == {"stochastic", "alpha-one", "identity"}


@pytest.mark.parametrize("steps", [20, 50])
@ENCODE
def test_diffusers_default_ddpm_scheduler_clips_and_is_exact(tiny_unet, steps, encode):
    """diffusers' default DDPMScheduler() clips x0; a random image in [-1, 1] (the reviewer's case:
    a miss of 2.5e-3 on a few pixels before the fix)."""
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    assert _roundtrip(tiny_unet, DDPMScheduler(), x, 1.0, steps, encode=encode) <= TOL[torch.float32]


@ENCODE
def test_clipped_alpha_one_step_is_exact_where_clipping_is_active(x0, encode):
    """A model with eps = 0: the last step is clip(x / sqrt(abar)); saturated pixels (x0 = -1)
    are reached exactly (the old solver stalled where the clipped residual had no gain)."""
    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", set_alpha_to_one=True)
    assert (x0 == -1).any()
    assert _roundtrip(_zero_unet(), s, x0, 1.0, 20, encode=encode) <= TOL[torch.float32]


def test_no_code_exists_raises_clear_error(x0):
    """DDIM's final timestep 0 with set_alpha_to_one=False and clipping: with eps = 0 the last step
    is clip(x, -sqrt(abar_0), sqrt(abar_0)), which never reaches x0 = -1 (misses by 5e-3 here)."""
    s = DDIMScheduler(beta_start=0.01, beta_end=0.02, set_alpha_to_one=False, clip_sample=True)
    with pytest.raises(ValueError, match=r"no latent code found for image\(s\) \[0, 1, 2\]"):
        dpm_encode(_zero_unet(), s, x0, eta=0.5, num_inference_steps=10)


@pytest.mark.slow
def test_shipped_model_trailing_spacing_is_exact():
    """The reviewer's case: ddpm-handwritten, DDIM with trailing spacing (last step from t = 49,
    sigma = 0, clipped), eta 1, 20 steps, 32 held-out digits (6.3e-2 before the fix)."""
    from dpmlatent import data, zoo

    pipe = zoo.load("ddpm-handwritten")
    s = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    x = data.handwritten_digits("test").images[:32]
    assert _roundtrip(pipe.unet, s, x, 1.0, 20) <= TOL[torch.float32]


def test_mismatch_gain_matches_the_ddim_closed_form_and_splits_the_encoded_noise():
    from dpmlatent.encoder import mismatch_gain, posterior_sample, perfect_model_output, step_sigma
    from dpmlatent.latent import step_with_noise

    s = DDIMScheduler(clip_sample=False)
    s.set_timesteps(20)
    like = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    eta = 0.4
    for t in s.timesteps[:-1]:
        t = int(t)
        prev = t - s.config.num_train_timesteps // 20
        a, ap = s.alphas_cumprod[t].double(), s.alphas_cumprod[prev].double()
        sigma = eta * ((1 - ap) / (1 - a) * (1 - a / ap)).sqrt()
        c = ap.sqrt() - (1 - ap - sigma ** 2).sqrt() * (a / (1 - a)).sqrt()
        torch.testing.assert_close(mismatch_gain(s, t, eta, like), (c / sigma).expand_as(like), rtol=1e-5, atol=0)  # float32 schedule
    # the decomposition eps = fresh + g (x0 - x0_hat) at a middle step
    g = torch.Generator().manual_seed(0)
    x0, x0_hat, xt, fresh = (torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(4))
    t = int(s.timesteps[7])
    target = posterior_sample(s, x0, xt, t, fresh, eta)
    mu = step_with_noise(s, perfect_model_output(s, x0_hat, xt, t), t, xt, torch.zeros_like(xt), eta)
    eps = (target - mu) / step_sigma(s, t, eta, xt)
    torch.testing.assert_close(eps, fresh + mismatch_gain(s, t, eta, xt) * (x0 - x0_hat))
    # the deterministic last step (set_alpha_to_one=True) has no noise: infinite gain
    assert torch.isinf(mismatch_gain(s, int(s.timesteps[-1]), eta, like)).all()


def test_last_step_share_and_rms_read_the_codes_noises():
    from dpmlatent.encoder import last_step_rms, last_step_share
    from dpmlatent.latent import LatentCode

    g = torch.Generator().manual_seed(0)
    noises = torch.randn(5, 3, 1, 8, 8, generator=g, dtype=torch.float64)
    noises[1, 0] *= 2.0                              # image 0: excess variance in step 1
    noises[3] *= torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1)   # the last stochastic step
    noises[4] = 0.0                                  # the deterministic last step stores 0
    z = LatentCode(torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64), noises, torch.arange(5).flip(0) * 200, 5)
    excess = (noises[:4].flatten(2).var(2) - 1).clamp(min=0)
    torch.testing.assert_close(last_step_share(z), excess[3] / excess.sum(0))
    assert last_step_share(z)[0] > 0.5 and 0 <= last_step_share(z)[1] <= 1
    torch.testing.assert_close(last_step_rms(z), noises[3].flatten(1).square().mean(1).sqrt())
    assert abs(float(last_step_rms(z)[0]) - 3.0) < 0.6
    with pytest.raises(ValueError, match="at least 2 steps"):
        last_step_share(LatentCode(z.x_start, noises[:1], z.timesteps[:1], 1))
    with pytest.raises(ValueError, match="last noise must be 0"):
        last_step_rms(LatentCode(z.x_start, noises[:4], z.timesteps[:4], 4))


def test_encoder_registry_names_each_exact_encoder_once():
    """One vocabulary: ENCODERS names the exact encoders, encoder_function returns each, and
    METHOD_ENCODER maps the editing / translation methods that run one onto those names."""
    from dpmlatent.encoder import ENCODERS, METHOD_ENCODER, encoder_function
    from dpmlatent import edit, translation

    assert [encoder_function(n) for n in ENCODERS] == [dpm_encode, edit_friendly_encode]
    assert set(METHOD_ENCODER.values()) == set(ENCODERS)
    assert set(METHOD_ENCODER) <= set(edit.ALL_METHODS) and set(METHOD_ENCODER) <= set(translation.ALL_METHODS)
    with pytest.raises(ValueError, match="encoder must be one of"):
        encoder_function("ddim")
