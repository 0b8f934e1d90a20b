"""KarloPipeline end to end: DDPM at Karlo's step counts reproduces diffusers' UnCLIPPipeline, our fast samplers run
and are seed-reproducible, DALLE2.from_pretrained recognises the folder, and the device/dtype options work."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from dalle2_pytorch import DALLE2
from dalle2_pytorch.karlo import KarloPipeline
from dalle2_pytorch.pipeline_files import is_diffusers_unclip
from tests.karlo.conftest import float64_tables

PROMPTS = ["a red cat", "blue square"]


def unclip_images(components, float64: bool) -> np.ndarray:
    """diffusers' UnCLIPPipeline built from the components, at its defaults (DDPM 25 + 25 + 7, guidance 4 and 8)."""
    from diffusers import UnCLIPPipeline

    components = dict(components)
    for name in ("prior_scheduler", "decoder_scheduler", "super_res_scheduler"):
        components[name] = type(components[name]).from_config(components[name].config)
        if float64:
            float64_tables(components[name])
    pipe = UnCLIPPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, generator=torch.Generator().manual_seed(0), output_type="np").images


def test_ddpm_at_karlo_defaults_matches_unclip_pipeline(karlo_components, karlo_pipeline):
    # same generator, same draw order (prior x_T and steps, decoder, super-res): the same injected noise
    ours = karlo_pipeline(PROMPTS, seed=0).permute(0, 2, 3, 1).numpy()
    assert ours.shape == (2, 16, 16, 3)
    # diffusers' maths with its β/ᾱ tables in float64: ours agrees to float32 rounding (measured 1.0e-5)
    assert np.abs(ours - unclip_images(karlo_components, float64=True)).max() < 1e-4
    # stock UnCLIPScheduler computes 1 - ᾱ_0 in float32, so its last step of every stage scales x0 by 0.99947;
    # through prior -> decoder -> super-res that moves the images by a few 1e-3 (measured 4.0e-3)
    stock = np.abs(ours - unclip_images(karlo_components, float64=False)).max()
    assert 1e-4 < stock < 1e-2
    scheduler = karlo_components["decoder_scheduler"]
    assert abs(float(scheduler.betas[0] / (1 - scheduler.alphas_cumprod[0])) - 0.99947) < 1e-5


def test_dpmpp_15_steps_runs_and_is_seed_reproducible(karlo_pipeline):
    run = dict(sampler="dpmpp_2m", steps=15, prior_sampler="dpmpp_2m", prior_steps=15)
    first = karlo_pipeline(PROMPTS, seed=3, **run)
    assert first.shape == (2, 3, 16, 16) and torch.isfinite(first).all() and 0 <= first.min() <= first.max() <= 1
    assert torch.equal(first, karlo_pipeline(PROMPTS, seed=3, **run))
    assert not torch.allclose(first, karlo_pipeline(PROMPTS, seed=4, **run))
    # every sampler at any step count, per stage
    for sampler in ("ddim", "euler", "heun"):
        images = karlo_pipeline(PROMPTS[0], seed=0, sampler=(sampler, "ddim"), steps=(6, 3),
                                prior_sampler=sampler, prior_steps=5)
        assert images.shape == (3, 16, 16) and torch.isfinite(images).all()


def test_callback_reports_both_image_stages_and_token_ids_equal_strings(karlo_pipeline):
    seen = []
    images = karlo_pipeline(PROMPTS, seed=1, sampler="ddim", steps=(4, 3), prior_steps=4, prior_sampler="ddim",
                            callback=lambda info: seen.append((info["unet_number"], info["i"], info["total"])))
    assert seen == [(1, i, 4) for i in range(4)] + [(2, i, 3) for i in range(3)]
    ids, _ = karlo_pipeline.text_encoder.tokens(PROMPTS)
    same = karlo_pipeline(ids, seed=1, sampler="ddim", steps=(4, 3), prior_steps=4, prior_sampler="ddim")
    assert torch.equal(images, same)
    pil = karlo_pipeline(PROMPTS[0], seed=1, steps=2, prior_steps=2, sampler="ddim", prior_sampler="ddim",
                         return_pil_images=True)
    assert pil.size == (16, 16)


def test_guidance_scales_change_the_images_and_are_validated(karlo_pipeline):
    run = dict(seed=2, sampler="ddim", steps=(4, 2), prior_sampler="ddim", prior_steps=4)
    base = karlo_pipeline(PROMPTS, **run)
    assert not torch.allclose(base, karlo_pipeline(PROMPTS, cond_scale=1.0, **run))
    assert not torch.allclose(base, karlo_pipeline(PROMPTS, prior_cond_scale=1.0, **run))
    assert torch.equal(base, karlo_pipeline(PROMPTS, cond_scale=(8.0, 1.0), **run))  # Karlo's default decoder scale
    with pytest.raises(ValueError, match="super-resolution models are not conditioned"):
        karlo_pipeline(PROMPTS, cond_scale=(8.0, 2.0), **run)
    with pytest.raises(ValueError, match="2 image stages"):
        karlo_pipeline(PROMPTS, seed=0, steps=(4, 2, 2))
    with pytest.raises(ValueError, match="seed= or generator="):
        karlo_pipeline(PROMPTS, seed=0, generator=torch.Generator())
    with pytest.raises(TypeError, match="non-empty list of strings"):
        karlo_pipeline([], seed=0)


def test_dalle2_from_pretrained_recognises_a_diffusers_unclip_folder(karlo_folder, tmp_path):
    assert is_diffusers_unclip(karlo_folder) and not is_diffusers_unclip(tmp_path)
    pipe = DALLE2.from_pretrained(karlo_folder)
    assert isinstance(pipe, KarloPipeline) and pipe.decoder.image_sizes == (8, 16)
    assert pipe.sampling_defaults.steps == (25, 7) and pipe.sampling_defaults.prior_cond_scale == 4.0
    broken = tmp_path / "broken"
    shutil.copytree(karlo_folder, broken)
    shutil.rmtree(broken / "super_res_last")
    with pytest.raises(FileNotFoundError, match="super_res_last/config.json"):
        DALLE2.from_pretrained(broken)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(FileNotFoundError, match="UnCLIPPipeline"):
        DALLE2.from_pretrained(other)


def test_low_memory_keeps_weights_on_the_cpu_and_moves_each_stage_while_it_runs(karlo_folder, karlo_pipeline):
    pipe = KarloPipeline.from_pretrained(karlo_folder, low_memory=True)
    moves = []
    for name, module in (("prior", pipe.prior.net), ("unet", pipe.decoder.unet), ("sr", pipe.decoder.super_res_last)):
        original = module.to
        module.to = lambda *args, _name=name, _original=original, **kwargs: (moves.append((_name, str(args[0]))),
                                                                             _original(*args, **kwargs))[1]
    run = dict(seed=5, sampler="ddim", steps=(3, 2), prior_sampler="ddim", prior_steps=3)
    assert torch.equal(pipe(PROMPTS, **run), karlo_pipeline(PROMPTS, **run))
    assert moves == [("prior", "cpu"), ("prior", "cpu"), ("unet", "cpu"), ("unet", "cpu"), ("sr", "cpu"), ("sr", "cpu")]
    pipe.to("cuda")  # only records the execution device: nothing moves until a stage runs
    assert pipe.device == torch.device("cuda") and next(pipe.parameters()).device.type == "cpu"


def test_half_precision_weights(karlo_folder):
    pipe = KarloPipeline.from_pretrained(karlo_folder, dtype="bfloat16")
    assert next(pipe.decoder.unet.parameters()).dtype == torch.bfloat16
    assert pipe.decoder.schedules[0].alphas_cumprod.dtype == torch.float32  # schedules stay float32
    images = pipe(PROMPTS[0], seed=0, sampler="ddim", steps=(3, 2), prior_sampler="ddim", prior_steps=3)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="dtype='float8'"):
        KarloPipeline.from_pretrained(karlo_folder, dtype="float8")


def test_missing_diffusers_is_a_clear_import_error(karlo_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the karlo extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'unclip-pytorch\[karlo\]'"):
        DALLE2.from_pretrained(karlo_folder)
