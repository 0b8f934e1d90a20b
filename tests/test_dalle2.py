"""The DALLE2 pipeline: a tiny CLIP + prior + decoder trained end to end with the trainers on solid colours.

Captions are colour names ("red", "green", ...) and images are 8x8 squares of that colour.  A tiny
CLIP is aligned contrastively for a few steps (so that its text and image embeddings tell the colours
apart), then the DiffusionPriorTrainer and DecoderTrainer train the prior and decoder.  The pipeline
must then draw, for each caption, an image whose colour is the caption's far more often than chance.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import tokenize
from dalle2_pytorch.dalle2 import DALLE2, SamplingDefaults
from dalle2_pytorch.data.toy import COLOURS
from dalle2_pytorch.decoder.decoder import Decoder
from dalle2_pytorch.decoder.unet import Unet
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from dalle2_pytorch.serialization import PretrainedMixin
from dalle2_pytorch.trainers import DecoderTrainer, DiffusionPriorTrainer
from tests.serve.tiny_model import save_as_demo_layout, save_as_first_dalle2_layout, tiny_dalle2

NAMES = list(COLOURS)  # six well separated colours: chance is 1/6
PALETTE = torch.tensor([COLOURS[n] for n in NAMES], dtype=torch.float32) / 255
SIZE, TEXT_LEN, DIM = 8, 8, 16
SAMPLING = dict(prior_steps=16, prior_sampler="ddim", steps=15, sampler="dpmpp_2m", cond_scale=3.0)


def solid_images(indices: torch.Tensor) -> torch.Tensor:
    return PALETTE[indices][:, :, None, None].expand(len(indices), 3, SIZE, SIZE).contiguous()


def judged_colours(images: torch.Tensor) -> torch.Tensor:
    """Index of the palette colour nearest to each image's mean colour."""
    return torch.cdist(images.mean(dim=(2, 3)), PALETTE).argmin(dim=1)


def aligned_clip(steps: int = 100) -> CLIP:
    torch.manual_seed(0)
    clip = CLIP(dim_text=DIM, dim_image=DIM, dim_latent=DIM, num_text_tokens=49408, text_enc_depth=1,
                text_seq_len=TEXT_LEN, text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_heads=2,
                visual_dim_head=8, visual_image_size=SIZE, visual_patch_size=4)
    tokens, images = tokenize(NAMES, context_length=TEXT_LEN), solid_images(torch.arange(len(NAMES)))
    optimizer = torch.optim.Adam(clip.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = clip(tokens, images, return_loss=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return clip


@pytest.fixture(scope="module")
def trained():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clip = aligned_clip()
        net = DiffusionPriorNetwork(dim=DIM, depth=2, dim_head=16, heads=4)
        prior = DiffusionPrior(net, clip=clip, timesteps=100, cond_drop_prob=0.0, condition_on_text_encodings=False)
        unet = Unet(dim=16, dim_mults=(1, 2), image_embed_dim=DIM, cond_dim=16, num_resnet_blocks=1, attn_heads=2,
                    attn_dim_head=8)
        decoder = Decoder(unet=unet, clip=clip, image_size=SIZE, timesteps=100, beta_schedule="cosine",
                          predict_v=True, image_cond_drop_prob=0.2)
        prior_trainer = DiffusionPriorTrainer(prior, lr=3e-3, warmup_steps=30, cosine_decay_max_steps=300,
                                              ema_beta=0.9, ema_update_after_step=10, ema_update_every=1)
        decoder_trainer = DecoderTrainer(decoder, lr=2e-3, ema_beta=0.9, ema_update_after_step=10,
                                         ema_update_every=1)
        classes = torch.arange(len(NAMES))
        text_embed = prior.clip.embed_text(tokenize(NAMES, context_length=TEXT_LEN))[0]
        image_embed = prior.clip.embed_image(solid_images(classes))[0]
        data = torch.Generator().manual_seed(0)
        for step in range(300):
            idx = torch.randint(0, len(NAMES), (64,), generator=data)
            prior_trainer(text_embed=text_embed[idx], image_embed=image_embed[idx])
            prior_trainer.update()
            if step < 180:
                idx = idx[:16]
                decoder_trainer(solid_images(idx), image_embed=image_embed[idx], max_batch_size=8)
                decoder_trainer.update()
        yield DALLE2(prior=prior, decoder=decoder, prior_num_samples=2)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.slow
def test_generated_colours_follow_the_captions(trained):
    captions = NAMES * 4
    images = trained(captions, seed=0, **SAMPLING)
    assert images.shape == (len(captions), 3, SIZE, SIZE)
    assert images.min() >= 0 and images.max() <= 1
    accuracy = (judged_colours(images) == torch.arange(len(NAMES)).repeat(4)).float().mean().item()
    print(f"DALLE2 toy colour accuracy: {accuracy:.3f} (chance {1 / len(NAMES):.3f})")
    assert accuracy >= 0.7, f"colour accuracy {accuracy:.2f} (chance {1 / len(NAMES):.2f})"


@pytest.mark.slow
def test_seeded_generation_is_reproducible_and_outputs(trained, tmp_path):
    first = trained(["red", "blue"], seed=3, **SAMPLING)
    assert torch.equal(first, trained(["red", "blue"], seed=3, **SAMPLING))
    assert not torch.equal(first, trained(["red", "blue"], seed=4, **SAMPLING))
    single = trained("red", seed=3, **SAMPLING)
    assert single.shape == (3, SIZE, SIZE)
    pil = trained(["red", "blue"], seed=3, return_pil_images=True, **SAMPLING)
    assert len(pil) == 2 and pil[0].size == (SIZE, SIZE)
    tokens = tokenize(["red", "blue"], context_length=TEXT_LEN)
    assert torch.equal(trained(tokens, seed=3, **SAMPLING), first)

    trained.save_pretrained(tmp_path / "dalle2")
    reloaded = DALLE2.from_pretrained(tmp_path / "dalle2")
    assert torch.equal(reloaded(["red", "blue"], seed=3, **SAMPLING), first)
    trained.prior.save_pretrained(tmp_path / "prior")
    assert isinstance(DiffusionPrior.from_pretrained(tmp_path / "prior"), DiffusionPrior)


def test_bad_pipeline_arguments():
    clip = aligned_clip(steps=0)
    prior = DiffusionPrior(DiffusionPriorNetwork(dim=DIM, depth=1, dim_head=8, heads=1), clip=clip, timesteps=10,
                           condition_on_text_encodings=False)
    decoder = Decoder(unet=Unet(dim=8, dim_mults=(1,), image_embed_dim=DIM, cond_dim=8), clip=clip,
                      image_size=SIZE, timesteps=10, beta_schedule="cosine")
    with pytest.raises(ValueError, match="prior_num_samples"):
        DALLE2(prior=prior, decoder=decoder, prior_num_samples=0)
    with pytest.raises(TypeError, match="prior must be a DiffusionPrior"):
        DALLE2(prior=decoder, decoder=decoder)
    with pytest.raises(TypeError):
        DALLE2(prior=prior, decoder=decoder, decoder_samples=2)   # (decoder_num_samples is the keyword)
    with pytest.raises(ValueError, match="decoder_num_samples=0"):
        DALLE2(prior=prior, decoder=decoder, decoder_num_samples=0)
    dalle2 = DALLE2(prior=prior, decoder=decoder)
    with pytest.raises(TypeError, match="strings"):
        dalle2([1, 2])
    with pytest.raises(ValueError, match="seed= or generator="):
        dalle2(["red"], seed=1, generator=torch.Generator())


# ----------------------------------------------------------------------------- sampling defaults and saved layouts
FAST = SamplingDefaults(prior_sampler="ddim", prior_steps=4, prior_cond_scale=2.0, sampler="ddim", steps=(4, 3),
                        cond_scale=(2.0, 1.0))


def explicit(defaults: SamplingDefaults) -> dict:
    """The same settings as call keywords."""
    return {field: getattr(defaults, field) for field in ("prior_sampler", "prior_steps", "prior_cond_scale",
                                                           "sampler", "steps", "cond_scale")}


def test_calls_fill_what_they_leave_out_from_the_sampling_defaults():
    pipeline = tiny_dalle2()
    pipeline.sampling_defaults = FAST
    assert torch.equal(pipeline(["a red circle"], seed=1), pipeline(["a red circle"], seed=1, **explicit(FAST)))
    for change in (dict(steps=(2, 2)), dict(sampler="euler"), dict(cond_scale=(3.0, 1.0)),
                   dict(prior_cond_scale=4.0)):  # each default reaches its stage
        drawn = DALLE2(prior=pipeline.prior, decoder=pipeline.decoder, sampling=FAST.replace(**change))
        assert not torch.equal(drawn(["a red circle"], seed=1), pipeline(["a red circle"], seed=1)), change
    # what a call passes wins over the defaults; what it leaves out still comes from them
    overridden = {**explicit(FAST), "steps": 4, "cond_scale": 1.0}
    assert torch.equal(pipeline(["a red circle"], seed=1, steps=4, cond_scale=1.0),
                       DALLE2(prior=pipeline.prior, decoder=pipeline.decoder)(["a red circle"], seed=1, **overridden))


def test_sampling_defaults_are_checked_where_they_are_set():
    pipeline = tiny_dalle2()
    for bad, message in ((dict(sampler="nope"), "not known"), (dict(steps=0), "positive int"),
                         (dict(prior_steps=[2]), "prior_steps"), (dict(cond_scale=float("nan")), "finite"),
                         (dict(cond_scale=()), "one per unet")):
        with pytest.raises(ValueError, match=message):
            SamplingDefaults(**bad)
    with pytest.raises(ValueError, match="2 unets"):
        pipeline.sampling_defaults = SamplingDefaults(steps=(1, 2, 3))
    with pytest.raises(ValueError, match="unknown keys"):
        pipeline.sampling_defaults = {"decoder": {"step": 3}}
    with pytest.raises(ValueError, match="unknown sections"):
        SamplingDefaults.from_dict({"unet": {}})
    with pytest.raises(TypeError, match="SamplingDefaults"):
        pipeline.sampling_defaults = 3
    unguided = DALLE2(prior=DiffusionPrior(pipeline.prior.net, clip=pipeline.prior.clip, timesteps=50,
                                           cond_drop_prob=0.0, condition_on_text_encodings=False),
                      decoder=pipeline.decoder)
    with pytest.raises(ValueError, match="prior_cond_scale"):
        unguided.sampling_defaults = SamplingDefaults(prior_cond_scale=2.0)
    assert SamplingDefaults(sampler="dpm++", steps=[2, 3]).sampler == "dpmpp_2m"  # canonical names, tuples
    assert SamplingDefaults.from_dict(FAST.to_dict()) == FAST


def test_save_pretrained_writes_the_pipeline_layout_and_round_trips(tmp_path):
    tiny = tiny_dalle2()
    pipeline = DALLE2(prior=tiny.prior, decoder=tiny.decoder, prior_num_samples=3, sampling=FAST)
    directory = pipeline.save_pretrained(tmp_path / "dalle2")
    assert sorted(p.name for p in directory.iterdir()) == ["decoder", "pipeline.json", "prior"]
    spec = json.loads((directory / "pipeline.json").read_text())
    assert spec["components"] == {"prior": "dalle2_pytorch.prior.diffusion_prior:DiffusionPrior",
                                  "decoder": "dalle2_pytorch.decoder.decoder:Decoder"}
    assert spec["sampling"] == {"prior": {"sampler": "ddim", "steps": 4, "cond_scale": 2.0},
                                "decoder": {"sampler": "ddim", "steps": [4, 3], "cond_scale": [2.0, 1.0]}}
    assert spec["prior_num_samples"] == 3 and spec["format_version"] == 1

    loaded = DALLE2.from_pretrained(directory)
    assert loaded.sampling_defaults == FAST and loaded.prior_num_samples == 3
    assert torch.equal(loaded(["a red circle", "a blue square"], seed=2),
                       pipeline(["a red circle", "a blue square"], seed=2))

    spec["format_version"] = 99
    (directory / "pipeline.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="format_version 99"):
        DALLE2.from_pretrained(directory)


def test_older_layouts_still_load_with_their_settings(tmp_path):
    pipeline = tiny_dalle2()
    first = save_as_first_dalle2_layout(pipeline, tmp_path / "first")
    loaded = DALLE2.from_pretrained(first)
    assert loaded.sampling_defaults == SamplingDefaults()
    assert torch.equal(loaded(["a red circle"], seed=3, steps=3), pipeline(["a red circle"], seed=3, steps=3))

    demo = save_as_demo_layout(pipeline, tmp_path / "demo", sampling=FAST.to_dict())
    loaded = DALLE2.from_pretrained(demo)
    assert loaded.sampling_defaults == FAST
    assert torch.equal(loaded(["a red circle"], seed=3), pipeline(["a red circle"], seed=3, **explicit(FAST)))
    assert DALLE2.from_pretrained(save_as_demo_layout(pipeline, tmp_path / "bare", sampling=None)) \
        .sampling_defaults == SamplingDefaults()

    # sampling.json beside a first-layout folder counts too; guidance the model cannot do becomes 1, as its
    # old readers (the CLI and the server) treated it
    (first / "sampling.json").write_text(json.dumps(FAST.to_dict()))
    assert DALLE2.from_pretrained(first).sampling_defaults == FAST
    PretrainedMixin.save_pretrained(tiny_dalle2(), tmp_path / "unguided")
    config = json.loads((tmp_path / "unguided" / "config.json").read_text())
    config["config"]["decoder"]["config"]["image_cond_drop_prob"] = 0.0
    (tmp_path / "unguided" / "config.json").write_text(json.dumps(config))
    (tmp_path / "unguided" / "sampling.json").write_text(json.dumps(FAST.to_dict()))
    assert DALLE2.from_pretrained(tmp_path / "unguided").sampling_defaults == FAST.replace(cond_scale=1.0)

    # pipeline.json wins over an older file in the same folder (e.g. the demo re-saving into its checkpoints)
    pipeline.sampling_defaults = FAST.replace(steps=2)
    pipeline.save_pretrained(demo)
    assert DALLE2.from_pretrained(demo).sampling_defaults.steps == 2


def test_a_folder_that_is_no_pipeline_says_what_was_expected(tmp_path):
    expected = ["pipeline.json", "config.json + model.safetensors", "prior/config.json", "decoder/config.json"]
    for folder, found in ((tmp_path / "missing", "does not exist"), (tmp_path, "is empty")):
        with pytest.raises(FileNotFoundError) as error:
            DALLE2.from_pretrained(folder)
        assert found in str(error.value) and all(name in str(error.value) for name in expected)
    pipeline = tiny_dalle2()
    pipeline.prior.save_pretrained(tmp_path / "prior_only")
    with pytest.raises(FileNotFoundError, match="holds a saved DiffusionPrior"):
        DALLE2.from_pretrained(tmp_path / "prior_only")
    pipeline.save_pretrained(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="is a file; give the folder"):
        DALLE2.from_pretrained(tmp_path / "half" / "pipeline.json")
    shutil.rmtree(tmp_path / "half" / "decoder")
    with pytest.raises(FileNotFoundError, match="decoder/config.json"):
        DALLE2.from_pretrained(tmp_path / "half")
