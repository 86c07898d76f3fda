"""Building blocks of the unified transformer: rotary positions, timestep embedding, blocks."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from avgen.attention import SlidingWindowMask, sliding_window_attention


def time_pairs(head_dim: int) -> int:
    """How many rotary pairs encode time: the first half of them."""
    return head_dim // 4


def rope_frequencies(positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Rotary phases for 3-axis positions (L, 3) = (time, y, x) as unit complex numbers (L, head_dim/2).

    Half the rotary pairs encode time (`time_pairs`, first), a quarter each y and x.
    """
    pairs = head_dim // 2
    axis_pairs = (time_pairs(head_dim), pairs // 4, pairs - time_pairs(head_dim) - pairs // 4)
    angles = []
    for axis, n in enumerate(axis_pairs):
        inv_freq = theta ** (-torch.arange(n, dtype=torch.float64, device=positions.device) / n)
        angles.append(positions[:, axis, None].double() * inv_freq)
    angles = torch.cat(angles, dim=-1)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """x: (B, H, L, D); rotate consecutive pairs (x0, x1) by the token's phase (one complex multiply)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(pairs * phases).flatten(-2).type_as(x)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000), any shape -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_float = x.float()
        rrms = torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (x_float * rrms).type_as(x) * self.scale


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm attention + MLP, both modulated per token (adaLN-single, PixArt-alpha style).

    The per-token modulation (B, L, 6, D) is computed once from each token's timestep; each block
    adds its own learned table, so per-token timesteps cost one small MLP per forward, not per block.
    """

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.q_norm = RMSNorm(hidden // heads)
        self.k_norm = RMSNorm(hidden // heads)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden)
        )
        self.modulation_table = nn.Parameter(torch.randn(6, hidden) / hidden**0.5)

    def forward(self, x, modulation, rope, mask: SlidingWindowMask, attention_backend: str = "auto"):
        shift1, scale1, gate1, shift2, scale2, gate2 = (modulation + self.modulation_table).unbind(-2)
        qkv = self.qkv(modulate(self.norm1(x), shift1, scale1))
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.heads)
        q, k = apply_rope(self.q_norm(q), rope), apply_rope(self.k_norm(k), rope)
        attended = sliding_window_attention(q, k, v, mask, backend=attention_backend)
        x = x + gate1 * self.proj(rearrange(attended, "b h l d -> b l (h d)"))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.linear = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(nn.functional.silu(t_emb)).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))
