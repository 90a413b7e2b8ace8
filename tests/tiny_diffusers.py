"""Tiny random diffusers pipelines built from config, for tests. Nothing is downloaded.

The shapes are those of diffusers' own pipeline tests (``get_dummy_components``): a 2-level UNet (block channels
32 and 64, cross-attention width 32), a 2-level VAE (so images are 2x their latents), a 2-layer CLIP text encoder
and a CLIP tokenizer over a handmade byte-level vocabulary (letters and digits, no merges). Each ``save_*``
writes a folder with ``save_pretrained`` (``model_index.json`` and one sub-folder per component), so the code
under test loads it by the folder's path exactly as it loads a downloaded model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

TINY_MAX_TOKENS = 16
_SENTENCES = (
    "a studio photo of a red sneaker", "a blue summer dress on a white background", "green wool pullover",
    "black leather ankle boots", "silver watch with a steel strap", "a brown handbag", "white running shoes",
)


def tiny_clip_tokenizer() -> Any:
    """A ``CLIPTokenizer`` over single characters (``a``-``z``, ``0``-``9``, with and without ``</w>``)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in "abcdefghijklmnopqrstuvwxyz0123456789":
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TINY_MAX_TOKENS)


def _clip_text_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
                          max_position_embeddings=TINY_MAX_TOKENS, **extra)


def _sd_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                         up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])


def _ddim() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def tiny_sd_pipeline(*, seed: int = 0) -> Any:
    """A random Stable Diffusion 1.5-shaped ``StableDiffusionPipeline`` (no safety checker)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    vae = _sd_vae()
    text_encoder = CLIPTextModel(_clip_text_config(len(tokenizer)))
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=_ddim(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_sd(folder: Path, *, seed: int = 0) -> Path:
    """Write `tiny_sd_pipeline` with ``save_pretrained`` and return the folder (``model_index.json`` names
    ``StableDiffusionPipeline``)."""
    tiny_sd_pipeline(seed=seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_controlnet(folder: Path, *, seed: int = 0) -> Path:
    """Write a random ``ControlNetModel`` matching `tiny_sd_pipeline`'s UNet (its conditioning embedding
    downsamples by 2, as the tiny VAE does) and return the folder."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel(
        block_out_channels=(32, 64), layers_per_block=1, in_channels=4, cross_attention_dim=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), conditioning_embedding_out_channels=(16, 32),
    )
    # A ControlNet starts with zero convolutions (no effect at all); give them weights, as diffusers' tests do.
    for module in (*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block):
        torch.nn.init.normal_(module.weight, std=0.1)
        torch.nn.init.constant_(module.bias, 0.1)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_sdxl(folder: Path, *, seed: int = 0) -> Path:
    """Write a random SDXL-shaped ``StableDiffusionXLPipeline`` (two text encoders, ``text_time`` added
    conditioning) and return the folder."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + the pooled width 32
        cross_attention_dim=64,  # the two encoders' widths side by side
    )
    vae = _sd_vae()
    config = _clip_text_config(len(tokenizer), hidden_act="gelu", projection_dim=32)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(config), text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer, tokenizer_2=tiny_clip_tokenizer(), unet=unet, scheduler=_ddim(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _tiny_t5_tokenizer(folder: Path) -> Any:
    """A ``T5TokenizerFast`` over a 64-piece SentencePiece model trained here on a few product phrases."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES), model_writer=model_bytes, vocab_size=64, model_type="unigram",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, num_threads=1,
    )
    (folder / "spiece.model").write_bytes(model_bytes.getvalue())
    return T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=0, model_max_length=TINY_MAX_TOKENS)


def save_tiny_flux(folder: Path, *, seed: int = 0) -> Path:
    """Write a random FLUX.1-schnell-shaped ``FluxPipeline`` (a 1+1-layer ``FluxTransformer2DModel`` without
    guidance embedding, CLIP and T5 text encoders, a 1-level VAE) and return the folder."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = _tiny_t5_tokenizer(folder.parent / f"{folder.name}-spm")
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=False,
    )
    text_encoder = CLIPTextModel(_clip_text_config(len(tokenizer), hidden_act="gelu", projection_dim=32))
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
                        transformer=transformer)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_ip_adapter(folder: Path, unet_config: dict[str, Any], *, seed: int = 0,
                         subfolder: str = "models", weight_name: str = "ip-adapter_tiny.safetensors") -> str:
    """Write a random IP-Adapter for a UNet of ``unet_config`` in the layout of ``h94/IP-Adapter`` and return
    the setting that names it (``FOLDER:SUBFOLDER/WEIGHT``).

    The layout: ``SUBFOLDER/image_encoder/`` holds a ``CLIPVisionModelWithProjection`` (32 px images, embeds of
    width 8) and ``SUBFOLDER/WEIGHT`` the adapter: ``image_proj.proj`` / ``image_proj.norm`` (4 image tokens of
    the UNet's cross-attention width) and ``ip_adapter.{1,3,5,...}.to_k_ip`` / ``to_v_ip`` for each
    cross-attention layer in the order of ``unet.attn_processors``, as the original checkpoints number them.
    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    embed_dim, tokens = 8, 4
    cross = int(unet_config["cross_attention_dim"])
    channels = list(unet_config["block_out_channels"])
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=embed_dim,
    ))
    encoder.save_pretrained(folder / subfolder / "image_encoder")
    weights = {
        "image_proj.proj.weight": torch.randn(cross * tokens, embed_dim) * 0.1,
        "image_proj.proj.bias": torch.zeros(cross * tokens),
        "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross),
    }
    unet = UNet2DConditionModel.from_config(unet_config)
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        for part in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(hidden, cross) * 0.1
        key_id += 2
    save_file(weights, str(folder / subfolder / weight_name))
    return f"{folder}:{subfolder}/{weight_name}"
