"""The diffusion prior learns a nonlinear text→image embedding map that a linear prior cannot.

Synthetic task: 64 concepts, each with a text direction and an unrelated image direction in 16-d.
A text embedding is its concept's direction plus noise; the image embedding is the concept's image
direction plus a little noise.  The map text → image is a fixed nonlinear (piecewise) function: a
linear map cannot send 64 directions to 64 unrelated ones in 16 dimensions.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dalle2_pytorch.prior.diffusion_prior import DiffusionPrior
from dalle2_pytorch.prior.linear_prior import LinearPrior
from dalle2_pytorch.prior.network import DiffusionPriorNetwork

DIM, CONCEPTS = 16, 64


def concept_task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)  # the fixed map
    text_dirs = F.normalize(torch.randn(CONCEPTS, DIM, generator=g), dim=-1)
    image_dirs = F.normalize(torch.randn(CONCEPTS, DIM, generator=g), dim=-1)
    concept = torch.randint(0, CONCEPTS, (n,), generator=generator)
    text = F.normalize(text_dirs[concept] + 0.2 * torch.randn(n, DIM, generator=generator) / DIM ** 0.5, dim=-1)
    image = F.normalize(image_dirs[concept] + 0.1 * torch.randn(n, DIM, generator=generator) / DIM ** 0.5, dim=-1)
    return text, image


def train(model: torch.nn.Module, text: torch.Tensor, image: torch.Tensor, steps: int, lr: float,
          batch: int = 128) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        idx = torch.randint(0, text.shape[0], (batch,))
        loss = model(text_embed=text[idx], image_embed=image[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()


@pytest.mark.slow
def test_diffusion_prior_learns_nonlinear_map_and_beats_linear_prior():
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(1)
    train_text, train_image = concept_task(8192, data)
    test_text, test_image = concept_task(256, data)

    net = DiffusionPriorNetwork(DIM, depth=2, dim_head=16, heads=4, max_text_len=4)
    prior = DiffusionPrior(net, image_embed_dim=DIM, timesteps=100, condition_on_text_encodings=False)
    train(prior, train_text, train_image, steps=400, lr=3e-3)
    linear = LinearPrior(image_embed_dim=DIM)
    train(linear, train_text, train_image, steps=400, lr=1e-2)

    linear_cos = F.cosine_similarity(linear.sample(text_embed=test_text), test_image).mean().item()
    for sampler in ("ddim", "dpmpp_2m"):
        out = prior.sample(text_embed=test_text, num_samples_per_batch=1, timesteps=16, sampler=sampler,
                           generator=torch.Generator().manual_seed(0))
        cos = F.cosine_similarity(out, test_image).mean().item()
        assert cos >= 0.9, f"{sampler}: held-out cosine {cos:.3f} < 0.9"
        assert cos > linear_cos + 0.2, f"{sampler}: diffusion {cos:.3f} does not beat linear {linear_cos:.3f}"
    assert linear_cos < 0.7  # the map really is nonlinear


def test_linear_prior_learns_a_linear_map():
    torch.manual_seed(0)
    mix = torch.linalg.qr(torch.randn(DIM, DIM))[0]
    text = F.normalize(torch.randn(2048, DIM), dim=-1)
    image = text @ mix
    linear = LinearPrior(image_embed_dim=DIM)
    train(linear, text, image, steps=600, lr=3e-2)
    test = F.normalize(torch.randn(64, DIM), dim=-1)
    assert F.cosine_similarity(linear.sample(text_embed=test), test @ mix).mean() > 0.98


def test_linear_prior_interface(tmp_path, fake_clip):
    linear = LinearPrior(clip=fake_clip, hidden_dim=32)
    text = torch.tensor([[3, 4, 0], [5, 0, 0]])
    loss = linear(text, torch.randn(2, 3, 4, 4))
    loss.backward()
    out = linear.sample(text, num_samples_per_batch=2, cond_scale=1.0, timesteps=8)
    assert out.shape == (2, DIM)
    plain = LinearPrior(image_embed_dim=DIM, hidden_dim=8, loss_type="huber")
    plain.save_pretrained(tmp_path)
    loaded = LinearPrior.from_pretrained(tmp_path)
    emb = F.normalize(torch.randn(3, DIM), dim=-1)
    torch.testing.assert_close(loaded.sample(text_embed=emb), plain.sample(text_embed=emb))
    with pytest.raises(TypeError):
        LinearPrior(image_embed_dim=DIM, hidden=8)
    with pytest.raises(ValueError, match="hidden_dim"):
        LinearPrior(image_embed_dim=DIM, hidden_dim=0)
    with pytest.raises(ValueError, match="exactly one of text= and text_embed="):
        plain(image_embed=emb)
