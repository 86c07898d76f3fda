"""Sliding-window attention over the joint audio-video token sequence.

Every token carries a frame index on the shared 40 ms timeline and an `is_global` flag
(reference-image tokens). The mask rule lives in `allowed` and nowhere else:

    allowed(q, k) = is_global[k] or (not is_global[q] and |frame[q] - frame[k]| <= W)

Global tokens are seen by every query; global queries see only global keys; so no row is empty.

Backends of `sliding_window_attention`, all computing the same function:
  dense   - SDPA with the (L, L) bool mask: the reference, quadratic in L.
  chunked - CPU path: blocks of consecutive queries attend to the global prefix plus the
            contiguous key range whose frames lie within the block's frames +-W (searchsorted on
            the sorted frames), under an exact bool mask. Blocks are gathered into groups and
            padded so one SDPA call does up to GROUP_TOKENS queries: time and memory linear in L,
            and few parallel regions (many small calls stall when other processes share the cores).
  flex    - FlexAttention with a BlockMask built from the same key ranges, 128 x 128 tiles marked
            full (every pair allowed: mask skipped) or partial (mask_mod calling `allowed`) from the
            blocks' frame bounds: O((L/128)^2) memory, never the (L, L) mask (create_block_mask's
            ~17 bytes per pair: 16 GB at L = 32k). Compiled on CUDA; eager (unfused, slow,
            forward-only, and it evaluates the mask over all (L, L) pairs) on CPU unless
            AVGEN_FLEX_COMPILE=1. Needs the chunked path's layout.
  auto    - flex on CUDA, chunked elsewhere; the environment variable AVGEN_ATTENTION_BACKEND overrides.

FlexAttention on CPU (torch 2.14) has no backward: inputs that require grad raise
NotImplementedError, so training on CPU uses the chunked path.
"""

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

GROUP_TOKENS = 4096  # queries per SDPA call: few calls (robust on a busy CPU), bounded memory per call
CHUNK_TOKENS = 128  # query block size of the chunked path (64-128 fastest of 32-1024: benchmarks/attention.py)
FLEX_BLOCK_TOKENS = 128  # FlexAttention's tile (its default BLOCK_SIZE)


def allowed(q_frame: Tensor, k_frame: Tensor, q_global: Tensor, k_global: Tensor, window_frames: int) -> Tensor:
    """The mask rule (True = q may attend to k). Elementwise; broadcasts."""
    return k_global | (~q_global & ((q_frame - k_frame).abs() <= window_frames))


@dataclass
class QueryGroup:
    """Consecutive queries [q0, q1) split into blocks of `block_tokens`; each block attends to the
    global prefix and then to the key range [lo, hi) around its frames. One SDPA call per group."""

    q0: int
    q1: int
    q_index: Tensor  # (n_blocks * block_tokens,) token of each query slot; the last block repeats q1 - 1
    k_index: Tensor  # (n_blocks * n_keys,) per block: the global prefix, then its range (padded)
    mask: Tensor  # (n_blocks, 1, block_tokens, n_keys) allowed(q, k) and k is a real key of the block
    key_range: Tensor  # (n_blocks, 2) [lo, hi) of each block's non-global keys


@dataclass
class SlidingWindowMask:
    """Per-token frame index and global flag; build once per forward pass, reuse in every layer.

    Derived structures (dense mask, chunk ranges, flex BlockMask) are built lazily and cached.
    The chunked path needs the global tokens to form a prefix and the rest to be sorted by frame.
    """

    frame_index: torch.LongTensor  # (L,)
    is_global: torch.BoolTensor  # (L,)
    window_frames: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.frame_index.ndim != 1 or self.frame_index.shape != self.is_global.shape:
            raise ValueError(
                f"frame_index {tuple(self.frame_index.shape)} and is_global "
                f"{tuple(self.is_global.shape)} must both be (L,)"
            )
        if self.window_frames < 0:
            raise ValueError(f"window_frames must be >= 0, got {self.window_frames}")
        self.frame_index = self.frame_index.long()
        self.is_global = self.is_global.bool()

    def __len__(self) -> int:
        return self.frame_index.numel()

    def dense(self) -> torch.BoolTensor:
        """(L, L) allowed matrix, on the device of `frame_index`."""
        if "dense" not in self._cache:
            f, g = self.frame_index.int(), self.is_global
            self._cache["dense"] = allowed(f[:, None], f[None, :], g[:, None], g[None, :], self.window_frames)
        return self._cache["dense"]

    def chunks(self, block_tokens: int = CHUNK_TOKENS) -> list["QueryGroup"]:
        """The chunked path's plan: groups of query blocks, each group one SDPA call."""
        key = ("chunks", block_tokens)
        if key not in self._cache:
            self._cache[key] = self._plan(block_tokens)
        return self._cache[key]

    def _n_global(self) -> int:
        """Number of global tokens, after checking the layout the key-range paths (chunked, flex) need:
        the global tokens form a prefix and the rest are sorted by frame."""
        if "n_global" not in self._cache:
            f, g = self.frame_index, self.is_global
            n_global = int(g.sum())
            if not bool(g[:n_global].all()):
                raise ValueError("chunked and flex attention need the global tokens to form a prefix of the sequence")
            frames = f[n_global:]
            if frames.numel() > 1 and not bool((frames[1:] >= frames[:-1]).all()):
                raise ValueError("chunked and flex attention need non-global tokens sorted by frame index")
            self._cache["n_global"] = n_global
        return self._cache["n_global"]

    def _key_range(self, first: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
        """[lo, hi) per query block: the non-global keys whose frames lie within [frame[first] - W,
        frame[last] + W], where first/last are the block's first/last non-global queries."""
        f, w, n_global = self.frame_index, self.window_frames, self._n_global()
        frames = f[n_global:].contiguous()
        lo = n_global + torch.searchsorted(frames, f[first] - w)
        hi = n_global + torch.searchsorted(frames, f[last] + w, right=True)
        return lo, hi

    def _plan(self, block_tokens: int) -> list["QueryGroup"]:
        n, n_global = len(self), self._n_global()
        groups = [self._group(0, n_global, n_global)] if n_global else []
        step = max(block_tokens, GROUP_TOKENS // block_tokens * block_tokens)
        groups += [self._group(q0, min(q0 + step, n), block_tokens) for q0 in range(n_global, n, step)]
        return groups

    def _group(self, q0: int, q1: int, block_tokens: int) -> "QueryGroup":
        f, g, w = self.frame_index, self.is_global, self.window_frames
        n, n_global = len(self), self._n_global()
        n_blocks = -(-(q1 - q0) // block_tokens)
        q_index = (q0 + torch.arange(n_blocks * block_tokens, device=f.device)).clamp(max=q1 - 1)
        q_index = q_index.view(n_blocks, block_tokens)  # the last block is padded with copies of q1 - 1
        if q0 < n_global:  # global queries: global keys only
            lo = hi = torch.full((n_blocks,), n_global, device=f.device)
        else:
            lo, hi = self._key_range(q_index[:, 0], q_index[:, -1])
        span = torch.arange(int((hi - lo).max()), device=f.device)
        k_index = torch.cat(
            [torch.arange(n_global, device=f.device).expand(n_blocks, -1), (lo[:, None] + span).clamp(max=n - 1)], dim=1
        )
        real = torch.cat(
            [torch.ones(n_blocks, n_global, dtype=torch.bool, device=f.device), lo[:, None] + span < hi[:, None]], dim=1
        )
        f32 = f.int()  # half the memory traffic of int64 in this (blocks, queries, keys) build
        mask = (
            allowed(
                f32[q_index][:, :, None], f32[k_index][:, None, :], g[q_index][:, :, None], g[k_index][:, None, :], w
            )
            & real[:, None, :]
        )
        return QueryGroup(q0, q1, q_index.flatten(), k_index.flatten(), mask[:, None], torch.stack([lo, hi], 1))

    def block_tiles(self, block_tokens: int = FLEX_BLOCK_TOKENS) -> tuple[Tensor, Tensor]:
        """(partial, full): (n_blocks, n_blocks) bools over tiles of `block_tokens` queries x keys (blocks
        start at token 0). A tile is full when the rule allows every pair in it and partial when it allows
        some but not all; the last block, if cut short, is never full (as in create_block_mask). Built
        from each query block's key range and the frame bounds of each block: O((L / block)^2) memory,
        no (L, L) mask. Needs the layout of `chunks` (global prefix, then tokens sorted by frame)."""
        f, w, n, n_global = self.frame_index, self.window_frames, len(self), self._n_global()
        start = torch.arange(0, n, block_tokens, device=f.device)
        end = (start + block_tokens).clamp(max=n)
        first, last = start.clamp(min=n_global, max=n - 1), end - 1  # the block's first/last non-global token
        has_global, has_local, all_global = start < n_global, end > n_global, end <= n_global
        lo, hi = self._key_range(first, last)
        kv = torch.arange(len(start), device=f.device)[None, :]
        in_range = (kv >= (lo // block_tokens)[:, None]) & (kv * block_tokens < hi[:, None])
        touched = has_global[None, :] | (has_local[:, None] & in_range)  # exact: frames are sorted
        f_min, f_max = f[first], f[last]  # frame bounds of each block's non-global tokens
        near = (f_max[None, :] - f_min[:, None] <= w) & (f_max[:, None] - f_min[None, :] <= w)
        whole = end - start == block_tokens
        full = whole[:, None] & whole[None, :] & (all_global[None, :] | (~has_global[:, None] & near))
        return touched & ~full, full

    def block_mask(self, device) -> BlockMask:
        """FlexAttention BlockMask (broadcast over batch and heads) from `block_tiles`: the kernel applies
        the mask_mod, `allowed`, on partial tiles only."""
        device = torch.device(device)
        key = ("flex", str(device))
        if key not in self._cache:
            f, g, w = self.frame_index.to(device), self.is_global.to(device), self.window_frames

            def mask_mod(b, h, q_idx, kv_idx):
                return allowed(f[q_idx], f[kv_idx], g[q_idx], g[kv_idx], w)

            partial, full = (_ordered(t.to(device)) for t in self.block_tiles(FLEX_BLOCK_TOKENS))
            self._cache[key] = BlockMask.from_kv_blocks(
                *partial, *full, BLOCK_SIZE=FLEX_BLOCK_TOKENS, mask_mod=mask_mod, seq_lengths=(len(self), len(self))
            )
        return self._cache[key]


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """BlockMask's per-row (count, ascending column indices) form of (rows, cols) bool tiles, as (1, 1, ...)."""
    count = tiles.sum(-1, dtype=torch.int32)
    index = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return count[None, None].contiguous(), index[None, None].contiguous()


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense().to(q.device))


def chunked_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask, block_tokens: int = CHUNK_TOKENS
) -> Tensor:
    outs = []
    for grp in mask.chunks(block_tokens):
        n_blocks, q_index, k_index = grp.mask.shape[0], grp.q_index.to(q.device), grp.k_index.to(q.device)
        qb, kb, vb = (
            rearrange(x.index_select(-2, i), "b h (n t) d -> n (b h) t d", n=n_blocks)
            for x, i in ((q, q_index), (k, k_index), (v, k_index))
        )
        o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=grp.mask.to(q.device))
        outs.append(rearrange(o, "n (b h) t d -> b h (n t) d", b=q.shape[0])[..., : grp.q1 - grp.q0, :])
    return torch.cat(outs, dim=-2)


_compiled_flex = None


def flex_sliding_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask) -> Tensor:
    """Compiled FlexAttention on CUDA; eager on CPU (a slow, forward-only reference) unless
    AVGEN_FLEX_COMPILE=1 (compile everywhere; first call compiles, ~15-30 s on CPU).
    AVGEN_FLEX_COMPILE=0 forces eager everywhere."""
    global _compiled_flex
    env = os.environ.get("AVGEN_FLEX_COMPILE")
    compiled = q.device.type == "cuda" if env is None else env == "1"
    fn = flex_attention
    if compiled:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)
        fn = _compiled_flex
    return fn(q, k, v, block_mask=mask.block_mask(q.device))


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask, backend: str = "auto") -> Tensor:
    """q, k, v: (B, H, L, Dh) -> (B, H, L, Dh), attention under `mask`."""
    if q.shape[-2] != len(mask) or k.shape[-2] != len(mask):
        raise ValueError(f"sequence length {q.shape[-2]} does not match the mask's {len(mask)} tokens")
    if backend == "auto":  # AVGEN_ATTENTION_BACKEND overrides the choice (e.g. dense where flex cannot compile)
        backend = os.environ.get("AVGEN_ATTENTION_BACKEND") or ("flex" if q.device.type == "cuda" else "chunked")
    if backend == "dense":
        return dense_attention(q, k, v, mask)
    if backend == "chunked":
        return chunked_attention(q, k, v, mask)
    if backend == "flex":
        return flex_sliding_attention(q, k, v, mask)
    raise ValueError(f"unknown attention backend {backend!r}: use auto, dense, chunked or flex")
