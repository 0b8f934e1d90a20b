"""Tiny random Karlo-layout components, built offline: for tests, benchmarks and the docs' runnable examples.

``build_tiny_components(seed)`` gives the modules and schedulers of an unCLIP pipeline with Karlo's structure
(PriorTransformer, CLIP text encoder with a byte-level tokenizer, UnCLIPTextProjModel, UNet2DConditionModel with
learned-range variance, two super-resolution UNet2DModels) at a few thousand parameters each;
``save_tiny_karlo(folder)`` writes them in the diffusers layout that ``DALLE2.from_pretrained`` recognises.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

from dalle2_pytorch.karlo.components import MODEL_INDEX, UNCLIP_CLASS, import_diffusers

TEXT_LENGTH = 16
WIDTH = 16  # CLIP embedding width = text hidden width = prior width


def _tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer with a byte-level vocabulary and no merges (every character is a token)."""
    from transformers import CLIPTokenizer

    from dalle2_pytorch.clip.tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=TEXT_LENGTH)


def build_tiny_components(seed: int = 0, image_size: int = 8, super_res_size: int = 16) -> dict[str, Any]:
    """The keyword arguments of ``UnCLIPPipeline(...)``: random tiny modules (eval mode) and Karlo's schedulers."""
    diffusers = import_diffusers()
    from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _tokenizer(Path(scratch))
    text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=WIDTH, projection_dim=WIDTH, intermediate_size=32,
        num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=TEXT_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    prior = diffusers.PriorTransformer(num_attention_heads=2, attention_head_dim=8, num_layers=1, embedding_dim=WIDTH,
                                       num_embeddings=TEXT_LENGTH)
    channels = (16, 32)
    decoder = diffusers.UNet2DConditionModel(
        sample_size=image_size, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=channels,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=32, attention_head_dim=4,
        norm_num_groups=8, resnet_time_scale_shift="scale_shift", class_embed_type="identity")
    text_proj = UnCLIPTextProjModel(clip_extra_context_tokens=4, clip_embeddings_dim=WIDTH,
                                    time_embed_dim=channels[0] * 4, cross_attention_dim=32)

    def super_res():
        return diffusers.UNet2DModel(sample_size=super_res_size, in_channels=6, out_channels=3, layers_per_block=1,
                                     block_out_channels=channels, norm_num_groups=8,
                                     down_block_types=("ResnetDownsampleBlock2D",) * 2,
                                     up_block_types=("ResnetUpsampleBlock2D",) * 2)

    super_res_first, super_res_last = super_res(), super_res()
    with torch.no_grad():  # parameters a fresh model starts at zero, so that the test exercises them
        prior.clip_mean.normal_(0, 0.5)
        prior.clip_std.uniform_(0.5, 1.5)
        text_proj.learned_classifier_free_guidance_embeddings.normal_()
    modules = {"prior": prior, "text_encoder": text_encoder, "text_proj": text_proj, "decoder": decoder,
               "super_res_first": super_res_first, "super_res_last": super_res_last}
    components: dict[str, Any] = {name: module.eval() for name, module in modules.items()}
    components.update(
        tokenizer=tokenizer,
        prior_scheduler=diffusers.UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                                  clip_sample_range=5.0),
        decoder_scheduler=diffusers.UnCLIPScheduler(variance_type="learned_range", prediction_type="epsilon"),
        super_res_scheduler=diffusers.UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="epsilon"))
    return components


def save_components(components: dict[str, Any], folder: Union[str, Path]) -> Path:
    """Write ``UnCLIPPipeline`` components in the diffusers folder layout (Karlo's ``model_index.json``)."""
    folder = Path(folder)
    index: dict[str, Any] = {"_class_name": UNCLIP_CLASS, "_diffusers_version": import_diffusers().__version__}
    for name, component in components.items():
        component.save_pretrained(folder / name)
        module = type(component).__module__.split(".")[0]
        index[name] = ["unclip" if name == "text_proj" else module, type(component).__name__]
    (folder / MODEL_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True))
    return folder


def save_tiny_karlo(folder: Union[str, Path], seed: int = 0, image_size: int = 8, super_res_size: int = 16) -> Path:
    """Build tiny random Karlo components (:func:`build_tiny_components`) and save them into ``folder``."""
    return save_components(build_tiny_components(seed, image_size, super_res_size), folder)
