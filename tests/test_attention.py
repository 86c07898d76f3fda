import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from avgen.attention import SlidingWindowMask, allowed, chunked_attention, sliding_window_attention

VIDEO_PER_FRAME = 16  # tiny preset: 16 video patches + 1 audio latent per 40 ms frame


def frames_layout(counts, n_global=0):
    """Frame index and global flags: `n_global` reference tokens, then counts[j] tokens of frame j."""
    counts = torch.as_tensor(counts, dtype=torch.long)
    frames = torch.arange(len(counts)).repeat_interleave(counts)
    frame_index = torch.cat([torch.zeros(n_global, dtype=torch.long), frames])
    is_global = torch.arange(len(frame_index)) < n_global
    return frame_index, is_global


def av_counts(n_frames):
    return [VIDEO_PER_FRAME + 1] * n_frames


def irregular_counts(n_frames, seed=0):  # 0..6 tokens per frame, gaps included
    return torch.randint(0, 7, (n_frames,), generator=torch.Generator().manual_seed(seed)).tolist()


LAYOUTS = {
    "17_tokens": av_counts(1),
    "170_tokens": av_counts(10),
    "1020_tokens": av_counts(60),
    "irregular": irregular_counts(120),
}


def qkv(n, batch=2, heads=3, dim=16, dtype=torch.float32, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=g).to(dtype).requires_grad_(requires_grad) for _ in range(3)]


def brute_force_mask(frame_index, is_global, window):
    f, g = frame_index.tolist(), is_global.tolist()
    return torch.tensor(
        [[g[k] or (not g[q] and abs(f[q] - f[k]) <= window) for k in range(len(f))] for q in range(len(f))]
    )


@pytest.mark.parametrize("window", [0, 2])
def test_dense_mask_follows_the_rule_globals_seen_by_all_and_global_queries_see_only_globals(window):
    f = torch.tensor([3, 0, 0, 1, 2, 2, 5, 9])  # globals at positions 0 and 5: not a prefix
    g = torch.tensor([1, 0, 0, 0, 0, 1, 0, 0], dtype=torch.bool)
    dense = SlidingWindowMask(f, g, window).dense()
    assert torch.equal(dense, brute_force_mask(f, g, window))
    assert dense.any(dim=1).all()  # no empty row
    assert torch.equal(allowed(f[:, None], f[None, :], g[:, None], g[None, :], window), dense)


@pytest.mark.parametrize("n_global", [0, 4])
@pytest.mark.parametrize("window", [0, 1, 5, 12, 1000])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunked_equals_dense(layout, window, n_global):
    mask = SlidingWindowMask(*frames_layout(LAYOUTS[layout], n_global), window)
    q, k, v = qkv(len(mask.frame_index))
    dense = sliding_window_attention(q, k, v, mask, backend="dense")
    assert (sliding_window_attention(q, k, v, mask, backend="chunked") - dense).abs().max() <= 1e-5
    # tiny blocks: many blocks, L not a multiple of the block size, blocks splitting frames
    assert (chunked_attention(q, k, v, mask, block_tokens=7) - dense).abs().max() <= 1e-5


def test_chunked_takes_a_strided_frame_index_silently():
    """A frame index that is a view with a stride (as the model can pass) gives the dense result,
    without torch's warning about searching a non-contiguous boundary tensor."""
    frame_index, is_global = frames_layout(av_counts(6), n_global=2)
    strided = torch.stack([frame_index, frame_index], dim=1)[:, 0]
    assert not strided.is_contiguous()
    mask = SlidingWindowMask(strided, is_global, 1)
    q, k, v = qkv(len(frame_index))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chunked = chunked_attention(q, k, v, mask, block_tokens=7)
    assert (chunked - sliding_window_attention(q, k, v, mask, backend="dense")).abs().max() <= 1e-5


@pytest.mark.parametrize("n_tokens", [1, 3, 300])
def test_chunked_handles_only_global_tokens(n_tokens):
    mask = SlidingWindowMask(*frames_layout([], n_global=n_tokens), 3)
    q, k, v = qkv(n_tokens)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # globals see all globals
    for backend in ["dense", "chunked"]:
        assert (sliding_window_attention(q, k, v, mask, backend=backend) - expected).abs().max() <= 1e-5


def test_chunked_with_window_zero_and_one_token_per_frame_is_attention_to_itself_and_globals():
    mask = SlidingWindowMask(*frames_layout([1] * 50, n_global=0), 0)
    q, k, v = qkv(50)
    assert (sliding_window_attention(q, k, v, mask, backend="chunked") - v).abs().max() <= 1e-5


def test_chunked_bf16_matches_dense_bf16_and_keeps_dtype():
    mask = SlidingWindowMask(*frames_layout(av_counts(30), n_global=4), 5)
    q, k, v = qkv(len(mask.frame_index), dtype=torch.bfloat16)
    out = sliding_window_attention(q, k, v, mask, backend="chunked")
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    reference = sliding_window_attention(*(x.float() for x in (q, k, v)), mask, backend="dense")
    assert (out.float() - reference).abs().max() <= 3e-2


@pytest.mark.parametrize("n_global", [0, 3])
def test_chunked_gradients_match_dense(n_global):
    mask = SlidingWindowMask(*frames_layout(irregular_counts(80, seed=1), n_global), 4)
    n = len(mask.frame_index)
    upstream = torch.randn(2, 3, n, 16, generator=torch.Generator().manual_seed(9))
    grads = {}
    for backend in ["dense", "chunked"]:
        q, k, v = qkv(n, requires_grad=True)
        (sliding_window_attention(q, k, v, mask, backend=backend) * upstream).sum().backward()
        grads[backend] = [q.grad, k.grad, v.grad]
    for gd, gc in zip(grads["dense"], grads["chunked"]):
        assert (gd - gc).abs().max() <= 1e-5


def test_chunked_is_sliding_key_ranges_are_bounded_on_a_long_sequence():
    n_frames, window, n_global, per_frame = 2000, 12, 4, VIDEO_PER_FRAME + 1
    mask = SlidingWindowMask(*frames_layout(av_counts(n_frames), n_global), window)
    n = len(mask.frame_index)  # 34004 tokens: a dense mask would be 1.2 G entries
    f = mask.frame_index
    groups = mask.chunks(block_tokens=128)
    assert (groups[0].q0, groups[0].q1) == (0, n_global) and groups[-1].q1 == n
    assert len(groups) < n / 1000  # a few SDPA calls, not one per block
    for grp in groups[1:]:
        n_blocks, _, block, n_keys = grp.mask.shape
        assert block == 128 and grp.q_index.shape == (n_blocks * block,)
        ranges = grp.key_range[:, 1] - grp.key_range[:, 0]
        assert n_keys == n_global + int(ranges.max())
        assert n_keys <= n_global + (2 * window + 9) * per_frame  # 128 tokens span <= 8 frames
        queries = grp.q_index.view(n_blocks, block)
        for (lo, hi), qs in zip(grp.key_range.tolist(), queries):
            span = int(f[qs[-1]] - f[qs[0]])
            assert int(f[hi - 1] - f[lo]) <= 2 * window + span
            assert hi - lo <= (2 * window + span + 1) * per_frame
    q, k, v = qkv(n, batch=1, heads=2, dim=16)
    out = sliding_window_attention(q, k, v, mask, backend="chunked")
    assert "dense" not in mask._cache  # never built the (L, L) mask
    # spot-check rows against attention computed from the rule for just those rows
    rows = torch.tensor([0, n_global, n_global + 5000, n // 2, n - 1])
    row_mask = allowed(f[rows, None], f[None, :], mask.is_global[rows, None], mask.is_global[None, :], window)
    scores = (q[..., rows, :] @ k.transpose(-1, -2)) / 4.0
    expected = scores.masked_fill(~row_mask, float("-inf")).softmax(-1) @ v
    assert (out[..., rows, :] - expected).abs().max() <= 1e-5


def test_one_mask_serves_every_layer_and_batch_shape():
    mask = SlidingWindowMask(*frames_layout(irregular_counts(40), n_global=2), 3)
    n = len(mask.frame_index)
    for batch, heads in [(1, 1), (3, 2)]:
        q, k, v = qkv(n, batch=batch, heads=heads)
        out = sliding_window_attention(q, k, v, mask, backend="chunked")
        assert out.shape == q.shape
        assert (out - sliding_window_attention(q, k, v, mask, backend="dense")).abs().max() <= 1e-5
    assert mask.chunks() is mask.chunks() and mask.dense() is mask.dense()


def test_chunked_rejects_globals_that_are_not_a_prefix_and_unsorted_frames():
    q, k, v = qkv(4)
    not_prefix = SlidingWindowMask(torch.tensor([0, 0, 1, 2]), torch.tensor([False, True, False, False]), 1)
    with pytest.raises(ValueError, match="prefix"):
        sliding_window_attention(q, k, v, not_prefix, backend="chunked")
    unsorted = SlidingWindowMask(torch.tensor([0, 2, 1, 3]), torch.zeros(4, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="sorted"):
        sliding_window_attention(q, k, v, unsorted, backend="chunked")


def test_mismatched_lengths_and_unknown_backend_are_errors():
    mask = SlidingWindowMask(*frames_layout(av_counts(2)), 1)
    q, k, v = qkv(len(mask.frame_index))
    with pytest.raises(ValueError, match="backend"):
        sliding_window_attention(q, k, v, mask, backend="magic")
    with pytest.raises(ValueError, match="length"):
        sliding_window_attention(q[..., :-1, :], k, v, mask)


def test_auto_uses_chunked_on_cpu_and_supports_training():
    mask = SlidingWindowMask(*frames_layout(av_counts(20), n_global=2), 3)
    q, k, v = qkv(len(mask.frame_index), requires_grad=True)
    sliding_window_attention(q, k, v, mask).sum().backward()  # flex has no CPU backward
    assert "dense" not in mask._cache and q.grad is not None


EAGER_FLEX = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
# (layout, window, n_global): L = 170, 1024 (a multiple of 128), 348, 19, 320 (150 globals: whole and mixed
# global blocks), 355
FLEX_CASES = [
    ("170_tokens", 1, 4),
    ("1020_tokens", 12, 4),
    ("irregular", 5, 0),
    ("17_tokens", 1000, 2),
    ("170_tokens", 0, 150),
    ("irregular", 2, 7),
]
# moderate lengths for comparing tiles: (counts, n_global, window)
TILE_CASES = [
    (av_counts(180), 16, 12),
    (irregular_counts(600), 5, 3),
    (irregular_counts(600), 0, 0),
    (av_counts(100), 200, 2),
    ([], 300, 3),
    ([3] * 100, 128, 7),
    (av_counts(60), 4, 1000),
    ([1] * 600, 0, 127),
    ([1] * 600, 3, 126),
    ([1] * 600, 0, 254),
]  # 1 token per frame: at the edge of full


def flex_tensors(block_mask):
    names = [
        "kv_num_blocks",
        "kv_indices",
        "full_kv_num_blocks",
        "full_kv_indices",
        "q_num_blocks",
        "q_indices",
        "full_q_num_blocks",
        "full_q_indices",
    ]
    return {name: getattr(block_mask, name) for name in names}


@pytest.mark.parametrize("layout,window,n_global", FLEX_CASES)
def test_flex_block_mask_equals_dense_mask(layout, window, n_global):
    mask = SlidingWindowMask(*frames_layout(LAYOUTS[layout], n_global), window)
    n = len(mask.frame_index)
    block_mask = mask.block_mask("cpu")
    dense = mask.dense()
    assert torch.equal(create_mask(block_mask.mask_mod, None, None, n, n, device="cpu")[0, 0], dense)
    # the kernel visits listed tiles only and skips the mask_mod on full ones: a tile is listed iff some
    # pair in it is allowed, and full iff every pair is (padding past L counts as not allowed)
    bq, bk = block_mask.BLOCK_SIZE
    tiles = block_mask.to_dense()[0, 0].bool()
    padded = torch.zeros(tiles.shape[0] * bq, tiles.shape[1] * bk, dtype=torch.bool)
    padded[:n, :n] = dense
    padded = padded.view(tiles.shape[0], bq, tiles.shape[1], bk)
    assert torch.equal(tiles, padded.any(3).any(1))
    full_tiles = torch.zeros_like(tiles)
    for row, (count, index) in enumerate(zip(block_mask.full_kv_num_blocks[0, 0], block_mask.full_kv_indices[0, 0])):
        full_tiles[row, index[:count].long()] = True
    assert torch.equal(full_tiles, padded.all(3).all(1))
    assert "dense" in mask._cache  # built above for the comparison only


@pytest.mark.parametrize("counts,n_global,window", TILE_CASES)
def test_flex_block_mask_is_the_one_create_block_mask_makes_from_the_mask(counts, n_global, window):
    mask = SlidingWindowMask(*frames_layout(counts, n_global), window)
    block_mask = mask.block_mask("cpu")
    assert "dense" not in mask._cache
    n, f, g = len(mask), mask.frame_index, mask.is_global
    expected = create_block_mask(
        lambda b, h, q, k: allowed(f[q], f[k], g[q], g[k], window), None, None, n, n, device="cpu"
    )  # evaluates the (L, L) mask
    assert block_mask.seq_lengths == expected.seq_lengths == (n, n)
    assert block_mask.BLOCK_SIZE == expected.BLOCK_SIZE
    for name, tensor in flex_tensors(expected).items():  # partial and full, the transposed ones too
        assert torch.equal(getattr(block_mask, name), tensor), name


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n_global,per_frame,n_frames,window", [(16, 17, 1927, 12), (256, 257, 125, 25)])
def test_flex_block_mask_for_32k_tokens_needs_a_few_mb_not_the_l_by_l_mask(n_global, per_frame, n_frames, window):
    """32,775 tokens (tiny layout) and 32,381 (a base-preset chunk). The build runs in a fresh process
    (benchmarks/flex_mask.py's worker) that resets its peak resident set just before it and reports the
    peak growth: every page written counts, torch's included. The (L, L) build (create_block_mask) asks
    for 8.6 GB at once and fails under the child's 1 GiB address-space cap."""
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident set")
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "flex_mask.py"),
        "--worker",
        "new",
        *map(str, [n_global, per_frame, n_frames, window]),
        "1024",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result
    assert result["tokens"] == n_global + per_frame * n_frames
    assert result["peak_mb"] < 200, result
    assert result["kv_blocks"] + result["full_kv_blocks"] > result["tokens"] // 128  # every row lists tiles


@EAGER_FLEX
@pytest.mark.parametrize("layout,window,n_global", FLEX_CASES)
def test_flex_equals_dense_eager_on_cpu(layout, window, n_global, monkeypatch):
    monkeypatch.setenv("AVGEN_FLEX_COMPILE", "0")
    mask = SlidingWindowMask(*frames_layout(LAYOUTS[layout], n_global), window)
    q, k, v = qkv(len(mask.frame_index))
    dense = sliding_window_attention(q, k, v, mask, backend="dense")
    assert (sliding_window_attention(q, k, v, mask, backend="flex") - dense).abs().max() <= 1e-5


def test_flex_rejects_globals_that_are_not_a_prefix_like_chunked():
    f = torch.tensor([0, 0, 0, 1, 1, 7, 2, 2, 3, 9, 4, 4])
    g = torch.tensor([0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], dtype=torch.bool)
    mask = SlidingWindowMask(f, g, 1)
    q, k, v = qkv(len(f))
    with pytest.raises(ValueError, match="prefix"):
        sliding_window_attention(q, k, v, mask, backend="flex")
    assert sliding_window_attention(q, k, v, mask, backend="dense").shape == q.shape  # dense takes any layout


@pytest.mark.skipif(
    os.environ.get("AVGEN_TEST_FLEX_COMPILE") != "1",
    reason="torch.compile of flex_attention takes ~25 s on this CPU; set AVGEN_TEST_FLEX_COMPILE=1",
)
def test_flex_compiled_on_cpu_equals_dense(monkeypatch):
    monkeypatch.setenv("AVGEN_FLEX_COMPILE", "1")
    mask = SlidingWindowMask(*frames_layout(LAYOUTS["1020_tokens"], 4), 12)
    q, k, v = qkv(len(mask.frame_index))
    dense = sliding_window_attention(q, k, v, mask, backend="dense")
    assert (sliding_window_attention(q, k, v, mask, backend="flex") - dense).abs().max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (compiled FlexAttention, the GPU path)")
@pytest.mark.parametrize("counts,n_global,window", TILE_CASES[:4] + [(av_counts(1927), 16, 12)])
def test_flex_on_cuda_equals_dense_forward_and_backward(counts, n_global, window):
    mask = SlidingWindowMask(*(t.cuda() for t in frames_layout(counts, n_global)), window)
    n = len(mask)
    f, g = mask.frame_index, mask.is_global
    expected = create_block_mask(
        lambda b, h, q, k: allowed(f[q], f[k], g[q], g[k], window), None, None, n, n, device="cuda"
    )
    for name, tensor in flex_tensors(expected).items():
        assert torch.equal(getattr(mask.block_mask("cuda"), name), tensor), name
    upstream = torch.randn(1, 2, n, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    grads = {}
    for backend in ["dense", "flex"]:  # flex: compiled on CUDA
        q, k, v = (x.cuda().requires_grad_() for x in qkv(n, batch=1, heads=2, dim=64))
        out = sliding_window_attention(q, k, v, mask, backend=backend)
        (out * upstream).sum().backward()
        grads[backend] = [out.detach(), q.grad, k.grad, v.grad]
    for name, a, b in zip(["out", "dq", "dk", "dv"], grads["dense"], grads["flex"]):
        assert (a - b).abs().max() <= 2e-3 * a.abs().max().clamp(min=1), name
