"""Text-guided editing: exactness, parity with diffusers' CycleDiffusionPipeline, input checks."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from dpmlatent.edit import cycle_edit, cycle_edit_pipeline, edit_latents, unet_evaluations_per_step
from dpmlatent.text_to_image import make_pipeline


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A tiny Stable Diffusion pipeline, saved and reloaded with from_pretrained (offline)."""
    from dpmlatent.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def photo():
    g = np.random.default_rng(0)
    return g.random((1, 32, 32, 3)).astype(np.float32)   # numpy images in [0, 1], (B, H, W, C)


@pytest.mark.parametrize("source_guidance_scale", [1.0, 2.0])
def test_parity_with_diffusers_cycle_diffusion_pipeline(tiny_sd, photo, source_guidance_scale):
    from diffusers import CycleDiffusionPipeline

    components = {k: v for k, v in tiny_sd.components.items() if k != "image_encoder"}
    peer = CycleDiffusionPipeline(**components)
    peer.set_progress_bar_config(disable=True)
    kw = dict(strength=0.8, num_inference_steps=10, guidance_scale=3.0, source_guidance_scale=source_guidance_scale,
              eta=0.1, output_type="np")
    theirs = peer(prompt="a dog", source_prompt="a cat", image=torch.from_numpy(photo).permute(0, 3, 1, 2),
                  generator=torch.Generator().manual_seed(0), **kw).images
    ours = cycle_edit_pipeline(tiny_sd, photo, "a cat", "a dog", generator=torch.Generator().manual_seed(0), **kw)
    assert ours.shape == theirs.shape == (1, 32, 32, 3)
    assert np.abs(ours - theirs).max() <= 1e-4
    # and the images differ from the input: an edit happened
    assert np.abs(ours - photo).max() > 1e-2


@pytest.mark.parametrize("loaded", [False, True], ids=["built", "from_pretrained"])
def test_edit_friendly_parity_with_diffusers_ledits_pp_inversion(tiny_sd, photo, loaded):
    """Our edit-friendly encoder against the inversion of diffusers' LEdits++ (dpmlatent.ledits) on the
    same latents with the same generator: the same x_T (bit for bit) and noises (to float32 rounding:
    LEdits++'s stored noises differ from its own formula re-run on the same inputs by about 1e-7
    relative; bit for bit for this one image on the pipeline built in memory); both codes decode back to
    the latents; and LEdits++'s own reconstruction (the pipeline without an editing prompt) is our decode."""
    from dpmlatent.encoder import edit_friendly_encode
    from dpmlatent.latent import decode
    from dpmlatent.ledits import ledits_code, ledits_pipeline
    from dpmlatent.tiny import tiny_stable_diffusion

    pipe = tiny_sd if loaded else tiny_stable_diffusion()
    peer = ledits_pipeline(pipe)
    assert peer.unet is not pipe.unet
    image = torch.from_numpy(photo).permute(0, 3, 1, 2)
    theirs, x0, empty, scheduler = ledits_code(peer, image, num_inference_steps=10,
                                               generator=torch.Generator().manual_seed(0))
    assert scheduler.config.timestep_spacing == "leading" and torch.equal(theirs.timesteps, scheduler.timesteps)
    ours = edit_friendly_encode(peer.unet, scheduler, x0, eta=1.0, num_inference_steps=10, cond=empty,
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.x_start, theirs.x_start)
    if loaded:
        assert (ours.noises - theirs.noises).abs().max() <= 1e-6 * theirs.noises.abs().max()
    else:
        assert torch.equal(ours.noises, theirs.noises)
    with torch.no_grad():
        latents = decode(peer.unet, scheduler, ours, eta=1.0, cond=empty)
        assert (latents - x0).abs().max() <= 1e-5
        assert (decode(peer.unet, scheduler, theirs, eta=1.0, cond=empty) - x0).abs().max() <= 1e-5
        pixels = peer.vae.decode(latents / peer.vae.config.scaling_factor).sample
    reconstruction = peer(editing_prompt=None, output_type="pt").images         # from its stored code
    assert (pixels / 2 + 0.5).clamp(0, 1).sub(reconstruction).abs().max() <= 1e-5
    with pytest.raises(TypeError, match="DDIMScheduler"):
        ledits_pipeline(object())
    with pytest.raises(ValueError, match="num_inference_steps"):
        ledits_code(peer, image, num_inference_steps=0)


def test_edit_friendly_edits_share_the_encoder_and_reconstruct_with_one_prompt():
    from dpmlatent.encoder import edit_friendly_encode
    from dpmlatent.latent import decode
    from dpmlatent.text import encode_prompts

    pipe = make_pipeline(0)
    unet, te = pipe.unet.double(), pipe.text_encoder.double()
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    kw = dict(strength=0.7, num_inference_steps=10, eta=1.0, method="edit-friendly")
    same = cycle_edit(unet, te, pipe.tokenizer, pipe.scheduler, x0, "a handwritten three", "a handwritten three",
                      guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kw)
    assert (same - x0).abs().max() <= 1e-8
    edit = cycle_edit(unet, te, pipe.tokenizer, pipe.scheduler, x0, "a handwritten three", "a bold handwritten three",
                      guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kw)
    # the edit is the encoder's code decoded under the target prompt
    states = encode_prompts(te, pipe.tokenizer, ["a handwritten three"] * 2 + ["a bold handwritten three"] * 2 + [""] * 2)
    src, tgt = states[:2].double(), states[2:4].double()                     # as cycle_edit encodes them
    z = edit_friendly_encode(unet, pipe.scheduler, x0, eta=1.0, num_inference_steps=10, strength=0.7, cond=src,
                             generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (decode(unet, pipe.scheduler, z, eta=1.0, cond=tgt).clamp(-1, 1) - edit).abs().max() <= 1e-8   # cycle_edit clamps
    assert (edit - x0).abs().max() > 1e-3
    with pytest.raises(ValueError, match="eta=0 is deterministic DDIM: edit-friendly"):
        cycle_edit(unet, te, pipe.tokenizer, pipe.scheduler, x0, "a", "b", method="edit-friendly", eta=0.0)


def test_pipeline_output_types_and_input_kinds(tiny_sd, photo):
    from PIL import Image

    kw = dict(strength=0.5, num_inference_steps=4, guidance_scale=2.0)
    pil = Image.fromarray((photo[0] * 255).round().astype(np.uint8))
    out_pil = cycle_edit_pipeline(tiny_sd, pil, "a cat", "a dog", generator=torch.Generator().manual_seed(0), **kw)
    assert isinstance(out_pil, list) and out_pil[0].size == (32, 32)
    out_pt = cycle_edit_pipeline(tiny_sd, torch.from_numpy(photo).permute(0, 3, 1, 2), "a cat", "a dog",
                                 generator=torch.Generator().manual_seed(0), output_type="pt", **kw)
    assert out_pt.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="output_type"):
        cycle_edit_pipeline(tiny_sd, photo, "a cat", "a dog", output_type="latent")


def test_identical_prompts_reconstruct_exactly():
    pipe = make_pipeline(0)
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    unet, te = pipe.unet.double(), pipe.text_encoder.double()
    out = cycle_edit(unet, te, pipe.tokenizer, pipe.scheduler, x0, "a handwritten three", "a handwritten three",
                     strength=0.7, num_inference_steps=10, guidance_scale=3.0, source_guidance_scale=3.0,
                     generator=torch.Generator().manual_seed(0))
    assert (out - x0).abs().max() <= 1e-8


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_round_trip(prediction_type):
    pipe = make_pipeline(0)
    sched = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type,
                                      set_alpha_to_one=False, steps_offset=1)
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64) * 2 - 1
    out = cycle_edit(pipe.unet.double(), pipe.text_encoder.double(), pipe.tokenizer, sched, x0, "a bold typeset one",
                     "a bold typeset one", strength=1.0, num_inference_steps=8, guidance_scale=1.0,
                     generator=torch.Generator().manual_seed(1))
    assert (out - x0).abs().max() <= 1e-8


def test_zero_variance_last_step_is_finite_and_exact():
    pipe = make_pipeline(0)
    sched = DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True, steps_offset=0)
    x0 = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 2 - 1
    args = (pipe.unet.double(), pipe.text_encoder.double(), pipe.tokenizer, sched, x0)
    same = cycle_edit(*args, "a thin handwritten two", "a thin handwritten two", num_inference_steps=6,
                      guidance_scale=1.0, generator=torch.Generator().manual_seed(0))
    assert (same - x0).abs().max() <= 1e-6
    edit = cycle_edit(*args, "a thin handwritten two", "a bold typeset two", num_inference_steps=6,
                      guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(edit).all()


def test_baselines_and_evaluation_counts():
    pipe = make_pipeline(0)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    args = (pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, x0, "a handwritten one", "a handwritten seven")
    for method in ("sdedit", "ddim-inversion"):
        out = cycle_edit(*args, method=method, eta=1.0 if method == "sdedit" else 0.0, num_inference_steps=5,
                         generator=torch.Generator().manual_seed(0))
        assert out.shape == x0.shape and torch.isfinite(out).all()
    assert unet_evaluations_per_step(7.5, 1.0) == 3 and unet_evaluations_per_step(7.5, 2.0) == 4
    assert unet_evaluations_per_step(1.0, 1.0) == 2


def test_input_validation():
    pipe = make_pipeline(0)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    args = (pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler)
    with pytest.raises(ValueError, match="eta=0 is deterministic"):
        cycle_edit(*args, x0, "a", "b", eta=0.0)
    for strength in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
            cycle_edit(*args, x0, "a", "b", strength=strength)
    with pytest.raises(ValueError, match=r"image must take values in \[-1, 1\]"):
        cycle_edit(*args, x0 * 3, "a", "b")
    with pytest.raises(ValueError, match=r"image must be a \(B, C, H, W\) tensor"):
        cycle_edit(*args, x0[0], "a", "b")
    with pytest.raises(ValueError, match=r"x0 must be a \(B, 1, H, W\) tensor"):
        edit_latents(pipe.unet, pipe.scheduler, torch.zeros(2, 3, 8, 8), source_cond=None, cond=None, uncond=None,
                     guidance_scale=1.0)
    with pytest.raises(ValueError, match="prompt has 3 prompts for 2 images"):
        cycle_edit(*args, x0, "a", ["b", "c", "d"])
    with pytest.raises(ValueError, match="source_prompt has 0 prompts for 2 images"):
        cycle_edit(*args, x0, [], "b")
    with pytest.raises(ValueError, match="method must be one of"):
        cycle_edit(*args, x0, "a", "b", method="p2p")


def test_edit_tasks_and_sweep_on_a_random_pipeline(tmp_path):
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.edit_experiment import DIGIT_PAIRS, edit_sweep, edit_task, format_edit_table

    digit = edit_task("digit", num_images=6)
    assert digit.images.shape == (6, 1, 8, 8)
    assert digit.target_labels.tolist() == [DIGIT_PAIRS[int(y)] for y in digit.labels]
    assert all(s.split()[-1] != t.split()[-1] or DIGIT_PAIRS[int(y)] == int(y)
               for s, t, y in zip(digit.source_prompts, digit.prompts, digit.labels))
    weight = edit_task("weight", num_images=4)
    assert all(s.startswith("a thin handwritten") and t.startswith("a bold handwritten")
               for s, t in zip(weight.source_prompts, weight.prompts))
    domain = edit_task("domain", num_images=4)
    assert domain.target_domain == 1 and all("typeset" in t for t in domain.prompts)
    with pytest.raises(ValueError, match="kind must be one of"):
        edit_task("colour")
    with pytest.raises(ValueError, match="num_images must be an integer"):
        edit_task("weight", num_images=10_000)

    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    rows, images = edit_sweep(make_pipeline(0), weight, digit_classifier=clf, domain_classifier=dom,
                              strengths=(0.6,), guidance_scales=(1.0, 2.0), num_inference_steps=4, progress=False)
    assert [(r.method, r.guidance_scale) for r in rows] == [(m, g) for m in ("cyclediffusion", "sdedit",
                                                                               "ddim-inversion") for g in (1.0, 2.0)]
    for r in rows:
        assert 0 <= r.success <= r.target_digit <= 1 and r.ink_ratio > 0 and -1 <= r.ssim <= 1
    assert images[("sdedit", 0.6, 2.0)].shape == (4, 1, 8, 8)
    assert str(format_edit_table(rows)).count("\n") == len(rows)
    variant, imgs = edit_sweep(make_pipeline(0), weight, digit_classifier=clf, domain_classifier=dom,
                               methods=("cyclediffusion",), strengths=(0.6,), guidance_scales=(1.0,), eta=1.0,
                               num_inference_steps=4, label="cyclediffusion eta=1", progress=False)
    assert [r.method for r in variant] == ["cyclediffusion eta=1"] and ("cyclediffusion eta=1", 0.6, 1.0) in imgs
    from dpmlatent.run_store import RunStore   # through a store: the same rows recorded and read back
    kw = dict(digit_classifier=clf, domain_classifier=dom, strengths=(0.6,), guidance_scales=(1.0, 2.0),
              num_inference_steps=4, progress=False)
    rec = RunStore.open(tmp_path / "runs")
    rows_rec = edit_sweep(make_pipeline(0), weight, store=rec, **kw)[0]
    assert [r.ssim for r in rows_rec] == pytest.approx([r.ssim for r in rows], abs=1e-3)   # images on the grid
    rec.save(rebuild="test")
    read = RunStore.open(tmp_path / "runs", check=3)
    assert edit_sweep(make_pipeline(0), weight, store=read, **kw)[0] == rows_rec and read.summary().checked == 3
    with pytest.raises(KeyError, match="not in the store"):        # other inputs: other runs
        edit_sweep(make_pipeline(0), domain, store=read, **kw)
    with pytest.raises(TypeError, match="store must be a RunStore"):
        edit_sweep(make_pipeline(0), weight, store="runs", **kw)
    with pytest.raises(ValueError, match="single-method"):
        edit_sweep(make_pipeline(0), weight, digit_classifier=clf, domain_classifier=dom, label="x",
                   num_inference_steps=4, progress=False)
    assert all(math.isnan(r.clip_score) and math.isnan(r.clip_direction) for r in rows)
    assert "CLIP" not in str(format_edit_table(rows))


def test_clip_scores_of_edits_and_selection_by_clip():
    from dpmlatent import metrics
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.clip import make_clip
    from dpmlatent.edit_experiment import evaluate_edit, edit_task, format_edit_table, select_by_clip
    from dpmlatent.clip import clip_embed_images, clip_embed_text

    model, tokenizer = make_clip(0)
    model.eval()
    task = edit_task("digit", num_images=5)
    x = task.images
    edited = torch.flip(x, dims=(-1,))
    # the CLIP score is the cosine of the two embeddings, per image and prompt
    score = metrics.clip_score(model, tokenizer, edited, task.prompts)
    img, txt = clip_embed_images(model, edited), clip_embed_text(model, tokenizer, task.prompts)
    assert score.shape == (5,) and torch.allclose(score, (img * txt).sum(-1), atol=1e-6)
    assert torch.allclose(metrics.clip_score(model, tokenizer, edited, task.prompts[0]),
                          (img * txt[:1]).sum(-1), atol=1e-6)
    # directional: cosine of the image step and the caption step; an unchanged image scores 0
    d = metrics.clip_direction(model, tokenizer, edited, x, task.prompts, task.source_prompts)
    step_img = img - clip_embed_images(model, x)
    step_txt = txt - clip_embed_text(model, tokenizer, task.source_prompts)
    assert torch.allclose(d, torch.nn.functional.cosine_similarity(step_img, step_txt, dim=-1), atol=1e-5)
    assert metrics.clip_direction(model, tokenizer, x, x, task.prompts, task.source_prompts).abs().max() < 1e-6
    # a reconstruction off by rounding is unchanged: exactly 0, not the cosine of a rounding error
    nudged = x + 1e-6 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    nudged[0] = edited[0]                                              # one real edit among them
    d_nudged = metrics.clip_direction(model, tokenizer, nudged, x, task.prompts, task.source_prompts)
    assert torch.equal(d_nudged[1:], torch.zeros(4)) and d_nudged[0] == pytest.approx(d[0].item(), abs=1e-5)
    assert metrics.clip_direction(model, tokenizer, nudged, x, task.prompts, task.source_prompts,
                                  unchanged_atol=0.0)[1:].abs().max() > 0      # the cosine of the noise
    with pytest.raises(ValueError, match="unchanged_atol must be a finite number >= 0"):
        metrics.clip_direction(model, tokenizer, edited, x, task.prompts, task.source_prompts, unchanged_atol=-1.0)
    # a float64 CLIP reads float32 images and gives the same scores to float32 precision
    score64 = metrics.clip_score(copy.deepcopy(model).double(), tokenizer, edited, task.prompts)
    assert score64.dtype == torch.float64 and torch.allclose(score64.float(), score, atol=1e-5)
    with pytest.raises(ValueError, match="prompts must be one string or a list of 5"):
        metrics.clip_score(model, tokenizer, x, ["a", "b"])
    with pytest.raises(ValueError, match="source_prompts must be one string or a list of 5"):
        metrics.clip_direction(model, tokenizer, edited, x, task.prompts, ["a"])

    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    row = evaluate_edit(task, edited, method="flip", strength=1.0, guidance_scale=1.0, digit_classifier=clf,
                        domain_classifier=dom, clip=(model, tokenizer))
    assert row.clip_score == pytest.approx(score.mean().item(), abs=1e-6)
    assert row.clip_direction == pytest.approx(d.mean().item(), abs=1e-6)
    assert " CLIP  dCLIP" in str(format_edit_table([row]))
    assert row.num_images == 5 and f" {row.success:.1f} " in str(format_edit_table([row]))   # 5 edits: 1 decimal
    with pytest.raises(ValueError, match="success: the row does not record how many"):
        format_edit_table([dataclasses.replace(row, num_images=None)])
    # the row's shares as counts of its 5 edits, with their Wilson interval; the ink ratio from the same inks
    from dpmlatent.edit_experiment import EditRow
    from dpmlatent.evidence import wilson_interval
    for key in EditRow.SHARES:
        assert row.count(key) / 5 == getattr(row, key) and row.share_interval(key) == wilson_interval(row.count(key), 5)
    assert row.ink_ratio == pytest.approx(float(metrics.ink(edited).mean() / metrics.ink(x).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="score must be one of"):
        row.count("psnr")
    with pytest.raises(ValueError, match="no num_images"):
        dataclasses.replace(row, num_images=None).count("success")
    # a float32 classifier reads float64 edits (metrics.classify casts to the classifier's dtype)
    row64 = evaluate_edit(task, edited.double(), method="flip", strength=1.0, guidance_scale=1.0,
                          digit_classifier=clf, domain_classifier=dom)
    assert row64.target_digit == row.target_digit and row64.psnr == pytest.approx(row.psnr, rel=1e-5)
    # an exact reconstruction prints its PSNR as a bound, not as the digits of rounding noise
    exact = evaluate_edit(task, x + 1e-7, method="reconstruction", strength=0.0, guidance_scale=1.0,
                          digit_classifier=clf, domain_classifier=dom)
    assert exact.psnr > 100 and " >100 " in str(format_edit_table([exact])) and " >100 " not in str(format_edit_table([row]))
    long = evaluate_edit(task, edited, method="a method name of 27 letters", strength=1.0, guidance_scale=1.0,
                         digit_classifier=clf, domain_classifier=dom)
    head, first, second = str(format_edit_table([row, long])).splitlines()
    assert head.index("strength") == first.index("1.00") - 4 == second.index("1.00") - 4   # columns line up
    with pytest.raises(TypeError, match="clip must be an"):
        evaluate_edit(task, edited, method="flip", strength=1.0, guidance_scale=1.0, digit_classifier=clf,
                      domain_classifier=dom, clip=model)

    # best of three candidates per input by the CLIP score
    candidates = [x, edited, -x]
    selected, index = select_by_clip(task, candidates, clip=(model, tokenizer))
    scores = torch.stack([metrics.clip_score(model, tokenizer, c, task.prompts) for c in candidates])
    assert torch.equal(index, scores.argmax(0))
    for n in range(5):
        assert torch.equal(selected[n], candidates[int(index[n])][n])
    with pytest.raises(ValueError, match="non-empty list"):
        select_by_clip(task, [], clip=(model, tokenizer))
    with pytest.raises(ValueError, match="inputs' shape"):
        select_by_clip(task, [x[:2]], clip=(model, tokenizer))


def test_best_success_over_settings():
    from dpmlatent.edit_experiment import EditRow, best_success

    def row(method, s, g, success, ssim):
        return EditRow("digit", method, s, g, success, success, 1.0, 1.0, 12.0, ssim)

    rows = [row("a", 0.3, 1.0, 0.1, 0.9), row("a", 0.3, 3.0, 0.6, 0.65), row("a", 0.8, 1.0, 0.9, 0.45),
            row("b", 0.3, 1.0, 0.3, 0.6)]
    assert best_success(rows, "a", min_ssim=0.6) == 0.6       # the guided low-strength edit, not the unfaithful one
    assert best_success(rows, "a", min_ssim=0.4) == 0.9
    assert best_success(rows, "a", min_ssim=0.95) != best_success(rows, "a", min_ssim=0.95)   # nan
    assert best_success(rows, "b", min_ssim=0.6) == 0.3
    with pytest.raises(ValueError, match="min_ssim"):
        best_success(rows, "a", min_ssim=1.5)
    with pytest.raises(ValueError, match="no edits of method 'c'"):
        best_success(rows, "c", min_ssim=0.5)
    rows[1].clip_score, rows[2].clip_score = 0.7, 0.8
    assert best_success(rows, "a", min_ssim=0.6, metric="clip_score") == 0.7   # row 0's score is nan
    assert best_success(rows, "a", min_ssim=0.4, metric="clip_score") == 0.8
    with pytest.raises(ValueError, match="metric must be one of"):
        best_success(rows, "a", min_ssim=0.5, metric="psnr")
    with pytest.raises(ValueError, match="no row of 'b' has a clip_direction"):
        best_success(rows, "b", min_ssim=0.5, metric="clip_direction")


def test_load_pipeline_from_a_saved_folder(tmp_path, photo):
    from dpmlatent import zoo
    from dpmlatent.tiny import tiny_stable_diffusion

    tiny_stable_diffusion(tmp_path / "sd")
    pipe = zoo.load_pipeline(tmp_path / "sd")
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline" and pipe.safety_checker is None
    out = cycle_edit_pipeline(pipe, photo, "a cat", "a cat", strength=0.6, num_inference_steps=5, guidance_scale=1.0,
                              output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()
    with pytest.raises(FileNotFoundError, match="no pipeline folder"):
        zoo.load_pipeline(tmp_path / "missing")
    with pytest.raises(TypeError, match="name_or_path"):
        zoo.load_pipeline(None)


def test_stroke_weight_success_is_calibrated():
    """An exact reconstruction of the thin inputs scores 0; an edit that is bold everywhere scores the
    share of digits kept; the cutoff is the rule that labelled the inputs thin."""
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.edit_experiment import edit_task, evaluate_edit
    from dpmlatent.metrics import ink
    from dpmlatent.text import captioned_digits, stroke_weight_cutoffs

    task = edit_task("weight", num_images=32)
    assert (ink(task.images).double() < task.bold_ink).all()
    test = captioned_digits("test")
    hw = test.domains == 0
    cut = stroke_weight_cutoffs(test.images[hw], test.labels[hw])
    assert all(lo < hi for lo, hi in cut.values()) and len(cut) == 10
    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    kw = dict(method="m", strength=0.5, guidance_scale=1.0, digit_classifier=clf, domain_classifier=dom)
    assert evaluate_edit(task, task.images.clone(), **kw).success == 0.0
    slightly = (task.images + 0.05).clamp(-1, 1)              # a little more ink than the input: still thin
    assert evaluate_edit(task, slightly, **kw).success == 0.0
    bold = evaluate_edit(task, torch.ones_like(task.images), **kw)
    assert bold.success == bold.target_digit
    task.bold_ink = None
    with pytest.raises(ValueError, match="bold_ink"):
        evaluate_edit(task, task.images, **kw)


def test_matched_edit_scores_per_edit_at_the_level(tmp_path):
    """matched_edit runs the editor at the two step counts that bracket an SSIM level; its per-edit scores
    are edit_scores of direct cycle_edit runs, and their means are evaluate_edit's row."""
    from dpmlatent.classifier import ClassifierConfig, DigitClassifier
    from dpmlatent.edit_experiment import edit_scores, edit_task, evaluate_edit, matched_edit
    from dpmlatent.matching import strength_of_steps

    task = edit_task("digit", num_images=6)
    torch.manual_seed(0)
    clf, dom = DigitClassifier().eval(), DigitClassifier(ClassifierConfig(num_classes=2)).eval()
    pipe, n = make_pipeline(0), 8

    def direct(k, seed):
        return cycle_edit(pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, task.images, task.source_prompts,
                          task.prompts, strength=strength_of_steps(k, n), guidance_scale=2.0, num_inference_steps=n,
                          eta=1.0, method="sdedit", generator=torch.Generator().manual_seed(seed))

    ssim = {k: float(torch.stack([edit_scores(task, direct(k, s), digit_classifier=clf, domain_classifier=dom)["ssim"]
                                  for s in (0, 1)]).mean()) for k in (2, 3)}
    assert ssim[2] > ssim[3]
    level = (ssim[2] + ssim[3]) / 2
    p = matched_edit(pipe, task, "sdedit", level, guidance_scale=2.0, digit_classifier=clf, domain_classifier=dom,
                     seeds=(0, 1), num_inference_steps=n, start=0.25)
    assert p.steps == (2, 3) and p.weight == pytest.approx(0.5)
    from dpmlatent.run_store import RunStore   # through a store: recorded, read back with every run checked
    kw = dict(guidance_scale=2.0, digit_classifier=clf, domain_classifier=dom, seeds=(0, 1), num_inference_steps=n,
              start=0.25)
    rec = RunStore.open(tmp_path / "runs")
    p_rec = matched_edit(pipe, task, "sdedit", level, store=rec, **kw)
    rec.save(rebuild="test")
    read = RunStore.open(tmp_path / "runs", check=len(rec))
    p_read = matched_edit(pipe, task, "sdedit", level, store=read, **kw)
    assert p_rec.steps == p_read.steps == p.steps and all(torch.equal(p_rec.hi[c], p_read.hi[c]) for c in p.hi)
    assert torch.allclose(p_rec.hi["ssim"], p.hi["ssim"], atol=1e-3)   # the stored images are on the grid
    assert read.summary().checked == len(rec) and read.summary().max_difference == 0.0
    assert float(p.values("ssim").mean()) == pytest.approx(level, abs=1e-12)
    edited = direct(3, 1)
    sc = edit_scores(task, edited, digit_classifier=clf, domain_classifier=dom)
    assert torch.equal(p.hi["success"][1], sc["success"]) and set(sc) == {"success", "target_digit", "target_domain",
                                                                          "ink", "psnr", "ssim"}
    row = evaluate_edit(task, edited, method="sdedit", strength=0.3, guidance_scale=2.0, digit_classifier=clf,
                        domain_classifier=dom)
    assert row.success == sc["success"].mean().item() and row.ssim == pytest.approx(sc["ssim"].mean().item())
    with pytest.raises(ValueError, match="eta can only be set for the exact encoders"):
        matched_edit(pipe, task, "sdedit", 0.5, guidance_scale=2.0, digit_classifier=clf, domain_classifier=dom, eta=0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        matched_edit(pipe, task, "p2p", 0.5, guidance_scale=2.0, digit_classifier=clf, domain_classifier=dom)
