"""Every usage snippet of the project's overview page (seed 001: "Code Examples", "Getting Started" and the code
comparisons) runs as written, with its sizes shrunk to CPU scale (widths, depths, image sizes, steps) and the
Hugging Face names 't5-large' / 'google/t5-v1_1-base' replaced by a tiny random T5 saved to a folder (no download).
The page's stable-diffusion comparison shows a hypothetical ``forward`` method, not a use of the library, and is not
run.  Each snippet's text below is the page's, apart from those substitutions."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dalle2_pytorch import CLIP
from dalle2_pytorch.data.toy import COLOURS
from tests.clip.tiny_t5 import save_tiny_t5

CODE_EXAMPLE_1 = """
from dalle2_pytorch import DALLE2

dalle2 = DALLE2(
    prior = prior,
    decoder = decoder,
    prior_num_samples = 2,
    decoder_num_samples = 2,
    return_best = True
)
"""

CODE_EXAMPLE_2 = """
images = dalle2(
    ['a painting of a cat', 'a futuristic city skyline'],
    cond_scale = 2.
)
"""

CODE_EXAMPLE_3 = """
from dalle2_pytorch import DALLE2Trainer

trainer = DALLE2Trainer(
    dalle2,
    prior_loss_weight = 0.1,
    decoder_loss_weight = 1.,
    learning_rate = 1e-4
)

trainer.train(
    train_loader,
    num_train_steps = 2,
    batch_size = 4,
    grad_accum_every = 4
)
"""

GETTING_STARTED_2 = """
from dalle2_pytorch import DALLE2, DiffusionPrior, DiffusionPriorNetwork, Unet, Decoder

prior = DiffusionPrior(
    net = DiffusionPriorNetwork(
        dim = 16,
        depth = 1,
        dim_head = 8,
        heads = 2
    ),
    clip = clip,
    timesteps = 10,
    cond_drop_prob = 0.2
)

decoder = Decoder(
    unet = Unet(
        dim = 16,
        dim_mults = (1, 2, 4, 8),
        num_resnet_blocks = 1,
        layer_attns = (False, True, True, True),
        layer_cross_attns = (False, True, True, True)
    ),
    clip = clip,
    timesteps = 10,
    image_sizes = 16,
    channels = 3
)

dalle2 = DALLE2(
    prior = prior,
    decoder = decoder,
    prior_num_samples = 2,
    decoder_num_samples = 2,
    return_best = True
)
"""

GETTING_STARTED_3 = """
images = dalle2(['a painting of a sunset over the ocean'])
"""

VERSUS_DALLE = """
from dalle2_pytorch import DALLE2

model = DALLE2(
    dim = 16,
    image_size = 16,
    text_seq_len = 8,
    depth = 1,
    heads = 2
)
images = model.generate_images("A cat wearing a hat", num = 1)
"""

VERSUS_STABLE_DIFFUSION = """
from dalle2_pytorch import DALLE2

dalle2 = DALLE2(
    dim = 16,
    image_size = 16,
    text_encoder_name = T5_LARGE
)

images = dalle2(
    ['a painting of a cat drinking milk'],
    cond_scale = 2.
)
"""

VERSUS_DIFFUSERS = """
from dalle2_pytorch import DALLE2

dalle2 = DALLE2(
    dim = 16,
    image_size = 16,
    text_encoder_depth = 1,
    text_decoder_depth = 1
)
"""

VERSUS_LATENT_DIFFUSION = """
dalle2 = DALLE2(
    dim = 16,
    image_size = 16,
    text_encoder_name = T5_V1_1_BASE
)

images = dalle2(
    ['a painting of a cat in the style of van gogh']
)
"""


def run(*snippets: str, **names) -> dict:
    namespace = dict(names)
    for snippet in snippets:
        exec(compile(snippet, "<overview snippet>", "exec"), namespace)
    return namespace


@pytest.fixture
def clip() -> CLIP:
    torch.manual_seed(0)
    return CLIP(dim_text=16, dim_image=16, dim_latent=16, num_text_tokens=49408, text_enc_depth=1, text_seq_len=8,
                text_heads=2, visual_enc_depth=1, visual_image_size=16, visual_patch_size=8, visual_heads=2)


def colour_loader(batches: int = 3, rows: int = 3) -> list:
    names = list(COLOURS)
    palette = torch.tensor([COLOURS[n] for n in names], dtype=torch.float32) / 255
    g = torch.Generator().manual_seed(0)
    loader = []
    for _ in range(batches):
        idx = torch.randint(0, len(names), (rows,), generator=g)
        loader.append(([names[i] for i in idx], palette[idx][:, :, None, None].expand(rows, 3, 16, 16).clone()))
    return loader


def test_getting_started(clip):
    torch.manual_seed(0)
    ns = run(GETTING_STARTED_2, GETTING_STARTED_3, clip=clip)
    assert ns["images"].shape == (1, 3, 16, 16)
    assert ns["dalle2"].decoder_num_samples == 2 and ns["dalle2"].return_best
    unet = ns["decoder"].unets[0]
    assert [level.attn is not None for level in unet.downs] == [False, True, True, True]
    assert [all(b.cross_attn is not None for b in level.blocks) for level in unet.downs] == [False, True, True, True]


def test_code_examples(clip):
    torch.manual_seed(0)
    ns = run(GETTING_STARTED_2, CODE_EXAMPLE_1, CODE_EXAMPLE_2, CODE_EXAMPLE_3, clip=clip,
             train_loader=colour_loader())
    assert ns["images"].shape == (2, 3, 16, 16)
    trainer = ns["trainer"]
    assert trainer.step == 2 and trainer.parts["prior"].step == trainer.parts["unet1"].step == 2


def test_comparison_with_dalle():
    torch.manual_seed(0)
    images = run(VERSUS_DALLE)["images"]
    assert len(images) == 1 and isinstance(images[0], Image.Image) and images[0].size == (16, 16)


def test_comparison_with_stable_diffusion(tmp_path):
    torch.manual_seed(0)
    ns = run(VERSUS_STABLE_DIFFUSION, T5_LARGE=save_tiny_t5(tmp_path / "t5"))
    assert ns["images"].shape == (1, 3, 16, 16)
    assert ns["dalle2"].decoder.unets[0].text_embed_dim == 24  # the T5's width, not the CLIP's


def test_comparisons_with_diffusers_and_latent_diffusion(tmp_path):
    torch.manual_seed(0)
    ns = run(VERSUS_DIFFUSERS)
    assert ns["dalle2"].prior.net.config["depth"] == 1 and ns["dalle2"].prior.clip.clip.config["text_enc_depth"] == 1
    ns = run(VERSUS_LATENT_DIFFUSION, DALLE2=ns["DALLE2"], T5_V1_1_BASE=save_tiny_t5(tmp_path / "t5"))
    assert ns["images"].shape == (1, 3, 16, 16)
