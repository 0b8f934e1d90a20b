"""CLIP learns: trained briefly on captioned coloured shapes, it retrieves held-out images from captions.

Twelve captions ("a red square", ..., "a yellow triangle"); every training step draws a fresh image for
each caption, evaluation draws new ones from another seed. Text->image retrieval among the twelve
images has chance accuracy 1/12; we ask for more than 5x that, with the plain loss and with each option.
"""

import pytest
import torch
from tests.clip.clip_synthetic_shapes import CAPTIONS, make_batch

from dalle2_pytorch.clip.model import CLIP
from dalle2_pytorch.clip.tokenizer import tokenize

IMAGE_SIZE = 16
STEPS = 200
CHANCE = 1 / len(CAPTIONS)


def caption_tokens() -> tuple[torch.Tensor, int]:
    """Captions through the real CLIP tokenizer, ids compacted to a small vocabulary (0 stays padding)."""
    tokens = tokenize(CAPTIONS, context_length=8)
    vocab = tokens.unique()
    return torch.searchsorted(vocab, tokens), len(vocab)


def train_and_evaluate(**options) -> float:
    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    tokens, vocab_size = caption_tokens()
    clip = CLIP(dim_text=32, dim_image=32, dim_latent=32, num_text_tokens=vocab_size, text_enc_depth=1,
                text_seq_len=8, text_heads=2, text_dim_head=16, visual_enc_depth=1, visual_heads=2,
                visual_dim_head=16, visual_image_size=IMAGE_SIZE, visual_patch_size=4,
                **{"visual_patch_dropout": 0.0, **options})
    optimizer = torch.optim.AdamW(clip.parameters(), lr=1.5e-3, weight_decay=0.0)
    for _ in range(STEPS):
        order = torch.randperm(len(CAPTIONS), generator=data).tolist()
        loss = clip(tokens[order], make_batch(order, IMAGE_SIZE, data), return_loss=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    clip.eval()
    held_out = torch.Generator().manual_seed(1234)
    correct = total = 0
    with torch.no_grad():
        for _ in range(10):
            logits = clip(tokens, make_batch(list(range(len(CAPTIONS))), IMAGE_SIZE, held_out))
            correct += (logits.argmax(dim=-1) == torch.arange(len(CAPTIONS))).sum().item()
            total += len(CAPTIONS)
    return correct / total


def test_untrained_clip_is_at_chance():
    """The evaluation is not trivially passed: without training, retrieval is near chance."""
    torch.manual_seed(0)
    tokens, vocab_size = caption_tokens()
    clip = CLIP(dim_text=32, dim_image=32, dim_latent=32, num_text_tokens=vocab_size, text_enc_depth=1,
                text_seq_len=8, text_heads=2, visual_enc_depth=1, visual_heads=2, visual_image_size=IMAGE_SIZE,
                visual_patch_size=4).eval()
    images = make_batch(list(range(len(CAPTIONS))), IMAGE_SIZE, torch.Generator().manual_seed(1234))
    with torch.no_grad():
        accuracy = (clip(tokens, images).argmax(-1) == torch.arange(len(CAPTIONS))).float().mean().item()
    assert accuracy <= 3 * CHANCE


@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {},
    dict(use_all_token_embeds=True),
    dict(decoupled_contrastive_learning=True),
    dict(extra_latent_projection=True),
    dict(use_mlm=True, text_ssl_loss_weight=0.2),
    dict(use_visual_ssl=True, visual_ssl_type="simclr", image_ssl_loss_weight=0.2),
    dict(use_visual_ssl=True, visual_ssl_type="simsiam", image_ssl_loss_weight=0.2),
    dict(visual_patch_dropout=0.5),
], ids=["plain", "filip", "dcl", "extra_latent_projection", "mlm", "simclr", "simsiam", "patch_dropout"])
def test_retrieval_far_above_chance(options):
    accuracy = train_and_evaluate(**options)
    assert accuracy >= 0.45, f"held-out text->image retrieval accuracy {accuracy:.2f} (chance {CHANCE:.2f})"
