"""One resolution level of the U-Net on the way down (:class:`DownStage`) and up (:class:`UpStage`).

A down stage runs an initial resnet block, ``num_resnet_blocks`` cross-attending resnet blocks and an
optional attention layer, pushing every block's output (not the initial one's) and the attention
output onto the skip stack. The matching up stage pops one skip before each of its blocks.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Runner = Callable[..., torch.Tensor]  # calls a layer directly or through gradient checkpointing


class DownStage(nn.Module):
    def __init__(self, *, downsample_in: nn.Module | None, init_block: nn.Module, blocks: list[nn.Module],
                 attn: nn.Module | None, to_next_stage: nn.Module):
        super().__init__()
        self.downsample_in = downsample_in      # memory-efficient U-Net: downsample before the blocks
        self.init_block = init_block
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.to_next_stage = to_next_stage      # downsample, or a 1×1 conv where the resolution stays

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor, cond: torch.Tensor,
                skips: list[torch.Tensor], run: Runner) -> torch.Tensor:
        if self.downsample_in is not None:
            x = self.downsample_in(x)
        x = run(self.init_block, x, time_cond)
        for block in self.blocks:
            x = run(block, x, time_cond, cond)
            skips.append(x)
        if self.attn is not None:
            x = run(self.attn, x)
        skips.append(x)
        return self.to_next_stage(x)


class UpStage(nn.Module):
    def __init__(self, *, init_block: nn.Module, blocks: list[nn.Module], attn: nn.Module | None,
                 upsample: nn.Module | None, skip_scale: float):
        super().__init__()
        self.init_block = init_block
        self.blocks = nn.ModuleList(blocks)
        self.attn = attn
        self.upsample = upsample
        self.skip_scale = skip_scale

    def _with_skip(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        skip = skips.pop()
        return torch.cat((x, skip * self.skip_scale if self.skip_scale != 1 else skip), dim=1)

    def forward(self, x: torch.Tensor, time_cond: torch.Tensor, cond: torch.Tensor,
                skips: list[torch.Tensor], run: Runner) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (input of the next stage, this stage's output before upsampling)."""
        x = run(self.init_block, self._with_skip(x, skips), time_cond, cond)
        for block in self.blocks:
            x = run(block, self._with_skip(x, skips), time_cond, cond)
        if self.attn is not None:
            x = run(self.attn, x)
        return (self.upsample(x) if self.upsample is not None else x), x
