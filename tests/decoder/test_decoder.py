"""Decoder construction, training loss, sampling, inpainting, unconditional mode and save/load."""

import pytest
import torch

from dalle2_pytorch.decoder import Decoder
from dalle2_pytorch.diffusion import SAMPLERS

from .helpers import EMBED_DIM, embeds, images, text_encodings, tiny_decoder, tiny_unet


# ----------------------------------------------------------------------------- construction
def test_cascade_flags_schedules_and_stages():
    decoder = tiny_decoder(2, text=True, use_noise_for_lowres_cond=(True,))
    first, second = decoder.unets
    assert (first.lowres_cond, first.cond_on_image_embeds, first.cond_on_text_encodings) == (False, True, True)
    assert (second.lowres_cond, second.lowres_noise_cond, second.cond_on_image_embeds) == (True, True, False)
    assert first.channels_out == 6 and second.channels_out == 3          # learned variance: unet 1 only
    assert [s.beta_schedule for s in decoder.stages] == ["cosine", "linear"]
    assert decoder.condition_on_text_encodings


def test_per_unet_settings_take_tuples():
    decoder = tiny_decoder(2, timesteps=(50, 100), predict_v=(True, False), learned_variance=(False, True),
                           beta_schedule=("linear", "cosine"), p2_loss_weight_gamma=(0.0, 1.0))
    assert [s.timesteps for s in decoder.stages] == [50, 100]
    assert [s.objective for s in decoder.stages] == ["v", "eps"]
    assert [s.learned_variance for s in decoder.stages] == [False, True]
    assert decoder.schedules[1].num_timesteps == 100
    with pytest.raises(ValueError, match="timesteps"):
        tiny_decoder(2, timesteps=(10, 20, 30))


def test_condition_on_text_encodings_makes_unet1_text_conditioned():
    """The seed README's ``Decoder(..., condition_on_text_encodings=True)`` with a unet that has text_embed_dim."""
    unet = tiny_unet(image_embed_dim=EMBED_DIM, text_embed_dim=8)
    decoder = Decoder(unet=unet, image_size=8, timesteps=10, condition_on_text_encodings=True)
    assert decoder.unets[0].cond_on_text_encodings
    with pytest.raises(ValueError, match="text_embed_dim"):
        Decoder(unet=tiny_unet(image_embed_dim=EMBED_DIM), image_size=8, condition_on_text_encodings=True)


def test_matching_unet_is_used_as_is_and_trained_weights_are_never_dropped():
    ready = tiny_unet(image_embed_dim=EMBED_DIM, cond_on_image_embeds=True, channels_out=6)
    assert Decoder(unet=ready, image_size=8, timesteps=10).unets[0] is ready
    trained = tiny_unet(image_embed_dim=EMBED_DIM)
    trained.load_state_dict(trained.state_dict())        # now counts as holding trained weights
    with pytest.raises(ValueError, match="trained weights"):
        Decoder(unet=trained, image_size=8, timesteps=10)


def test_unknown_and_removed_keywords_are_type_errors():
    with pytest.raises(TypeError, match="did nothing"):
        tiny_decoder(clip_denoised=True)
    with pytest.raises(TypeError, match="image_size"):
        tiny_decoder(image_szie=8)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_sizes=(16, 8)), "increasing"),
    (dict(image_size=8), "image_sizes"),
    (dict(random_crop_sizes=(4, 4)), "random_crop_sizes"),
    (dict(use_blur_for_lowres_cond=False), "augmentation"),
    (dict(sample_timesteps=50), "sample_timesteps"),
    (dict(beta_schedule="cosin"), "beta_schedule"),
    (dict(loss_type="l3"), "loss_type"),
    (dict(predict_x_start=True, predict_v=True), "objective"),
])
def test_bad_construction_raises(kwargs, match):
    base = dict(image_sizes=(8, 16))
    base.update(kwargs)
    if "image_size" in kwargs:
        base.pop("image_sizes")
    unets = (tiny_unet(image_embed_dim=EMBED_DIM), tiny_unet())
    with pytest.raises(ValueError, match=match):
        Decoder(unet=unets, timesteps=10, **base)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("objective", ["eps", "x0", "v"])
def test_loss_is_finite_and_trains_every_parameter_of_the_unet(objective):
    """After one optimiser step (the zero-initialised output conv is then non-zero) every weight of the unet gets a
    non-zero, finite gradient.  Conditions are dropped half of the time so the learned null embeddings train too."""
    torch.manual_seed(0)
    decoder = tiny_decoder(text=True, image_cond_drop_prob=0.5, text_cond_drop_prob=0.5,
                           predict_x_start=objective == "x0", predict_v=objective == "v")
    unet = decoder.unets[0]
    batch = dict(image_embed=embeds(8), text_encodings=text_encodings(8))
    optimizer = torch.optim.Adam(unet.parameters(), lr=1e-2)
    decoder(images(8, size=8), **batch).backward()
    optimizer.step()
    optimizer.zero_grad()
    loss = decoder(images(8, size=8), **batch)
    loss.backward()
    assert torch.isfinite(loss)
    params = [(name, p) for name, p in unet.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in params)
    assert [name for name, p in params if p.grad.abs().max() == 0] == []


def test_learned_variance_loss_stays_finite_for_extreme_outputs():
    """The reference's hybrid VLB term turned NaN with wild outputs (#138); ours must not."""
    torch.manual_seed(0)
    decoder = tiny_decoder(vb_loss_weight=1.0)
    with torch.no_grad():
        for p in decoder.unets[0].to_out.parameters():
            p.normal_(0, 50.0)
    for _ in range(5):
        loss = decoder(images(size=8), image_embed=embeds())
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in decoder.parameters() if p.grad is not None)


def test_upsampler_training_crops_target_and_condition_alike():
    torch.manual_seed(0)
    decoder = tiny_decoder(2, random_crop_sizes=(None, 8))
    loss, lowres = decoder(images(size=16), image_embed=embeds(), unet_number=2, return_lowres_cond_image=True)
    assert torch.isfinite(loss) and lowres.shape == (2, 3, 8, 8)


def test_clip_embeds_training_images_and_text(monkeypatch):
    """With a CLIP, images and token ids are embedded by the adapter (here a stub with the adapter interface)."""

    class StubAdapter(torch.nn.Module):
        dim_latent, image_size, image_channels = EMBED_DIM, 8, 3

        def embed_image(self, image):
            assert 0 <= image.min() and image.max() <= 1
            return image.mean((2, 3)).repeat(1, 3)[:, :EMBED_DIM] - 0.5, None

        def embed_text(self, tokens):
            enc = torch.nn.functional.one_hot(tokens % 8, 8).float()
            return enc.mean(1), enc, tokens != 0

    import dalle2_pytorch.clip.adapters as adapters
    monkeypatch.setattr(adapters, "to_clip_adapter", lambda clip: clip)
    unet = tiny_unet(image_embed_dim=EMBED_DIM, text_embed_dim=8, cond_on_text_encodings=True)
    decoder = Decoder(unet=unet, clip=StubAdapter(), timesteps=10)
    assert decoder.image_sizes == (8,)
    tokens = torch.tensor([[3, 4, 0], [5, 0, 0]])
    assert torch.isfinite(decoder(images(size=8), text=tokens))
    assert decoder.sample(embeds(), text=tokens, steps=2, sampler="ddim").shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        Decoder(unet=tiny_unet(), clip=StubAdapter(), unconditional=True)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_training_inputs_raise_clear_errors():
    decoder = tiny_decoder(2, text=True)
    img, emb, enc = images(size=16), embeds(), text_encodings()
    with pytest.raises(ValueError, match="unet_number is required"):
        decoder(img, image_embed=emb, text_encodings=enc)
    for bad in (0, 3, True):
        with pytest.raises(ValueError, match="unet_number"):
            decoder(img, image_embed=emb, text_encodings=enc, unet_number=bad)
    with pytest.raises(ValueError, match="smaller than this unet's image size 16"):
        decoder(images(size=8), image_embed=emb, text_encodings=enc, unet_number=2)
    with pytest.raises(ValueError, match="channels"):
        decoder(img[:, :2], image_embed=emb, text_encodings=enc, unet_number=1)
    with pytest.raises(ValueError, match="text or text_encodings is required"):
        decoder(img, image_embed=emb, unet_number=1)
    with pytest.raises(ValueError, match=r"image_embed must have shape \(2, 8\)"):
        decoder(img, image_embed=torch.randn(2, 5), text_encodings=enc, unet_number=1)
    with pytest.raises(ValueError, match="text_encodings must have shape"):
        decoder(img, image_embed=emb, text_encodings=torch.randn(2, 5, 3), unet_number=1)
    with pytest.raises(ValueError, match="image_embed is required"):
        decoder(img, text_encodings=enc, unet_number=1)
    with pytest.raises(ValueError, match="text or text_encodings is required"):
        decoder.sample(emb)


def test_text_given_to_decoder_without_text_conditioning_raises():
    decoder = tiny_decoder()
    with pytest.raises(ValueError, match="not conditioned on text"):
        decoder(images(size=8), image_embed=embeds(), text_encodings=text_encodings())
    with pytest.raises(ValueError, match="not conditioned on text"):
        decoder.sample(embeds(), text=torch.ones(2, 3, dtype=torch.long))


def test_guidance_needs_condition_dropout():
    decoder = tiny_decoder(image_cond_drop_prob=0.0, text_cond_drop_prob=0.0)
    with pytest.raises(ValueError, match="cond_scale"):
        decoder.sample(embeds(), cond_scale=3.0, steps=2, sampler="ddim")


# ----------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_core_sampler_runs_the_cascade(sampler):
    """Each unet runs the sampler for its steps, and unet 2 upsamples unet 1's output: the whole cascade equals
    sampling unet 1 alone and then upsampling its images with unet 2, with one generator going on across both."""
    torch.manual_seed(0)
    decoder = tiny_decoder(2)
    for unet in decoder.unets:   # non-zero output convs: the samples depend on the networks
        with torch.no_grad():
            unet.to_out.weight.normal_(0, 0.2)
    seen = []
    out = decoder.sample(embeds(), sampler=sampler, steps=2, cond_scale=(2.0, 1.0), callback=seen.append,
                         generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16)
    assert [info["unet_number"] for info in seen] == [1, 1, 2, 2]
    generator = torch.Generator().manual_seed(0)
    low = decoder.sample(embeds(), sampler=sampler, steps=2, cond_scale=2.0, stop_at_unet_number=1,
                         generator=generator)
    state = generator.get_state()
    upsample = lambda image: decoder.sample(embeds(), sampler=sampler, steps=2, start_at_unet_number=2,  # noqa: E731
                                            image=image, generator=torch.Generator().set_state(state))
    high = upsample(low)
    torch.testing.assert_close(out, high, atol=1e-3, rtol=0)   # 1e-3: low went through [0, 1] and back
    other = upsample(1 - low)
    assert (other - high).abs().max() > 1e-3   # unet 2's output depends on its low-resolution input


def test_sampling_is_reproducible_with_a_generator_and_reports_progress():
    decoder = tiny_decoder(2, use_noise_for_lowres_cond=True, use_dynamic_thres=True, sample_timesteps=3)
    seen = []
    a = decoder.sample(embeds(), generator=torch.Generator().manual_seed(3), callback=seen.append)
    b = decoder.sample(embeds(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert {info["unet_number"] for info in seen} == {1, 2} and len(seen) == 6


def test_start_and_stop_in_the_middle_of_the_cascade():
    decoder = tiny_decoder(2)
    low = decoder.sample(embeds(), stop_at_unet_number=1, sampler="ddim", steps=2)
    assert low.shape == (2, 3, 8, 8)
    high = decoder.sample(embeds(), start_at_unet_number=2, image=low, sampler="ddim", steps=2)
    assert high.shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="needs image"):
        decoder.sample(embeds(), start_at_unet_number=2)
    with pytest.raises(ValueError, match="start_at_unet_number"):
        decoder.sample(embeds(), start_at_unet_number=3)


def test_inpainting_keeps_the_known_region_bit_exact():
    torch.manual_seed(0)
    decoder = tiny_decoder(2)
    known = images(size=16)
    mask = torch.zeros(2, 16, 16, dtype=torch.bool)
    mask[:, 3:11, 2:9] = True
    out = decoder.sample(embeds(), inpaint_image=known, inpaint_mask=mask, inpaint_resample_times=2, steps=3)
    assert torch.equal(out[mask.unsqueeze(1).expand_as(out)], known[mask.unsqueeze(1).expand_as(known)])
    assert not torch.equal(out, known)
    with pytest.raises(ValueError, match="inpaint_mask"):
        decoder.sample(embeds(), inpaint_image=known)
    for sampler in ("dpmpp_2m", "heun"):  # every sampler inpaints (known-region replacement at each level)
        out = decoder.sample(embeds(), inpaint_image=known, inpaint_mask=mask, sampler=sampler, steps=3)
        assert torch.equal(out[mask.unsqueeze(1).expand_as(out)], known[mask.unsqueeze(1).expand_as(known)])


def test_unconditional_decoder_needs_no_clip_and_rejects_conditioning():
    torch.manual_seed(0)
    decoder = Decoder(unet=(tiny_unet(), tiny_unet()), image_sizes=(8, 16), timesteps=20, unconditional=True)
    assert not decoder.unets[0].cond_on_image_embeds
    assert torch.isfinite(decoder(images(size=16), unet_number=1))
    assert decoder.sample(batch_size=3, sampler="ddim", steps=2).shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="unconditional"):
        decoder(images(size=16), image_embed=embeds(), unet_number=1)
    with pytest.raises(ValueError, match="unconditional; it takes no text_encodings$"):
        decoder(images(size=16), text_encodings=text_encodings(), unet_number=1)
    with pytest.raises(ValueError, match="unconditional"):
        decoder.sample(embeds())
    with pytest.raises(ValueError, match="unconditional"):
        Decoder(unet=tiny_unet(image_embed_dim=EMBED_DIM, cond_on_image_embeds=True), image_size=8, unconditional=True)


def test_one_unet_in_gpu_validates_and_is_a_no_op_without_cuda():
    decoder = tiny_decoder(2)
    with decoder.one_unet_in_gpu(2):
        assert decoder.get_unet(2) is decoder.unets[1]
    with pytest.raises(ValueError, match="exactly one"):
        with decoder.one_unet_in_gpu():
            pass
    with pytest.raises(ValueError, match="unet_number"):
        decoder.get_unet(3)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    decoder = tiny_decoder(2, text=True, use_noise_for_lowres_cond=True, sample_timesteps=(2, 2))
    decoder.save_pretrained(tmp_path)
    loaded = Decoder.from_pretrained(tmp_path)
    assert loaded.config == decoder.config
    for (name, a), b in zip(decoder.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    kwargs = dict(text_encodings=text_encodings(), cond_scale=2.0)
    a = decoder.sample(embeds(), generator=torch.Generator().manual_seed(0), **kwargs)
    b = loaded.sample(embeds(), generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a, b)
