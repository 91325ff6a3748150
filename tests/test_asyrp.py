"""Asyrp as the official code runs it: f_t (DeltaBlock), training along the edited trajectory, the
official loss, t_edit / t_boost by editing strength, and boosting in asyrp_decode."""

import dataclasses
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dpmlatent.asyrp import (ConstantShift, DeltaBlock, EditingStrength, asyrp_loss, editing_strength, learn_shift,
                             pick_timestep)
from dpmlatent.hspace import (asymmetric_step, asyrp_decode, bottleneck, edit_steps, module_shift, predicted_x0,
                              shift_bottleneck, timestep_embedding)
from dpmlatent.latent import decode, denoiser_output, sample_latent


def _ddim(clip_sample=True):
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=clip_sample)


def _code(sched, n=3, steps=8, eta=0.0, seed=0):
    return sample_latent((n, 1, 8, 8), sched, steps, eta, generator=torch.Generator().manual_seed(seed))


def test_timestep_embedding_is_what_the_unet_feeds_its_blocks(tiny_unet):
    seen = []
    handle = tiny_unet.time_embedding.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            tiny_unet(torch.randn(2, 1, 8, 8), torch.tensor(321))
    finally:
        handle.remove()
    with torch.no_grad():
        temb = timestep_embedding(tiny_unet, torch.tensor(321), torch.zeros(1))
    assert temb.shape == (1, seen[0].shape[-1]) and torch.allclose(temb, seen[0][:1])


def test_delta_block_shapes_start_and_bad_input(tiny_unet):
    block = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
    assert block.norm.num_groups == 8 and block.conv1.in_channels == 16        # gcd(32, 16 // 2)
    h = bottleneck(tiny_unet, torch.randn(2, 1, 8, 8), torch.tensor(500))
    temb = timestep_embedding(tiny_unet, 500, h)
    dh = block(h, temb)
    assert dh.shape == h.shape and dh.abs().max() > 0                         # no zero init: a random start
    again = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(block.parameters(), again.parameters()))
    for p, fan_in in ((block.conv1.weight, 16), (block.temb_proj.weight, temb.shape[-1])):
        assert p.abs().max() <= 1 / math.sqrt(fan_in)                         # PyTorch's default bound
    # the shift depends on h and on t
    assert (block(h, timestep_embedding(tiny_unet, 100, h)) - dh).abs().max() > 1e-4
    assert (block(h.flip(0), temb) - dh.flip(0)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="groups=32 must divide channels=48"):
        DeltaBlock(48, 8)
    with pytest.raises(ValueError, match="leaves one channel per group"):
        DeltaBlock(32, 8)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        DeltaBlock(0, 8)
    with pytest.raises(ValueError, match=r"h must have shape \(B, 16, H, W\)"):
        block(torch.zeros(2, 8, 4, 4), temb)
    with pytest.raises(ValueError, match="shape must be"):
        ConstantShift((16, 4))
    with pytest.raises(TypeError, match="shift must be a torch.nn.Module"):
        module_shift(tiny_unet, torch.zeros(16, 4, 4), 500)


def test_shift_modules_in_asyrp_decode(tiny_unet):
    sched = _ddim()
    z = _code(sched)
    with torch.no_grad():
        plain = decode(tiny_unet, sched, z, eta=0.0)
        const = ConstantShift((16, 4, 4), init_std=0.5, generator=torch.Generator().manual_seed(1))
        by_module = asyrp_decode(tiny_unet, sched, z, const, t_edit=400, eta=0.0, scale=1.5)
        by_tensor = asyrp_decode(tiny_unet, sched, z, const.delta[0].detach(), t_edit=400, eta=0.0, scale=1.5)
        assert torch.allclose(by_module, by_tensor, atol=1e-6)
        assert (by_module - plain).abs().max() > 1e-3
        # a block whose last layer is zero shifts nothing: exactly the plain decoder
        block = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
        block.conv2.weight.zero_(); block.conv2.bias.zero_()
        assert torch.allclose(asyrp_decode(tiny_unet, sched, z, block, t_edit=400, eta=0.0), plain, atol=1e-6)
        # the block is evaluated at each edited step's own h and t
        block = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
        x, expected = z.x_start, None
        n_edit = edit_steps(z.timesteps, 400)
        for k, t in enumerate(z.timesteps):
            dh = module_shift(tiny_unet, block, t) if k < n_edit else None
            x = asymmetric_step(tiny_unet, sched, x, t, dh, torch.zeros_like(x), eta=0.0)
        assert torch.allclose(asyrp_decode(tiny_unet, sched, z, block, t_edit=400, eta=0.0), x, atol=1e-6)
        assert torch.equal(asyrp_decode(tiny_unet, sched, z, block, t_edit=400, eta=0.0, scale=0.0), plain)


def test_quality_boosting_in_asyrp_decode(tiny_unet):
    sched = _ddim()
    z = _code(sched)
    with torch.no_grad():
        plain = asyrp_decode(tiny_unet, sched, z, torch.zeros(16, 4, 4), t_edit=400, eta=0.0)
        none = asyrp_decode(tiny_unet, sched, z, torch.zeros(16, 4, 4), t_edit=400, eta=0.0, t_boost=0)
        assert torch.equal(none, plain)                                      # no step is below t = 0
        run = lambda seed: asyrp_decode(tiny_unet, sched, z, torch.zeros(16, 4, 4), t_edit=400, eta=0.0, t_boost=300,
                                        generator=torch.Generator().manual_seed(seed))
        a, b, c = run(0), run(0), run(1)
        assert torch.equal(a, b) and (a - c).abs().max() > 1e-3 and (a - plain).abs().max() > 1e-3
        # the boosted steps are eta = 1 steps from t < 300 with noise drawn from the generator, the others plain
        g, x = torch.Generator().manual_seed(0), z.x_start
        for t in z.timesteps:
            if int(t) < 300:
                noise = torch.randn(x.shape, generator=g, dtype=torch.float64).float()
                x = sched.step(denoiser_output(tiny_unet, x, t), t, x, eta=1.0, variance_noise=noise).prev_sample
            else:
                x = sched.step(denoiser_output(tiny_unet, x, t), t, x, eta=0.0).prev_sample
        assert torch.allclose(a, x, atol=1e-6)
    with pytest.raises(ValueError, match="t_boost must be a non-negative integer"):
        asyrp_decode(tiny_unet, sched, z, torch.zeros(16, 4, 4), t_edit=400, eta=0.0, t_boost=-1)
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    zd = _code(ddpm, eta=1.0)
    with pytest.raises(ValueError, match="t_boost needs a DDIMScheduler"):
        asyrp_decode(tiny_unet, ddpm, zd, torch.zeros(16, 4, 4), t_edit=400, eta=1.0, t_boost=300)


def _brighter(p_edit, p, x0):                                       # ask for a brighter prediction than P
    return -(p_edit - p).flatten(1).mean(1) + 0.1 * (p_edit - p).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("kind", ["block", "constant"])
def test_learn_shift_lowers_its_loss_and_leaves_the_unet_frozen(tiny_unet, kind):
    sched = _ddim()
    z = _code(sched, n=4, steps=6)
    with torch.no_grad():
        images = decode(tiny_unet, sched, z, eta=0.0)
    shift = (DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0)) if kind == "block"
             else ConstantShift((16, 4, 4), generator=torch.Generator().manual_seed(0)))
    tiny_unet.requires_grad_(True)
    before = {k: v.clone() for k, v in tiny_unet.state_dict().items()}
    d = learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, epochs=4, batch_size=2, lr=5.0,
                    generator=torch.Generator().manual_seed(0), progress=False)
    n_edit = edit_steps(z.timesteps, 300)
    assert len(d.losses) == 4 * 2 * n_edit                          # one optimiser step per batch and edited step
    per_epoch = torch.tensor(d.losses).view(4, -1).mean(1)
    assert per_epoch[-1] < per_epoch[0] - 0.02
    assert d.delta_h is shift and d.t_edit == 300 and d.num_inference_steps == 6
    assert not any(p.requires_grad for p in shift.parameters())
    assert all(torch.equal(v, before[k]) for k, v in tiny_unet.state_dict().items())
    assert all(p.requires_grad for p in tiny_unet.parameters())    # the caller's flags are restored
    trained = [p.clone() for p in shift.parameters()]             # a second run goes on training the same module
    learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, epochs=1, batch_size=2, lr=5.0,
                generator=torch.Generator().manual_seed(1), progress=False)
    assert any((p - q).abs().max() > 0 for p, q in zip(shift.parameters(), trained))
    with pytest.raises(ValueError, match="images must have the shape of z.x_start"):
        learn_shift(tiny_unet, sched, z, images[:2], shift, _brighter, t_edit=300)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, epochs=0)
    with pytest.raises(ValueError, match="lr_gamma must be in"):
        learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, lr_gamma=0.0)
    with pytest.raises(TypeError, match="shift must be a torch.nn.Module"):
        learn_shift(tiny_unet, sched, z, images, torch.zeros(16, 4, 4), _brighter, t_edit=300)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, max_steps=0)


def test_learn_shift_max_steps_stops_a_run_where_the_full_run_was(tiny_unet):
    sched = _ddim()
    z = _code(sched, n=4, steps=6)
    with torch.no_grad():
        images = decode(tiny_unet, sched, z, eta=0.0)
    runs = []
    for max_steps in (None, 7):
        shift = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
        runs.append(learn_shift(tiny_unet, sched, z, images, shift, _brighter, t_edit=300, epochs=2, batch_size=2,
                                lr=5.0, generator=torch.Generator().manual_seed(0), max_steps=max_steps,
                                progress=False).losses)
    assert len(runs[1]) == 7 and runs[1] == runs[0][:7]               # the same steps, cut short (across a batch)


def test_learn_shift_walks_the_edited_trajectory(tiny_unet):
    """With a learning rate too small to move the block, the predictions the loss sees are those of
    asymmetric steps with the block from x_T (the edited trajectory, no clipping), compared with the
    original trajectory's P_t; x0 is the batch's real images."""
    sched = _ddim(clip_sample=False)
    z = _code(sched, n=2, steps=6)
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    block = DeltaBlock.for_unet(tiny_unet, generator=torch.Generator().manual_seed(0))
    seen = []

    def spy(p_edit, p, x0):
        seen.append((p_edit.detach().clone(), p.clone(), x0.clone()))
        return p_edit.pow(2).flatten(1).mean(1)
    learn_shift(tiny_unet, sched, z, images, block, spy, t_edit=300, epochs=1, batch_size=2, lr=1e-30,
                generator=torch.Generator().manual_seed(0), progress=False)
    order = torch.randperm(2, generator=torch.Generator().manual_seed(0))
    n_edit = edit_steps(z.timesteps, 300)
    assert len(seen) == n_edit and n_edit > 2
    with torch.no_grad():
        x, x_orig = z.x_start[order], z.x_start[order]
        for k, t in enumerate(z.timesteps[:n_edit]):
            f = module_shift(tiny_unet, block, t)
            with shift_bottleneck(tiny_unet, f):
                p_edit = predicted_x0(sched, denoiser_output(tiny_unet, x, t), t, x)
            p = predicted_x0(sched, denoiser_output(tiny_unet, x_orig, t), t, x_orig)
            assert torch.allclose(seen[k][0], p_edit, atol=1e-5) and torch.allclose(seen[k][1], p, atol=1e-5)
            assert torch.equal(seen[k][2], images[order])
            x = asymmetric_step(tiny_unet, sched, x, t, f, torch.zeros_like(x), eta=0.0)
            x_orig = sched.step(denoiser_output(tiny_unet, x_orig, t), t, x_orig, eta=0.0).prev_sample
        assert (seen[-1][0] - seen[-1][1]).abs().max() > 1e-3          # the two trajectories have parted


def test_asyrp_loss_is_the_official_one():
    from dpmlatent.clip import clip_embed_images, clip_embed_text, make_clip

    model, tok = make_clip(0)
    model.eval()
    src, tgt = ["a handwritten three", "a handwritten two"], ["a bold handwritten three", "a bold handwritten two"]
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    p, p_edit = x0 * 0.9, x0.flip(-1)
    loss = asyrp_loss(model, tok, src, tgt)
    with torch.no_grad():
        t_src, t_tgt = clip_embed_text(model, tok, src), clip_embed_text(model, tok, tgt)
        d_t = (t_tgt - t_src).mean(0)
        d_i = clip_embed_images(model, p_edit) - clip_embed_images(model, x0)
        l_dir = 1 - torch.nn.functional.cosine_similarity(d_i, d_t.expand_as(d_i), dim=-1)
        text_cos = torch.nn.functional.cosine_similarity(t_src, t_tgt, dim=-1).mean()
        expected = -torch.log((2 - l_dir) / 2) + 3.0 * text_cos * (p_edit - p).abs().flatten(1).mean(1)
        assert torch.allclose(loss(p_edit, p, x0), expected, atol=1e-5)
        assert abs(loss.text_cosine - float(text_cos)) < 1e-6
        only_l1 = asyrp_loss(model, tok, src, tgt, clip_weight=0.0, l1_weight=1.0)
        assert torch.allclose(only_l1(p_edit, p, x0), text_cos * (p_edit - p).abs().flatten(1).mean(1), atol=1e-6)
    with pytest.raises(ValueError, match="must pair up"):
        asyrp_loss(model, tok, src, tgt[:1])
    with pytest.raises(ValueError, match="l1_weight must be >= 0"):
        asyrp_loss(model, tok, src, tgt, l1_weight=-1.0)


def test_pick_timestep_and_editing_strength(tiny_unet):
    ts = torch.tensor([900, 700, 500, 300, 100])
    values = torch.tensor([0.9, 0.6, 0.4, 0.2, 0.1])
    assert pick_timestep(ts, values, 0.3) == 500 and pick_timestep(ts, values, 0.1) == 100
    assert pick_timestep(ts, values, float(values[0])) == 900
    with pytest.raises(ValueError, match="no timestep reaches it"):
        pick_timestep(ts, values, 1.0)
    with pytest.raises(ValueError, match="two \\(S,\\) tensors"):
        pick_timestep(ts, values[:3], 0.3)
    sched = _ddim()
    z = _code(sched, n=3, steps=6)
    with torch.no_grad():
        images = decode(tiny_unet, sched, z, eta=0.0)
    l2 = lambda a, b: (a - b).flatten(1).norm(dim=1)
    s = editing_strength(tiny_unet, sched, z, images, l2)
    assert isinstance(s, EditingStrength) and s.clean.shape == s.noisy.shape == (6,)
    assert torch.allclose(s.noisy[0], l2(images, z.x_start).mean())          # x_T against the images
    with torch.no_grad():
        t = z.timesteps[0]
        p = predicted_x0(sched, denoiser_output(tiny_unet, z.x_start, t), t, z.x_start)
    assert torch.allclose(s.clean[0], l2(images, p).mean())
    for thr in (float(s.clean[2]), float(s.clean.max())):
        assert s.t_edit(thr) == int(z.timesteps[s.clean >= thr].min())
    assert s.t_boost(float(s.noisy[1])) == int(z.timesteps[s.noisy >= float(s.noisy[1])].min())
    pairs = [float(l2(images[i:i + 1], images[j:j + 1])) for i in range(3) for j in range(3) if i != j]
    assert math.isclose(s.unrelated, sum(pairs) / len(pairs), rel_tol=1e-6)   # every ordered pair i != j
    with pytest.raises(ValueError, match="images must have the shape"):
        editing_strength(tiny_unet, sched, z, images[:1], l2)
    with pytest.raises(ValueError, match="at least 2 images"):
        editing_strength(tiny_unet, sched, z[:1], images[:1], l2)


@pytest.mark.slow
def test_stored_shifts_train_save_load_and_verify(tmp_path):
    """The stored-shift machinery of chapter 7b at a tiny size, on the zoo's models: t_edit chosen by the
    editing strength, both kinds trained, stored, loaded into modules that give the same shift, and
    verified by re-running their first steps; a change of the settings is caught."""
    from dpmlatent.asyrp import (ShiftSettings, load_shifts, save_shifts, shift_inputs, train_shifts,
                                 verify_shifts)

    settings = ShiftSettings(seeds=(0, 1), num_images=3, steps=10, epochs=1)
    inputs = shift_inputs(settings)
    es = inputs.strength
    assert inputs.t_edit == pick_timestep(es.timesteps, es.clean, 0.33 * inputs.loss.text_cosine * es.unrelated)
    run = train_shifts(settings, inputs=inputs, progress=False)
    n_edit = edit_steps(inputs.z.timesteps, inputs.t_edit)
    assert set(run.shifts) == {(k, s) for k in ("constant", "delta") for s in (0, 1)}
    assert all(len(v) == 3 * n_edit for v in run.losses.values())
    assert not torch.equal(run.shifts["delta", 0].conv1.weight, run.shifts["delta", 1].conv1.weight)
    save_shifts(run, tmp_path)
    back = load_shifts(inputs.unet, tmp_path)
    assert back.t_edit == run.t_edit and back.settings == settings
    h = torch.randn(2, 64, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        temb = timestep_embedding(inputs.unet, 500, h)
    for key, module in run.shifts.items():
        assert torch.equal(back.shifts[key](h, temb), module(h, temb)), key
        assert torch.equal(back.losses[key], run.losses[key])
    check = verify_shifts(back, inputs, steps=5)
    assert set(check) == set(run.shifts) and max(check.values()) < 1e-10
    changed = dataclasses.replace(settings, lr=0.25)
    moved = verify_shifts(dataclasses.replace(back, settings=changed), inputs, steps=5)
    assert max(moved.values()) > 1e-6                         # a change of the settings shows at once
    (tmp_path / "shifts.safetensors").write_bytes(b"x" + (tmp_path / "shifts.safetensors").read_bytes()[1:])
    with pytest.raises(ValueError, match="sha256"):
        load_shifts(inputs.unet, tmp_path)
    with pytest.raises(FileNotFoundError, match="--train-shifts"):
        load_shifts(inputs.unet, tmp_path / "none")
    with pytest.raises(ValueError, match="kinds must be"):
        ShiftSettings(kinds=("linear",))
    with pytest.raises(ValueError, match="num_images must be a positive integer"):
        ShiftSettings(num_images=0)
