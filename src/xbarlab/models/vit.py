"""A tiny Vision Transformer (Dosovitskiy et al. 2021) for 28×28 grey images, built from ordinary torch layers.

Patch embedding is a ``Conv2d(kernel=stride=patch_size)`` (analog-convertible like any convolution), followed by
a learned position embedding, a pre-norm ``nn.TransformerEncoder`` (GELU MLP, LayerNorm), a final LayerNorm,
mean pooling over the tokens and an ``nn.Linear`` head. Nested-tensor fast paths are disabled.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BASE_WIDTH", "ViT", "vit_tiny"]

BASE_WIDTH = 128  # embedding size at width=1 (the zoo's ``width`` is a multiplier; the issue caps it at 128)


class ViT(nn.Module):
    """Vision Transformer with mean-pooled tokens (no class token)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        patch_size: int = 7,
        width: float = 1.0,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        checks = [
            ("patch_size", patch_size in (4, 7), "4 or 7"),
            ("image_size", image_size > 0 and image_size % patch_size == 0, f"a multiple of patch_size={patch_size}"),
            ("width", 0 < width <= 1.0 and round(BASE_WIDTH * width) >= heads, "in (0, 1] (× 128 = embedding size)"),
            ("depth", 1 <= depth <= 6, "in [1, 6]"),
            ("heads", heads >= 1 and round(BASE_WIDTH * width) % heads == 0, "a divisor of the embedding size"),
            ("mlp_ratio", mlp_ratio > 0, "> 0"),
            ("dropout", 0 <= dropout < 1, "in [0, 1)"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"vit_tiny.{name}: invalid value {locals()[name]!r}; allowed: {allowed}")
        tokens = (image_size // patch_size) ** 2
        dim = round(BASE_WIDTH * width)
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=round(dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(batch, num_classes)`` for images ``(batch, in_channels, H, W)``."""
        t = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        t = self.norm(self.encoder(t))
        return self.fc(t.mean(dim=1))


def vit_tiny(
    num_classes: int = 10,
    in_channels: int = 1,
    image_size: int = 28,
    patch_size: int = 7,
    width: float = 1.0,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> ViT:
    """ViT-tiny: 16 tokens of 7×7 patches, width 128, 4 pre-norm blocks of 4 heads, MLP 256 (~0.54 M params)."""
    return ViT(num_classes, in_channels, image_size, patch_size, width, depth, heads, mlp_ratio, dropout)
