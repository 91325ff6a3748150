"""Tiny pipelines built offline from small configs: the real diffusers classes with random weights,
for tests, benchmarks and the chapters' "real pipeline" code path when no weights can be downloaded.

Nothing here is trained; images from these pipelines are noise. What they check is that code
written for Stable Diffusion runs on a Stable Diffusion pipeline: same classes, same
``save_pretrained`` / ``from_pretrained`` round trip, same shapes and conventions.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["tiny_stable_diffusion"]


def tiny_stable_diffusion(folder: str | Path | None = None, *, seed: int = 0):
    """A ``StableDiffusionPipeline`` with a 32x32 VAE, a 16x16x4 UNet and a 2-layer CLIP text encoder.

    UNet2DConditionModel (block channels (32, 64), cross-attention dim 32), AutoencoderKL (block
    channels (32, 64), 4 latent channels), CLIPTextModel (hidden size 32) with the tokenizer of
    :func:`dpmlatent.text.build_tokenizer`, and Stable Diffusion's DDIMScheduler settings
    (scaled-linear betas 0.00085-0.012, ``steps_offset=1``, ``set_alpha_to_one=False``).

    Args:
        folder: if given, the pipeline is written there with ``save_pretrained`` and loaded back
            with ``StableDiffusionPipeline.from_pretrained`` (the path real checkpoints take).
        seed: seeds the random weights.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .text import build_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), cross_attention_dim=32, norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=32)
    tokenizer = build_tokenizer(num_merges=500, model_max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if folder is not None:
        pipe.save_pretrained(folder)
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
