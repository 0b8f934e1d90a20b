"""Contrastive objectives and similarities for CLIP.

* :func:`contrastive_loss`: the symmetric InfoNCE of CLIP, or with ``decoupled=True`` the decoupled
  contrastive loss (DCL, Yeh et al. 2021), which leaves the positive pair out of the denominator.
* :func:`filip_similarity`: FILIP's fine-grained similarity (Yao et al. 2021): each text token is
  matched to its most similar image patch and the matches are averaged over the real (non-padding)
  tokens; image->text likewise matches each patch to its best real text token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _directional_loss(logits: torch.Tensor, decoupled: bool) -> torch.Tensor:
    """Mean over rows of the InfoNCE loss whose positives lie on the diagonal of the (n, n) ``logits``."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    if not decoupled:
        return F.cross_entropy(logits, targets)
    positives = logits.diagonal()
    eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    negatives = logits.masked_fill(eye, float("-inf"))
    return (torch.logsumexp(negatives, dim=-1) - positives).mean()


def contrastive_loss(text_to_image: torch.Tensor, image_to_text: torch.Tensor, decoupled: bool = False) -> torch.Tensor:
    """Average of the text->image and image->text losses over scaled (b, b) similarity logits.

    ``text_to_image[i, j]`` compares text i with image j; ``image_to_text[i, j]`` image i with text j.
    """
    if decoupled and text_to_image.shape[0] < 2:
        raise ValueError("decoupled_contrastive_learning needs a batch of at least 2 pairs (it has no negatives otherwise)")
    return (_directional_loss(text_to_image, decoupled) + _directional_loss(image_to_text, decoupled)) / 2


def filip_similarity(text_tokens: torch.Tensor, text_mask: torch.Tensor,
                     image_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-wise late-interaction similarity.

    ``text_tokens`` (b, n, d) and ``image_tokens`` (c, m, d) are l2-normalised; ``text_mask`` (b, n) marks
    real tokens. Returns ``(text_to_image (b, c), image_to_text (c, b))``.
    """
    sim = torch.einsum("bnd,cmd->bcnm", text_tokens, image_tokens)
    mask = text_mask[:, None, :, None]  # (b, 1, n, 1)
    text_best = sim.amax(dim=-1)  # (b, c, n): best patch for every text token
    counts = text_mask.sum(dim=-1).clamp(min=1)[:, None]
    text_to_image = (text_best * text_mask[:, None, :]).sum(dim=-1) / counts
    image_best = sim.masked_fill(~mask, float("-inf")).amax(dim=2)  # (b, c, m): best text token per patch
    image_to_text = image_best.mean(dim=-1).t()
    return text_to_image, image_to_text
