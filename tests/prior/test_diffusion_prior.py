"""DiffusionPrior: loss, sampling options, guidance checks, CLIP inputs, persistence, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.diffusion import ModelDenoiser, NoiseSchedule, sample_loop
from dalle2_pytorch.prior.conditioning import rerank_by_text_similarity
from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork
from tests.factories import tiny_prior

DIM = 16


def make_prior(net_options: dict | None = None, **kwargs) -> DiffusionPrior:
    return tiny_prior(dim=DIM, net_options={"heads": 2, "max_text_len": 4, **(net_options or {})}, **kwargs)


def embeds(batch: int = 4):
    g = torch.Generator().manual_seed(2)
    return (F.normalize(torch.randn(batch, DIM, generator=g), dim=-1),
            F.normalize(torch.randn(batch, DIM, generator=g), dim=-1))


def sample(prior: DiffusionPrior, text_embed: torch.Tensor, **kwargs) -> torch.Tensor:
    options = dict(num_samples_per_batch=1, timesteps=5, sampler="ddim", generator=torch.Generator().manual_seed(0))
    options.update(kwargs)
    return prior.sample(text_embed=text_embed, **options)


def test_loss_is_finite_and_leaves_inputs_untouched():
    prior = make_prior()
    text_embed, image_embed = embeds()
    before = (text_embed.clone(), image_embed.clone())
    loss = prior(text_embed=text_embed, image_embed=image_embed)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.equal(text_embed, before[0]) and torch.equal(image_embed, before[1])


@pytest.mark.parametrize("objective", [dict(), dict(predict_x_start=False), dict(predict_v=True)])
@pytest.mark.parametrize("loss_type", ["l1", "l2", "huber"])
def test_objectives_and_losses_train(objective, loss_type, monkeypatch):
    """The loss is the chosen regression loss between the network's output and the chosen target (x0, ε or v of the
    scaled image embedding), rebuilt by hand from the network's recorded input; and a few steps lower it."""
    prior = make_prior(loss_type=loss_type, **objective)
    name = {"predict_x_start": "eps", "predict_v": "v"}.get(next(iter(objective), ""), "x0")
    assert prior.objective == name
    text_embed, image_embed = embeds()
    calls = []
    original = prior.net.forward

    def recording(x, t, **kwargs):
        out = original(x, t, **kwargs)
        calls.append((x, t, out))
        return out

    monkeypatch.setattr(prior.net, "forward", recording)
    torch.manual_seed(1)
    loss = prior(text_embed=text_embed, image_embed=image_embed)
    (x_t, t, out), = calls
    schedule = NoiseSchedule("cosine", 20)
    a, s = schedule.sqrt_alphas_cumprod[t][:, None], schedule.sqrt_one_minus_alphas_cumprod[t][:, None]
    x0 = image_embed * DIM ** 0.5
    noise = (x_t - a * x0) / s
    target = {"x0": x0, "eps": noise, "v": a * noise - s * x0}[name]
    regression = {"l1": F.l1_loss, "l2": F.mse_loss, "huber": F.smooth_l1_loss}[loss_type]
    torch.testing.assert_close(loss, regression(out, target), atol=1e-5, rtol=1e-4)

    monkeypatch.undo()
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)

    def fixed_loss():
        torch.manual_seed(2)
        return prior(text_embed=text_embed, image_embed=image_embed)

    before = fixed_loss().item()
    for _ in range(15):
        optimizer.zero_grad()
        fixed_loss().backward()
        optimizer.step()
    assert fixed_loss().item() < 0.8 * before


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler", "heun"])
def test_every_core_sampler_runs(sampler):
    prior = make_prior(net_options=dict(self_cond=True))
    text_embed, _ = embeds()
    steps = 20 if sampler == "ddpm" else 5
    out = sample(prior, text_embed, sampler=sampler, timesteps=steps, cond_scale=2.0)
    assert out.shape == (4, DIM) and torch.isfinite(out).all()


def test_sampling_is_reproducible_with_a_generator():
    prior = make_prior()
    text_embed, _ = embeds()
    torch.testing.assert_close(sample(prior, text_embed), sample(prior, text_embed))


def test_default_sampler_follows_step_count():
    """DDPM over all training steps, DDIM over fewer: the default draws exactly what its explicit choice draws."""
    text_embed, _ = embeds()
    draw = lambda prior, **kw: prior.sample(text_embed=text_embed, num_samples_per_batch=1,  # noqa: E731
                                            generator=torch.Generator().manual_seed(0), **kw)
    full = make_prior()
    assert torch.equal(draw(full), draw(full, sampler="ddpm"))
    assert not torch.allclose(draw(full, sampler="ddpm"), draw(full, sampler="ddim", timesteps=20))
    fewer = make_prior(sample_timesteps=5)
    assert torch.equal(draw(fewer), draw(fewer, sampler="ddim", timesteps=5))
    assert torch.equal(draw(full, timesteps=5), draw(full, sampler="ddim", timesteps=5))
    assert not torch.allclose(draw(fewer, sampler="ddpm", timesteps=5), draw(fewer, sampler="ddim", timesteps=5))
    assert torch.equal(draw(fewer, timesteps=20), draw(fewer, sampler="ddpm", timesteps=20))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_cond_scale_guides_like_a_hand_built_guided_loop(sampler):
    """Guidance changes the samples, and exactly as ``null + (cond - null) * scale`` in the core sampler would."""
    prior = make_prior()
    text_embed, _ = embeds()
    net = prior.net.eval()

    def hand_built(scale):
        def guided(x, t):
            cond = net(x, t, text_embed=text_embed)
            null = net(x, t, text_embed=text_embed, text_cond_drop_prob=1.0, image_cond_drop_prob=1.0)
            return null + (cond - null) * scale

        denoiser = ModelDenoiser(guided, NoiseSchedule("cosine", 20), "x0")
        x0 = sample_loop(denoiser, (4, DIM), sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0))
        return x0 / DIM ** 0.5

    plain, guided = sample(prior, text_embed, sampler=sampler), sample(prior, text_embed, sampler=sampler,
                                                                      cond_scale=3.0)
    assert (plain - guided).abs().max() > 1e-2
    torch.testing.assert_close(guided, hand_built(3.0), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(plain, hand_built(1.0), atol=1e-5, rtol=1e-4)


def test_l2norm_clamp_options_change_output_as_documented():
    text_embed, _ = embeds()
    plain = sample(make_prior(), text_embed)
    final = sample(make_prior(sampling_final_clamp_l2norm=True), text_embed)
    torch.testing.assert_close(final.norm(dim=-1), torch.ones(4), atol=1e-5, rtol=0)  # unit norm in CLIP scale
    torch.testing.assert_close(F.normalize(final, dim=-1), F.normalize(plain, dim=-1), atol=1e-5, rtol=0)
    every_step = sample(make_prior(sampling_clamp_l2norm=True), text_embed)
    torch.testing.assert_close(every_step.norm(dim=-1), torch.ones(4), atol=1e-4, rtol=0)  # last x0 was clamped
    assert not torch.allclose(F.normalize(every_step, dim=-1), F.normalize(plain, dim=-1), atol=1e-3)
    init = sample(make_prior(init_image_embed_l2norm=True), text_embed)
    assert not torch.allclose(init, plain, atol=1e-4)


def test_training_clamp_l2norm_projects_the_prediction():
    text_embed, image_embed = embeds()
    torch.manual_seed(5)
    plain = make_prior()(text_embed=text_embed, image_embed=image_embed)
    torch.manual_seed(5)
    clamped = make_prior(training_clamp_l2norm=True)(text_embed=text_embed, image_embed=image_embed)
    assert not torch.isclose(plain, clamped)
    with pytest.raises(ValueError, match="training_clamp_l2norm"):
        make_prior(training_clamp_l2norm=True, predict_x_start=False)


def test_image_embed_scale_defaults_to_sqrt_dim_and_can_be_set():
    assert make_prior().image_embed_scale == pytest.approx(DIM ** 0.5)
    prior = make_prior(image_embed_scale=2.0, sampling_final_clamp_l2norm=True)
    assert prior.image_embed_scale == 2.0
    out = sample(prior, embeds()[0])
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4), atol=1e-5, rtol=0)


def test_guidance_needs_both_condition_dropouts():
    text_embed, _ = embeds()
    for kwargs in (dict(cond_drop_prob=0.0), dict(text_cond_drop_prob=0.2, image_cond_drop_prob=0.0)):
        prior = make_prior(**kwargs)
        with pytest.raises(ValueError, match="cond_scale=3.0 needs classifier-free guidance"):
            sample(prior, text_embed, cond_scale=3.0)
        sample(prior, text_embed, cond_scale=1.0)  # no guidance: fine


def test_text_encodings_conditioning_and_missing_encodings():
    prior = make_prior(condition_on_text_encodings=True)
    text_embed, image_embed = embeds()
    enc = torch.randn(4, 3, DIM)
    prior(text_embed=text_embed, image_embed=image_embed, text_encodings=enc).backward()
    assert sample(prior, text_embed, text_encodings=enc).shape == (4, DIM)
    with pytest.raises(ValueError, match="condition_on_text_encodings=True"):
        prior(text_embed=text_embed, image_embed=image_embed)


def test_bad_inputs_raise_clear_errors():
    prior = make_prior()
    text_embed, image_embed = embeds()
    with pytest.raises(ValueError, match="exactly one of text= and text_embed= \\(got neither\\)"):
        prior(image_embed=image_embed)
    with pytest.raises(ValueError, match="got both"):
        prior(text=torch.ones(4, 3, dtype=torch.long), text_embed=text_embed, image_embed=image_embed)
    with pytest.raises(ValueError, match="exactly one of image= and image_embed="):
        prior(text_embed=text_embed)
    with pytest.raises(ValueError, match="text_embed must have shape \\(batch, 16\\)"):
        prior(text_embed=torch.randn(4, 8), image_embed=image_embed)
    with pytest.raises(ValueError, match="image_embed must have shape"):
        prior(text_embed=text_embed, image_embed=torch.randn(4, 8))
    with pytest.raises(ValueError, match="4 texts but 3 images"):
        prior(text_embed=text_embed, image_embed=image_embed[:3])
    with pytest.raises(ValueError, match="needs a prior built with clip="):
        prior(text=torch.ones(4, 3, dtype=torch.long), image_embed=image_embed)
    with pytest.raises(ValueError, match="steps=50 is more than"):
        sample(prior, text_embed, timesteps=50)
    with pytest.raises(ValueError, match="sampler='nope'"):
        sample(prior, text_embed, sampler="nope")
    with pytest.raises(ValueError, match="num_samples_per_batch"):
        sample(prior, text_embed, num_samples_per_batch=0)
    with pytest.raises(ValueError, match="conditioned on text encodings: text_cond must hold 'text_encodings'"):
        make_prior(condition_on_text_encodings=True).p_sample_loop((4, DIM), {"text_embed": text_embed})


def test_bad_construction_raises():
    net = DiffusionPriorNetwork(DIM, depth=1, dim_head=8, heads=2, max_text_len=4)
    with pytest.raises(TypeError):
        DiffusionPrior(net, image_embed_dim=DIM, timestep=10)  # typo
    with pytest.raises(ValueError, match="image_embed_dim is required"):
        DiffusionPrior(net)
    with pytest.raises(ValueError, match=r"network's dim \(16\) must equal the image embedding dim \(32"):
        DiffusionPrior(net, image_embed_dim=32)
    with pytest.raises(ValueError, match="loss_type='l3'"):
        DiffusionPrior(net, image_embed_dim=DIM, loss_type="l3")
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionPrior(net, image_embed_dim=DIM, beta_schedule="cosin")
    with pytest.raises(ValueError, match="cond_drop_prob"):
        DiffusionPrior(net, image_embed_dim=DIM, cond_drop_prob=1.5)
    with pytest.raises(ValueError, match="num_timesteps"):
        DiffusionPrior(DiffusionPriorNetwork(DIM, depth=1, dim_head=8, num_timesteps=10), image_embed_dim=DIM,
                       timesteps=20)
    with pytest.raises(TypeError, match="net must be a DiffusionPriorNetwork, got Linear"):
        DiffusionPrior(torch.nn.Linear(2, 2), image_embed_dim=DIM)


def test_clip_inputs_and_rerank(fake_clip):
    torch.manual_seed(0)
    net = DiffusionPriorNetwork(DIM, depth=1, dim_head=8, heads=2, max_text_len=4)
    prior = DiffusionPrior(net, clip=fake_clip, timesteps=20, cond_drop_prob=0.2)
    assert prior.image_embed_dim == DIM and not any(p.requires_grad for p in prior.clip.parameters())
    text = torch.tensor([[3, 4, 5, 0], [7, 8, 0, 0]])
    images = torch.randn(2, 3, 4, 4)
    prior(text, images).backward()
    out = prior.sample(text, num_samples_per_batch=3, timesteps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, DIM)
    # the kept candidate is the one most similar to its text
    text_embed = fake_clip.embed_text(text)[0]
    cond = {"text_embed": text_embed.repeat_interleave(3, 0),
            "text_encodings": fake_clip.embed_text(text)[1].repeat_interleave(3, 0)}
    candidates = prior.p_sample_loop((6, DIM), cond, timesteps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, rerank_by_text_similarity(candidates, text_embed, 3))
    sims = F.cosine_similarity(candidates.view(2, 3, DIM), text_embed[:, None], dim=-1)
    torch.testing.assert_close(F.cosine_similarity(out, text_embed), sims.max(dim=1).values)


def test_save_and_load_round_trip(tmp_path):
    prior = make_prior(net_options=dict(self_cond=True), beta_schedule="linear", predict_v=True,
                       sampling_final_clamp_l2norm=True)
    prior.save_pretrained(tmp_path)
    loaded = DiffusionPrior.from_pretrained(tmp_path)
    assert loaded.config == prior.config
    text_embed, _ = embeds()
    torch.testing.assert_close(sample(loaded, text_embed), sample(prior, text_embed), atol=0, rtol=0)
    assert not any(key.startswith("noise_schedule") for key in prior.state_dict())


def test_bfloat16_autocast_and_bfloat16_weights():
    text_embed, image_embed = embeds()
    prior = make_prior(net_options=dict(self_cond=True), condition_on_text_encodings=True)
    enc = torch.randn(4, 3, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = prior(text_embed=text_embed, image_embed=image_embed, text_encodings=enc)
        out = sample(prior, text_embed, text_encodings=enc, cond_scale=2.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out).all()
    half = prior.to(torch.bfloat16)
    out = sample(half, text_embed.bfloat16(), text_encodings=enc.bfloat16(), cond_scale=2.0)
    assert out.shape == (4, DIM) and torch.isfinite(out).all()


def test_with_the_package_clip(tmp_path):
    """The seed README's flow: a CLIP embeds raw text and images; it stays frozen; save/load keeps it."""
    clip_module = pytest.importorskip("dalle2_pytorch.clip.model")
    torch.manual_seed(0)
    clip = clip_module.CLIP(dim_text=DIM, dim_image=DIM, dim_latent=DIM, num_text_tokens=100, text_enc_depth=1,
                            text_seq_len=8, text_heads=2, text_dim_head=8, visual_enc_depth=1, visual_image_size=16,
                            visual_patch_size=8, visual_heads=2, visual_dim_head=8)
    net = DiffusionPriorNetwork(dim=DIM, depth=1, dim_head=8, heads=2, max_text_len=8)
    prior = DiffusionPrior(net=net, clip=clip, timesteps=10, cond_drop_prob=0.2)
    text, images = torch.randint(1, 100, (3, 8)), torch.randn(3, 3, 16, 16)
    prior(text, images).backward()
    assert not any(p.requires_grad for p in prior.clip.parameters()) and not prior.train().clip.training
    prior.save_pretrained(tmp_path)
    loaded = DiffusionPrior.from_pretrained(tmp_path)
    draw = lambda p: p.sample(text, cond_scale=2.0, timesteps=3, generator=torch.Generator().manual_seed(0))  # noqa: E731
    torch.testing.assert_close(draw(loaded), draw(prior), atol=0, rtol=0)


def test_two_sampling_loops_of_one_prior_do_not_share_state():
    """A loop run from inside another (same prior, different text) leaves both results as if run alone."""
    prior = make_prior(net_options=dict(self_cond=True), condition_on_text_encodings=True).eval()
    g = torch.Generator().manual_seed(4)
    conds = [{"text_embed": torch.randn(2, DIM, generator=g), "text_encodings": torch.randn(2, 3, DIM, generator=g)}
             for _ in range(2)]
    run = lambda cond, callback=None: prior.p_sample_loop(
        (2, DIM), cond, sampler="ddpm", timesteps=6, generator=torch.Generator().manual_seed(1), callback=callback)
    alone = [run(cond) for cond in conds]
    inner = []
    outer = run(conds[0], callback=lambda info: inner or inner.append(run(conds[1])))
    torch.testing.assert_close(outer, alone[0], atol=0, rtol=0)
    torch.testing.assert_close(inner[0], alone[1], atol=0, rtol=0)


def test_sampling_checks_the_conditioning_once_with_clear_messages():
    prior = make_prior(condition_on_text_encodings=True)
    text_embed, _ = embeds()
    with pytest.raises(ValueError, match=r"text_encodings must have shape \(4, length, 16\)"):
        prior.p_sample_loop((4, DIM), {"text_embed": text_embed, "text_encodings": torch.randn(4, 3, 8)})
    with pytest.raises(ValueError, match=r"text_embed must have shape \(batch, 16\)"):
        prior.p_sample_loop((4, DIM), {"text_embed": torch.randn(4, 8), "text_encodings": torch.randn(4, 3, DIM)})


def test_training_drops_text_and_image_embed_each_at_its_own_rate(monkeypatch):
    """Each row of the training batch keeps or drops the text and the noised image embedding independently, at
    ``text_cond_drop_prob`` and ``image_cond_drop_prob``: found by matching every row of the network's output
    against the four kept/dropped combinations."""
    prior = make_prior(text_cond_drop_prob=0.2, image_cond_drop_prob=0.7)
    net = prior.net
    calls = []
    original = net.forward

    def recording(x, t, **kwargs):
        out = original(x, t, **kwargs)
        calls.append((x, t, kwargs, out.detach()))
        return out

    monkeypatch.setattr(net, "forward", recording)
    g = torch.Generator().manual_seed(3)
    text_embed = F.normalize(torch.randn(400, DIM, generator=g), dim=-1)
    image_embed = F.normalize(torch.randn(400, DIM, generator=g), dim=-1)
    prior(text_embed=text_embed, image_embed=image_embed)
    (x, t, kwargs, out), = calls
    inputs = {k: v for k, v in kwargs.items() if not k.endswith("_cond_drop_prob")}
    keys = [(text, image) for text in (0.0, 1.0) for image in (0.0, 1.0)]
    with torch.no_grad():
        distance = torch.stack([(out - original(x, t, text_cond_drop_prob=text, image_cond_drop_prob=image,
                                                **inputs)).abs().amax(1) for text, image in keys], dim=1)
    matches = distance < 1e-5
    assert (matches.sum(1) == 1).all()
    text_rate, image_rate = torch.tensor(keys)[matches.float().argmax(1)].mean(0).tolist()
    assert text_rate == pytest.approx(0.2, abs=0.07) and image_rate == pytest.approx(0.7, abs=0.07)
