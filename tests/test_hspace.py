"""h-space (Asyrp): the bottleneck hook, the asymmetric step, decoding with a shift, learning a shift."""

import copy

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dpmlatent.encoder import dpm_encode
from dpmlatent.hspace import (asymmetric_step, asyrp_decode, bottleneck, directional_clip_loss, edit_steps,
                              learn_delta_h, predicted_x0, record_trajectory, shift_bottleneck, step_weights,
                              unclipped_copy)
from dpmlatent.latent import decode, denoiser_output, sample_latent, step_with_noise


def _ddim(prediction_type="epsilon", clip_sample=True):
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=clip_sample,
                         prediction_type=prediction_type)


def test_bottleneck_is_the_mid_block_output_and_shifting_it_changes_the_prediction(tiny_unet):
    x, t = torch.randn(2, 1, 8, 8), torch.tensor(500)
    h = bottleneck(tiny_unet, x, t)
    assert h.shape == (2, 16, 4, 4)
    with torch.no_grad():
        plain = tiny_unet(x, t).sample
        with shift_bottleneck(tiny_unet, torch.zeros(16, 4, 4)):
            assert torch.equal(tiny_unet(x, t).sample, plain)
        with shift_bottleneck(tiny_unet, torch.ones(1, 16, 4, 4)):
            shifted = tiny_unet(x, t).sample
            assert torch.allclose(bottleneck(tiny_unet, x, t), h + 1, atol=1e-6)
        assert torch.equal(tiny_unet(x, t).sample, plain)         # the hook is gone after the block
    assert (shifted - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="does not broadcast"):
        with shift_bottleneck(tiny_unet, torch.zeros(3, 4, 4)), torch.no_grad():
            tiny_unet(x, t)
    with pytest.raises(TypeError, match="delta_h must be a tensor"):
        with shift_bottleneck(tiny_unet, 1.0):
            pass


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_asymmetric_step_is_the_plain_step_without_a_shift(tiny_unet, prediction_type):
    sched = _ddim(prediction_type)
    sched.set_timesteps(10)
    x, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), sched.timesteps[3]
    with torch.no_grad():
        plain = step_with_noise(sched, denoiser_output(tiny_unet, x, t), t, x, noise, 0.3)
        zero = asymmetric_step(tiny_unet, sched, x, t, torch.zeros(16, 4, 4), noise, eta=0.3)
        none = asymmetric_step(tiny_unet, sched, x, t, None, noise, eta=0.3)
    assert torch.equal(none, plain)
    assert torch.allclose(zero, plain, atol=1e-5)


def test_asymmetric_step_moves_only_the_predicted_clean_image(tiny_unet):
    """x_{t-1} = sqrt(abar_prev) P_t(eps_edit) + D_t(eps): the edit changes x_{t-1} by exactly
    sqrt(abar_prev) (P_edit - P); the symmetric step (shift everywhere) is a different step."""
    sched = _ddim(clip_sample=False)
    sched.set_timesteps(10)
    x, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), sched.timesteps[2]
    dh = torch.randn(16, 4, 4)
    with torch.no_grad():
        out = denoiser_output(tiny_unet, x, t)
        with shift_bottleneck(tiny_unet, dh):
            out_edit = denoiser_output(tiny_unet, x, t)
        plain = step_with_noise(sched, out, t, x, noise, 0.5)
        symmetric = step_with_noise(sched, out_edit, t, x, noise, 0.5)
        asym = asymmetric_step(tiny_unet, sched, x, t, dh, noise, eta=0.5)
    prev_t = t - 1000 // 10
    abar_prev = sched.alphas_cumprod[prev_t]
    expected = plain + abar_prev.sqrt() * (predicted_x0(sched, out_edit, t, x) - predicted_x0(sched, out, t, x))
    assert torch.allclose(asym, expected, atol=1e-5)
    assert (asym - symmetric).abs().max() > 1e-3
    with torch.no_grad():
        assert torch.equal(asymmetric_step(tiny_unet, sched, x, t, dh, noise, eta=0.5, asymmetric=False), symmetric)


def test_an_eps_space_shift_moves_the_step_by_w_p_times_the_shift(tiny_unet):
    """space="eps" adds the shift to the model's output: the asymmetric step then moves x_{t-1} by
    w_P * d_eps and the symmetric one by (w_P + w_D) * d_eps (step_weights, read off the scheduler)."""
    sched = _ddim(clip_sample=False)
    sched.set_timesteps(10)
    x, noise, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64), \
        sched.timesteps[2]
    unet = copy.deepcopy(tiny_unet).double()
    d_eps = torch.randn(1, 8, 8, dtype=torch.float64)
    w_p, w_d = step_weights(sched, t, 0.5, torch.zeros(1, dtype=torch.float64))
    with torch.no_grad():
        plain = asymmetric_step(unet, sched, x, t, None, noise, eta=0.5)
        asym = asymmetric_step(unet, sched, x, t, d_eps, noise, eta=0.5, space="eps")
        sym = asymmetric_step(unet, sched, x, t, d_eps, noise, eta=0.5, space="eps", asymmetric=False)
        assert torch.allclose(asymmetric_step(unet, sched, x, t, torch.zeros_like(d_eps), noise, eta=0.5,
                                              space="eps"), plain, atol=1e-12)
    assert torch.allclose(asym - plain, w_p * d_eps, atol=1e-12)
    assert torch.allclose(sym - plain, (w_p + w_d) * d_eps, atol=1e-12)
    with pytest.raises(ValueError, match="space must be 'h' or 'eps'"):
        asymmetric_step(unet, sched, x, t, d_eps, noise, eta=0.5, space="x")
    with pytest.raises(TypeError, match="an 'eps' shift must be a tensor"):
        asymmetric_step(unet, sched, x, t, lambda h: h, noise, eta=0.5, space="eps")
    z = sample_latent((2, 1, 8, 8), sched, 10, 0.0, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(asyrp_decode(unet, sched, z, d_eps, t_edit=400, eta=0.0, scale=0.0, space="eps"),
                           decode(unet, sched, z, eta=0.0))
        moved = asyrp_decode(unet, sched, z, d_eps, t_edit=400, eta=0.0, space="eps")
    assert (moved - decode(unet, sched, z, eta=0.0)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="space must be 'h' or 'eps'"):
        asyrp_decode(unet, sched, z, d_eps, t_edit=400, eta=0.0, space="h-space")


def test_asymmetric_step_with_ddpm(tiny_unet):
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    sched.set_timesteps(10)
    x, noise, t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), sched.timesteps[4]
    with torch.no_grad():
        plain = step_with_noise(sched, denoiser_output(tiny_unet, x, t), t, x, noise, 1.0)
        zero = asymmetric_step(tiny_unet, sched, x, t, torch.zeros(16, 4, 4), noise, eta=1.0)
        edited = asymmetric_step(tiny_unet, sched, x, t, torch.randn(16, 4, 4), noise, eta=1.0)
    assert torch.allclose(zero, plain, atol=1e-5) and (edited - plain).abs().max() > 1e-4


def test_asyrp_decode_reconstructs_without_a_shift_and_validates(tiny_unet, x0):
    sched = _ddim()
    z = dpm_encode(tiny_unet, sched, x0, eta=0.2, num_inference_steps=8, generator=torch.Generator().manual_seed(0))
    dh = torch.randn(16, 4, 4)
    with torch.no_grad():
        same = asyrp_decode(tiny_unet, sched, z, dh, t_edit=400, eta=0.2, scale=0.0)
        assert torch.equal(same, decode(tiny_unet, sched, z, eta=0.2))
        assert (same - x0).abs().max() < 1e-4                       # DPM-Encoder's exact reconstruction
        edited = asyrp_decode(tiny_unet, sched, z, dh, t_edit=400, eta=0.2)
        per_step = asyrp_decode(tiny_unet, sched, z, [dh] * edit_steps(z.timesteps, 400), t_edit=400, eta=0.2)
    assert torch.equal(edited, per_step) and (edited - x0).abs().max() > 1e-3
    assert edit_steps(z.timesteps, 400) == int((z.timesteps >= 400).sum()) > 0
    with pytest.raises(ValueError, match="t_edit=2000 is above every timestep"):
        asyrp_decode(tiny_unet, sched, z, dh, t_edit=2000, eta=0.2)
    with pytest.raises(ValueError, match="t_edit must be a non-negative integer"):
        asyrp_decode(tiny_unet, sched, z, dh, t_edit=0.5, eta=0.2)
    with pytest.raises(ValueError, match="per-step shifts"):
        asyrp_decode(tiny_unet, sched, z, [dh, dh], t_edit=400, eta=0.2)
    with pytest.raises(TypeError, match="delta_h must be a tensor"):
        asyrp_decode(tiny_unet, sched, z, "up", t_edit=400, eta=0.2)


def _trajectories(unet, sched, n=4, steps=6):
    z = sample_latent((n, 1, 8, 8), sched, steps, 0.0, generator=torch.Generator().manual_seed(0))
    states = record_trajectory(unet, sched, z, eta=0.0)
    with torch.no_grad():                                         # the states are the decoder's own
        x = z.x_start
        for k, t in enumerate(z.timesteps):
            assert torch.equal(states[k], x)
            x = step_with_noise(sched, denoiser_output(unet, x, t), t, x, torch.zeros_like(x), 0.0)
    assert states.shape == (steps, n, 1, 8, 8)
    for k in (1, 3, steps):                                       # the first k states only, the same ones
        assert torch.equal(record_trajectory(unet, sched, z, eta=0.0, num_states=k), states[:k])
    for bad in (0, steps + 1, 2.0, True):
        with pytest.raises(ValueError, match="num_states must be an integer"):
            record_trajectory(unet, sched, z, eta=0.0, num_states=bad)
    return states, z.timesteps


@pytest.mark.parametrize("per_step", [False, True])
def test_learn_delta_h_lowers_its_loss_and_leaves_the_unet_frozen(tiny_unet, per_step):
    sched = _ddim(clip_sample=False)
    traj, ts = _trajectories(tiny_unet, sched)
    tiny_unet.requires_grad_(True)
    before = {k: v.clone() for k, v in tiny_unet.state_dict().items()}

    def brighter(p_edit, p):                                    # ask for a brighter predicted image
        return -(p_edit - p).flatten(1).mean(1) + 0.1 * (p_edit - p).pow(2).flatten(1).mean(1)
    d = learn_delta_h(tiny_unet, sched, traj, ts, brighter, t_edit=300, num_inference_steps=6, per_step=per_step,
                      iterations=40, batch_size=4, lr=0.05, generator=torch.Generator().manual_seed(0), progress=False)
    assert sum(d.losses[-10:]) < sum(d.losses[:10])
    n_edit = edit_steps(ts, 300)
    if per_step:
        assert isinstance(d.delta_h, list) and len(d.delta_h) == n_edit and d.delta_h[0].shape == (16, 4, 4)
    else:
        assert d.delta_h.shape == (16, 4, 4) and not d.delta_h.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in tiny_unet.state_dict().items())
    assert all(p.requires_grad for p in tiny_unet.parameters())    # the caller's flags are restored
    # float64 end to end (chapter 7 learns in float64): the same start, cast; float64 out
    unet64 = copy.deepcopy(tiny_unet).double()
    d64 = learn_delta_h(unet64, sched, traj.double(), ts, brighter, t_edit=300, num_inference_steps=6,
                        per_step=per_step, iterations=1, batch_size=4, lr=1e-12,
                        generator=torch.Generator().manual_seed(0), progress=False)
    d32 = learn_delta_h(tiny_unet, sched, traj, ts, brighter, t_edit=300, num_inference_steps=6,
                        per_step=per_step, iterations=1, batch_size=4, lr=1e-12,
                        generator=torch.Generator().manual_seed(0), progress=False)
    first64, first32 = (d64.delta_h[0], d32.delta_h[0]) if per_step else (d64.delta_h, d32.delta_h)
    assert first64.dtype == torch.float64 and torch.allclose(first64.float(), first32, atol=1e-9)
    with pytest.raises(ValueError, match="trajectories must be"):
        learn_delta_h(tiny_unet, sched, traj[0], ts, brighter, t_edit=300, num_inference_steps=6)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        learn_delta_h(tiny_unet, sched, traj, ts, brighter, t_edit=300, num_inference_steps=6, iterations=0)
    with pytest.raises(ValueError, match="init_std must be positive"):
        learn_delta_h(tiny_unet, sched, traj, ts, brighter, t_edit=300, num_inference_steps=6, init_std=0.0)


@pytest.mark.parametrize("per_step", [False, True])
def test_learn_delta_h_trains_every_per_step_direction_as_long_as_a_global_one(tiny_unet, per_step):
    sched = _ddim(clip_sample=False)
    traj, ts = _trajectories(tiny_unet, sched, n=6)
    n_edit = edit_steps(ts, 300)
    seen = []

    def recording(p_edit, p):                                   # p: the cached unshifted prediction
        seen.append((len(p_edit), float((p_edit - p).detach().abs().max())))
        return -(p_edit - p).flatten(1).mean(1)
    d = learn_delta_h(tiny_unet, sched, traj, ts, recording, t_edit=300, num_inference_steps=6, per_step=per_step,
                      iterations=5, batch_size=4, lr=1e-9, init_std=1e-9,
                      generator=torch.Generator().manual_seed(0), progress=False)
    # per step: every step's direction sees batch_size images at every iteration, all steps in one
    # call of the loss (and of the UNet); global: one step
    assert [n for n, _ in seen] == [4 * (n_edit if per_step else 1)] * 5 and len(d.losses) == 5
    # the cached P belongs to the same images and step as P_edit (a shift of ~1e-9 moves P_edit by less)
    assert max(diff for _, diff in seen) < 1e-5 and n_edit > 1


def test_learn_delta_h_per_step_gradient_is_each_steps_own(tiny_unet):
    """One iteration of per-step training (all steps in one UNet call) moves every step's direction
    as one backward pass per step, on that step's own draws, would: the same first Adam step."""
    sched = _ddim(clip_sample=False)
    traj, ts = _trajectories(tiny_unet, sched, n=6)
    n_edit, b = edit_steps(ts, 300), 3
    loss_fn = lambda p_edit, p: (p_edit - p + 0.3).square().flatten(1).mean(1)          # noqa: E731
    d = learn_delta_h(tiny_unet, sched, traj, ts, loss_fn, t_edit=300, num_inference_steps=6, per_step=True,
                      iterations=1, batch_size=b, lr=1e-3, generator=torch.Generator().manual_seed(0), progress=False)
    # the reference: the same start and draws from the same generator, one backward pass per step
    gen = torch.Generator().manual_seed(0)
    start = 0.05 * torch.randn((n_edit, 16, 4, 4), generator=gen, dtype=torch.float64).float()
    draws = [torch.randint(6, (b,), generator=gen) for _ in range(n_edit)]
    plain_sched = unclipped_copy(sched, 6)
    for k, idx in enumerate(draws):
        delta = start[k].clone().requires_grad_(True)
        x, t = traj[k, idx], ts[k]
        with torch.no_grad():
            p = predicted_x0(plain_sched, denoiser_output(tiny_unet, x, t), t, x)
        with shift_bottleneck(tiny_unet, delta):
            loss = loss_fn(predicted_x0(plain_sched, denoiser_output(tiny_unet, x, t), t, x), p).mean()
        loss.backward()
        expected = start[k] - 1e-3 * delta.grad / (delta.grad.abs() + 1e-8)          # Adam's first step
        assert torch.allclose(d.delta_h[k], expected, atol=1e-7), k


def test_directional_clip_loss():
    from dpmlatent.clip import make_clip
    from dpmlatent.clip import clip_embed_images, clip_embed_text

    model, tok = make_clip(0)
    model.eval()
    p = torch.rand(3, 1, 8, 8) * 2 - 1
    p_edit = p.flip(-1)
    loss = directional_clip_loss(model, tok, ["a handwritten three", "a handwritten two"],
                                 ["a bold handwritten three", "a bold handwritten two"], recon_weight=0.5)
    with torch.no_grad():
        txt = (clip_embed_text(model, tok, ["a bold handwritten three", "a bold handwritten two"])
               - clip_embed_text(model, tok, ["a handwritten three", "a handwritten two"])).mean(0)
        d = clip_embed_images(model, p_edit) - clip_embed_images(model, p)
        expected = 1 - torch.nn.functional.cosine_similarity(d, txt.expand_as(d), dim=-1) \
            + 0.5 * (p_edit - p).abs().flatten(1).mean(1)
        assert torch.allclose(loss(p_edit, p), expected, atol=1e-5)
    with pytest.raises(ValueError, match="must pair up"):
        directional_clip_loss(model, tok, ["a", "b"], ["c"])


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_step_weights_match_the_ddim_closed_form(eta):
    from dpmlatent.hspace import step_weights

    s = DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True)   # clipping must not bend the slope
    s.set_timesteps(20)
    like = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    for t in s.timesteps[:-1]:
        t = int(t)
        a, ap = s.alphas_cumprod[t].double(), s.alphas_cumprod[t - 50].double()
        sigma2 = eta ** 2 * (1 - ap) / (1 - a) * (1 - a / ap)
        w_p, w_d = step_weights(s, t, eta, like)
        torch.testing.assert_close(w_p, (-(ap * (1 - a) / a).sqrt()).expand_as(like), rtol=1e-5, atol=0)
        torch.testing.assert_close(w_d, (1 - ap - sigma2).sqrt().expand_as(like), rtol=1e-5, atol=1e-7)


def test_matched_asyrp_brackets_the_level_between_two_scales_of_every_direction(tiny_unet):
    """matched_asyrp reads the edits off at a mean SSIM between two neighbouring scales; its per-edit
    scores are edit_scores of direct asyrp_decode runs with each training seed's direction."""
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.edit_experiment import edit_scores, edit_task, matched_asyrp
    from dpmlatent.encoder import ddim_invert

    task = edit_task("weight", num_images=6)
    sched = _ddim(clip_sample=False)
    z = ddim_invert(tiny_unet, sched, task.images, num_inference_steps=6)
    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    h = bottleneck(tiny_unet, task.images[:1], z.timesteps[0])[0]
    directions = {s: 3.0 * torch.randn(h.shape, generator=torch.Generator().manual_seed(s)) for s in (0, 1)}

    def direct(scale, seed):
        with torch.no_grad():
            out = asyrp_decode(tiny_unet, sched, z, directions[seed], t_edit=300, eta=0.0, scale=scale)
        return edit_scores(task, out, digit_classifier=clf, domain_classifier=dom)

    ssim = {k: float(torch.stack([direct(k * 0.5, s)["ssim"] for s in (0, 1)]).mean()) for k in (2, 3)}
    assert ssim[2] > ssim[3]
    level = (ssim[2] + ssim[3]) / 2
    p = matched_asyrp(tiny_unet, sched, task, z, directions, level, t_edit=300, digit_classifier=clf,
                      domain_classifier=dom, scale_step=0.5, max_scale=4.0, start=1.0)
    assert p.steps == (2, 3) and p.weight == pytest.approx(0.5) and p.seeds == 2
    assert p.strength * 4.0 == pytest.approx(1.25)                 # the matched scale
    assert float(p.values("ssim").mean()) == pytest.approx(level, abs=1e-12)
    assert torch.equal(p.hi["ink"][1], direct(1.5, 1)["ink"])
    pixels = {s: torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (0, 1)}

    def direct_eps(scale, seed):                                   # a shift of the model's output, scored directly
        with torch.no_grad():
            out = asyrp_decode(tiny_unet, sched, z, pixels[seed], t_edit=300, eta=0.0, scale=scale, space="eps")
        return edit_scores(task, out, digit_classifier=clf, domain_classifier=dom)

    ssim_eps = {k: float(torch.stack([direct_eps(k * 0.5, s)["ssim"] for s in (0, 1)]).mean()) for k in (2, 3)}
    assert ssim_eps[2] > ssim_eps[3]
    e = matched_asyrp(tiny_unet, sched, task, z, pixels, (ssim_eps[2] + ssim_eps[3]) / 2, t_edit=300,
                      digit_classifier=clf, domain_classifier=dom, scale_step=0.5, max_scale=4.0, start=1.0,
                      space="eps", feature_network=clf)
    assert e.steps == (2, 3) and torch.equal(e.hi["ssim"][0], direct_eps(1.5, 0)["ssim"])
    assert e.hi["features"].shape[:2] == (6, 2)
    with pytest.raises(ValueError, match="whole multiple"):
        matched_asyrp(tiny_unet, sched, task, z, directions, level, t_edit=300, digit_classifier=clf,
                      domain_classifier=dom, scale_step=0.3, max_scale=4.0)
    with pytest.raises(ValueError, match="directions must be"):
        matched_asyrp(tiny_unet, sched, task, z, {}, level, t_edit=300, digit_classifier=clf, domain_classifier=dom)
    # one code per training seed: seed 1's edits are decoded from its own code
    z1 = ddim_invert(tiny_unet, sched, task.images.flip(0).contiguous(), num_inference_steps=6)
    q = matched_asyrp(tiny_unet, sched, task, {0: z, 1: z1}, directions, level, t_edit=300, digit_classifier=clf,
                      domain_classifier=dom, scale_step=0.5, max_scale=4.0, start=1.0)
    with torch.no_grad():
        out = asyrp_decode(tiny_unet, sched, z1, directions[1], t_edit=300, eta=0.0, scale=q.steps[1] * 0.5)
    assert torch.equal(q.hi["ink"][1], edit_scores(task, out, digit_classifier=clf, domain_classifier=dom)["ink"])
    assert torch.equal(q.hi["ink"][0], direct(q.steps[1] * 0.5, 0)["ink"])
    with pytest.raises(ValueError, match="one code per training seed"):
        matched_asyrp(tiny_unet, sched, task, {0: z}, directions, level, t_edit=300, digit_classifier=clf,
                      domain_classifier=dom)


def test_noised_bottleneck_is_the_bottleneck_of_the_noised_images(tiny_unet):
    from dpmlatent.hspace import noised_bottleneck

    sched = _ddim()
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    xt = sched.add_noise(x0, noise, torch.full((3,), 300))
    with torch.no_grad():
        assert torch.equal(noised_bottleneck(tiny_unet, sched, x0, 300, noise), bottleneck(tiny_unet, xt, torch.tensor(300)))


# --- directions without a text model ---------------------------------------------------------------

def test_pca_directions_are_the_principal_axes_of_h(tiny_unet):
    from dpmlatent.hspace import noised_bottleneck, pca_directions

    sched = _ddim()
    x0 = torch.rand(12, 1, 8, 8, dtype=torch.float64) * 2 - 1
    unet = tiny_unet.double()
    noise = torch.randn(12, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d = pca_directions(unet, sched, x0, 400, 3, noise=noise)
    assert d.shape == (3, 16, 4, 4) and d.dtype == torch.float64
    flat = d.reshape(3, -1)
    assert torch.allclose(flat @ flat.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    with torch.no_grad():
        h = noised_bottleneck(unet, sched, x0, 400, noise).reshape(12, -1)
    centred = h - h.mean(0)
    var = (centred @ flat.T).var(0)
    assert var[0] >= var[1] >= var[2]
    top = torch.linalg.eigvalsh(centred.T @ centred / 11).flip(0)[:3]          # the covariance's top eigenvalues
    assert torch.allclose(var, top, rtol=1e-9)
    assert (flat.gather(1, flat.abs().argmax(1, keepdim=True)) > 0).all()      # sign convention
    again = pca_directions(unet, sched, x0, 400, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, d)                                               # noise drawn from the generator
    with pytest.raises(ValueError, match="k must be"):
        pca_directions(unet, sched, x0, 400, 12, noise=noise)
    with pytest.raises(ValueError, match="t must be"):
        pca_directions(unet, sched, x0, 1000, 2, noise=noise)
    with pytest.raises(ValueError, match="images must be"):
        pca_directions(unet, sched, x0[:1], 400, 1)


@pytest.mark.parametrize("space", ["h", "x"])
def test_jacobian_directions_svd_and_power_iteration_agree(tiny_unet, space):
    from dpmlatent.hspace import jacobian_directions, principal_angles

    sched = _ddim()
    unet = tiny_unet.double()
    x_t = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    # singular values here: 3.09, 2.78, 2.32, ...: the top-2 subspace converges like (2.32 / 2.78)^(2n)
    exact = jacobian_directions(unet, sched, x_t, 500, 2, space=space)
    power = jacobian_directions(unet, sched, x_t[0], 500, 2, method="power", space=space, iterations=80,
                                generator=torch.Generator().manual_seed(3))
    assert exact.shape == power.shape == ((2, 16, 4, 4) if space == "h" else (2, 1, 8, 8))
    assert not exact.requires_grad and not power.requires_grad
    for d in (exact, power):
        flat = d.reshape(2, -1)
        assert torch.allclose(flat @ flat.T, torch.eye(2, dtype=torch.float64), atol=1e-9)
    assert principal_angles(exact, power).max() < 1e-4                         # the same subspace
    assert principal_angles(exact[:1], power[:1]).max() < 1e-4                 # and the same first direction
    assert torch.allclose(exact, power, atol=1e-4)                             # signs fixed the same way


def test_jacobian_directions_are_singular_vectors_of_dh_dx(tiny_unet):
    """The first x-direction moves h the most (finite differences), along the first h-direction."""
    from dpmlatent.hspace import bottleneck, jacobian_directions

    sched = _ddim()
    unet = tiny_unet.double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor(500)
    vx = jacobian_directions(unet, sched, x, 500, 2, space="x")
    uh = jacobian_directions(unet, sched, x, 500, 1, space="h")[0]

    def jv(v, eps=1e-6):
        with torch.no_grad():
            return (bottleneck(unet, x + eps * v, t) - bottleneck(unet, x - eps * v, t))[0] / (2 * eps)

    moves = [jv(v[None]) for v in vx]
    assert moves[0].norm() > moves[1].norm()
    for v in torch.randn(5, 1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5)):
        assert jv(v / v.norm()).norm() <= moves[0].norm() * (1 + 1e-6)
    cos = (moves[0] * uh).sum() / moves[0].norm()
    assert abs(float(cos)) > 1 - 1e-6                                          # J v1 = sigma1 u1
    with pytest.raises(ValueError, match="method"):
        jacobian_directions(unet, sched, x, 500, 2, method="lanczos")
    with pytest.raises(ValueError, match="space"):
        jacobian_directions(unet, sched, x, 500, 2, space="z")
    with pytest.raises(ValueError, match="x_t must be one image"):
        jacobian_directions(unet, sched, x.repeat(2, 1, 1, 1), 500, 2)
    with pytest.raises(ValueError, match="k must be"):
        jacobian_directions(unet, sched, x, 500, 65, space="x")


def test_principal_angles_and_mean_difference_direction():
    from dpmlatent.hspace import mean_difference_direction, principal_angles

    e = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(principal_angles(e[:2], e[:2]), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(principal_angles(e[:2], e[2:]), torch.full((2,), torch.pi / 2, dtype=torch.float64))
    a = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.6, 0.8, 0.0, 0.0]], dtype=torch.float64)
    assert principal_angles(a, b).item() == pytest.approx(float(torch.arccos(torch.tensor(0.6))))
    with pytest.raises(ValueError, match="one size"):
        principal_angles(e[:2], torch.eye(3))
    h_a, h_b = torch.randn(5, 16, 4, 4), torch.randn(7, 16, 4, 4)
    d = mean_difference_direction(h_a, h_b)
    assert d.shape == (16, 4, 4) and torch.allclose(d, h_a.mean(0) - h_b.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="h_a and h_b"):
        mean_difference_direction(h_a, h_b[:, :8])
    with pytest.raises(ValueError, match="h_a and h_b"):
        mean_difference_direction(h_a[:0], h_b)
