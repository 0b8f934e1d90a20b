"""CascadeStage: one unet of the cascade with its schedule, VAE and low-res conditioner, used by the Decoder for
training (``loss``) and sampling (``sample``) through one ``condition`` method."""

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.decoder import CascadeStage

from .helpers import EMBED_DIM, embeds, images, tiny_decoder


def test_stages_are_views_over_the_decoders_modules():
    decoder = tiny_decoder(2, use_noise_for_lowres_cond=(True,))
    first, second = decoder.stages
    assert isinstance(first, CascadeStage) and (first.number, second.number) == (1, 2)
    assert first.unet is decoder.unets[0] and second.unet is decoder.unets[1]
    assert second.schedule is decoder.schedules[1] and second.lowres is decoder.lowres_conditioners[0]
    assert first.lowres is None and first.previous_image_size is None and second.previous_image_size == 8
    assert (first.image_size, second.image_size) == (8, 16) and not first.is_latent
    # stages hold references: a swapped-in unet is what the next stage view sees
    decoder.unets[1] = decoder.unets[1].with_flags(lowres_cond=True)
    assert decoder.stage(2).unet is decoder.unets[1]
    with pytest.raises(ValueError, match="unet_number=3"):
        decoder.stage(3)


def test_condition_for_sampling_uses_the_fixed_noise_level_and_for_training_a_random_one():
    decoder = tiny_decoder(2, use_noise_for_lowres_cond=(True,), use_blur_for_lowres_cond=(False,),
                           lowres_noise_sample_level=0.3)
    stage = decoder.stage(2)
    assert decoder.stage(1).condition(torch.zeros(2, 3, 8, 8), training=False) == {}
    previous = torch.rand(2, 3, 8, 8) * 2 - 1
    sampled = stage.condition(previous, training=False, generator=torch.Generator().manual_seed(0))
    assert sampled["lowres_noise_level"].tolist() == [300, 300]
    grown = F.interpolate(previous, size=(16, 16), mode="nearest")
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = stage.lowres.noise_schedule.q_sample(grown, torch.tensor([300, 300]), noise)
    torch.testing.assert_close(sampled["lowres_cond_img"], expected)

    torch.manual_seed(1)
    target = torch.rand(64, 3, 16, 16) * 2 - 1
    trained = stage.condition(target, training=True)
    levels = trained["lowres_noise_level"]
    assert levels.shape == (64,) and len(set(levels.tolist())) > 20 and trained["lowres_cond_img"].shape == target.shape


def test_training_condition_is_the_target_shrunk_to_the_previous_size_and_grown_back():
    decoder = tiny_decoder(2, use_blur_for_lowres_cond=(True,), blur_prob=0.0)
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    cond = decoder.stage(2).condition(target, training=True)
    small = F.interpolate(target, size=(8, 8), mode="nearest")
    torch.testing.assert_close(cond["lowres_cond_img"], F.interpolate(small, size=(16, 16), mode="nearest"))
    assert "lowres_noise_level" not in cond


def test_stage_loss_is_the_decoder_loss():
    decoder = tiny_decoder(2, learned_variance=(True, False))
    image, embed = images(), embeds()
    for number in (1, 2):
        torch.manual_seed(3)
        expected = decoder(image, image_embed=embed, unet_number=number)
        torch.manual_seed(3)
        stage = decoder.stage(number)
        loss, lowres = stage.loss(image * 2 - 1, {"image_embed": embed} if stage.unet.cond_on_image_embeds else {})
        torch.testing.assert_close(loss, expected)
        assert (lowres is None) == (number == 1)


def test_stage_sample_is_the_decoders_first_unet():
    decoder = tiny_decoder(1, image_cond_drop_prob=0.5).eval()
    embed = embeds()
    # make the unet's output depend on its input so guidance and sampling matter
    torch.nn.init.normal_(decoder.unets[0].to_out.weight, std=0.1)
    expected = decoder.sample(image_embed=embed, cond_scale=2.0, steps=4,
                              generator=torch.Generator().manual_seed(5))
    stage = decoder.stage(1)
    out = stage.sample(None, {"image_embed": embed}, batch=2, cond_scale=2.0, steps=4,
                       generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(((out + 1) * 0.5).clamp(0, 1), expected)
    unguided = stage.sample(None, {"image_embed": embed}, batch=2, cond_scale=1.0, steps=4,
                            generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(out, unguided)


def test_inpainting_works_with_a_deterministic_sampler_and_keeps_the_region_bit_exact():
    decoder = tiny_decoder(1)
    known = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :5] = True
    out = decoder.stage(1).sample(None, {"image_embed": torch.zeros(1, EMBED_DIM)}, batch=1, sampler="ddim",
                                  steps=2, inpaint=(known, mask))
    assert torch.equal(out[..., :5], known[..., :5]) and not torch.equal(out, known)


def test_text_longer_than_max_text_len_warns_and_frozen_parts_stay_in_eval_mode():
    from .helpers import text_encodings, tiny_unet
    from dalle2_pytorch.decoder import Decoder

    unet = tiny_unet(image_embed_dim=EMBED_DIM, text_embed_dim=8, cond_on_text_encodings=True, max_text_len=3)
    decoder = Decoder(unet=unet, image_size=8, timesteps=10)
    with pytest.warns(UserWarning, match="max_text_len is 3"):
        decoder(images(size=8), image_embed=embeds(), text_encodings=text_encodings(length=5))
    decoder.train()
    assert decoder.unets[0].training and not decoder.vaes[0].training
