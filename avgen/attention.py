"""Sliding-window attention over the joint audio-video token sequence.

Every token carries a frame index on the shared 40 ms timeline and an `is_global` flag
(reference-image tokens). The mask rule lives in `allowed` and nowhere else:

    allowed(q, k) = is_global[k] or (not is_global[q] and |frame[q] - frame[k]| <= W)

Global tokens are seen by every query; global queries see only global keys; so no row is empty.

Three backends compute the same function (`sliding_window_attention`):
  dense   - SDPA with the (L, L) bool mask: the reference, quadratic in L.
  chunked - CPU path: blocks of consecutive queries attend to the global prefix plus the
            contiguous key range whose frames lie within the block's frames +-W. Linear in L.
  flex    - FlexAttention with a BlockMask from a mask_mod calling `allowed`. Compiled on CUDA;
            eager (unfused, slow, forward-only) on CPU unless AVGEN_FLEX_COMPILE=1.
  auto    - flex on CUDA, chunked elsewhere.

FlexAttention on CPU (torch 2.14) has no backward: inputs that require grad raise
NotImplementedError, so training on CPU uses the chunked path.
"""

import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

CHUNK_TOKENS = 128  # query block size of the chunked path (64-128 fastest of 32-1024: benchmarks/attention.py)


def allowed(q_frame: Tensor, k_frame: Tensor, q_global: Tensor, k_global: Tensor, window_frames: int) -> Tensor:
    """The mask rule (True = q may attend to k). Elementwise; broadcasts."""
    return k_global | (~q_global & ((q_frame - k_frame).abs() <= window_frames))


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
            raise ValueError(f"frame_index {tuple(self.frame_index.shape)} and is_global "
                             f"{tuple(self.is_global.shape)} must both be (L,)")
        if self.window_frames < 0:
            raise ValueError(f"window_frames must be >= 0, got {self.window_frames}")
        self.frame_index = self.frame_index.long()
        self.is_global = self.is_global.bool()

    def __len__(self) -> int:
        return self.frame_index.numel()

    def dense(self) -> torch.BoolTensor:
        """(L, L) allowed matrix, on the device of `frame_index`."""
        if "dense" not in self._cache:
            f, g = self.frame_index, self.is_global
            self._cache["dense"] = allowed(f[:, None], f[None, :], g[:, None], g[None, :], self.window_frames)
        return self._cache["dense"]

    def chunks(self, block_tokens: int = CHUNK_TOKENS) -> list[tuple[int, int, int, int, Tensor]]:
        """Query blocks as (q0, q1, k0, k1, block_mask): queries [q0, q1) attend to the global
        prefix [0, G) followed by keys [k0, k1) (empty for global queries), under the
        (q1 - q0, G + k1 - k0) bool mask from `allowed`."""
        key = ("chunks", block_tokens)
        if key not in self._cache:
            self._cache[key] = self._build_chunks(block_tokens)
        return self._cache[key]

    def _build_chunks(self, block_tokens: int):
        f, g, w = self.frame_index, self.is_global, self.window_frames
        n, n_global = len(self), int(g.sum())
        if not bool(g[:n_global].all()):
            raise ValueError("chunked attention needs the global tokens to form a prefix of the sequence")
        frames = f[n_global:]
        if frames.numel() > 1 and not bool((frames[1:] >= frames[:-1]).all()):
            raise ValueError("chunked attention needs non-global tokens sorted by frame index")

        starts = list(range(0, n_global, block_tokens)) + list(range(n_global, n, block_tokens))
        ends = [min(s + block_tokens, n_global if s < n_global else n) for s in starts]
        lo = hi = torch.zeros(len(starts), dtype=torch.long)
        if frames.numel():  # key range per block from the sorted frames of the non-global tokens
            s, e = torch.tensor(starts), torch.tensor(ends)
            first, last = f[s.clamp(max=n - 1)], f[(e - 1).clamp(min=0)]
            lo = n_global + torch.searchsorted(frames, first - w, right=False).cpu()
            hi = n_global + torch.searchsorted(frames, last + w, right=True).cpu()
        out = []
        for q0, q1, k0, k1 in zip(starts, ends, lo.tolist(), hi.tolist()):
            if q0 < n_global:
                k0 = k1 = n_global  # global queries: global keys only
            kf = torch.cat([f[:n_global], f[k0:k1]])
            kg = torch.cat([g[:n_global], g[k0:k1]])
            m = allowed(f[q0:q1, None], kf[None, :], g[q0:q1, None], kg[None, :], w)
            out.append((q0, q1, k0, k1, m))
        return out

    def block_mask(self, device) -> BlockMask:
        """FlexAttention BlockMask (broadcast over batch and heads) whose mask_mod is `allowed`."""
        device = torch.device(device)
        key = ("flex", str(device))
        if key not in self._cache:
            f, g, w = self.frame_index.to(device), self.is_global.to(device), self.window_frames

            def mask_mod(b, h, q_idx, kv_idx):
                return allowed(f[q_idx], f[kv_idx], g[q_idx], g[kv_idx], w)

            n = len(self)
            self._cache[key] = create_block_mask(mask_mod, None, None, n, n, device=device)
        return self._cache[key]


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.dense().to(q.device))


def _keys(x: Tensor, n_global: int, k0: int, k1: int) -> Tensor:
    """The global prefix followed by x[k0:k1] along the token axis (a view when contiguous)."""
    if k0 == n_global:
        return x[..., :k1, :]
    if n_global == 0:
        return x[..., k0:k1, :]
    return torch.cat([x[..., :n_global, :], x[..., k0:k1, :]], dim=-2)


def chunked_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask,
                      block_tokens: int = CHUNK_TOKENS) -> Tensor:
    n_global = int(mask.is_global.sum())
    outs = [F.scaled_dot_product_attention(q[..., q0:q1, :], _keys(k, n_global, k0, k1),
                                           _keys(v, n_global, k0, k1), attn_mask=m.to(q.device))
            for q0, q1, k0, k1, m in mask.chunks(block_tokens)]
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


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, mask: SlidingWindowMask,
                             backend: str = "auto") -> Tensor:
    """q, k, v: (B, H, L, Dh) -> (B, H, L, Dh), attention under `mask`."""
    if q.shape[-2] != len(mask) or k.shape[-2] != len(mask):
        raise ValueError(f"sequence length {q.shape[-2]} does not match the mask's {len(mask)} tokens")
    if backend == "auto":
        backend = "flex" if q.device.type == "cuda" else "chunked"
    if backend == "dense":
        return dense_attention(q, k, v, mask)
    if backend == "chunked":
        return chunked_attention(q, k, v, mask)
    if backend == "flex":
        return flex_sliding_attention(q, k, v, mask)
    raise ValueError(f"unknown attention backend {backend!r}: use auto, dense, chunked or flex")
