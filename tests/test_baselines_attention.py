"""Baseline spiking attention (`ge2mst.baselines.attention`): the attention functions against
hand-computed values and plain-loop references, windows and shifted windows against explicit N x N
masks, locality of windows and channel groups, the grouped projection, the registry, input checks
and surrogate gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ge2mst import ConfigError, InputError
from ge2mst.baselines import LIF, TernaryLIF
from ge2mst.baselines import attention as att
from ge2mst.baselines.attention import (
    A2OS2A,
    ATTENTION,
    ChannelGroupSSA,
    GroupedProjection,
    SpikingSelfAttention,
    WindowSSA,
    build_attention,
    linear_attention,
    quadratic_attention,
    register_attention,
    shifted_window_mask,
    window_attention,
)

F64 = torch.float64


# ---- helpers: independent references -----------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def a2o_qkv(T, B, H, N, d, seed=0):
    """Binary Q, ReLU (non-negative real) K, ternary V, float64."""
    g = gen(seed)
    q = (torch.rand(T, B, H, N, d, generator=g, dtype=F64) < 0.5).to(F64)
    k = torch.relu(torch.randn(T, B, H, N, d, generator=g, dtype=F64))
    v = torch.randint(-1, 2, (T, B, H, N, d), generator=g).to(F64)
    return q, k, v


def real_qkv(T, B, H, N, d, seed=0):
    g = gen(seed)
    return tuple(torch.randn(T, B, H, N, d, generator=g, dtype=F64) for _ in range(3))


def loop_attention(q, k, v):
    """sum_m (sum_c q[n, c] k[m, c]) v[m, e], by plain loops over tokens and channels."""
    T, B, H, N, d = q.shape
    dv = v.shape[-1]
    out = torch.zeros(T, B, H, N, dv, dtype=F64)
    for t, b, h in itertools.product(range(T), range(B), range(H)):
        for n in range(N):
            for m in range(N):
                score = sum(float(q[t, b, h, n, c]) * float(k[t, b, h, m, c]) for c in range(d))
                for e in range(dv):
                    out[t, b, h, n, e] += score * float(v[t, b, h, m, e])
    return out


def masked_attention(q, k, v, mask, scale):
    """((q k^T) * mask * scale) v with an explicit N x N mask."""
    return ((q @ k.transpose(-2, -1)) * mask.to(q.dtype) * scale) @ v


def plain_window_mask(grid, win):
    """N x N: tokens i, j (row-major on the h x w grid) lie in the same non-shifted window."""
    h, w = grid
    wh, ww = min(win[0], h), min(win[1], w)
    mask = torch.zeros(h * w, h * w, dtype=torch.bool)
    for i in range(h * w):
        ri, ci = divmod(i, w)
        for j in range(h * w):
            rj, cj = divmod(j, w)
            mask[i, j] = ri // wh == rj // wh and ci // ww == cj // ww
    return mask


def swin_mask(grid, win):
    """N x N shifted-window mask from Swin's recipe, by explicit index arithmetic: roll the grid by
    (-wh // 2, -ww // 2) (an axis covered by one window is not rolled), cut windows of the rolled
    grid, label the regions of the rolled grid with the slices [0, L - win), [L - win, L - s),
    [L - s, L) per axis, let two tokens attend when they share a rolled window and a region, and
    map rolled positions back to the original token indices."""
    h, w = grid
    wh, ww = min(win[0], h), min(win[1], w)
    sh = wh // 2 if wh < h else 0
    sw = ww // 2 if ww < w else 0

    def label(pos, length, window, s):
        if s == 0 or pos < length - window:
            return 0
        return 1 if pos < length - s else 2

    def original(a, b):  # rolled position (a, b) holds this original token (roll by -s)
        return ((a + sh) % h) * w + (b + sw) % w

    mask = torch.zeros(h * w, h * w, dtype=torch.bool)
    for a, b, a2, b2 in itertools.product(range(h), range(w), range(h), range(w)):
        same_window = a // wh == a2 // wh and b // ww == b2 // ww
        same_region = (label(a, h, wh, sh) == label(a2, h, wh, sh)
                       and label(b, w, ww, sw) == label(b2, w, ww, sw))
        if same_window and same_region:
            mask[original(a, b), original(a2, b2)] = True
    return mask


def shifted_blocks_mask(grid, win):
    """The same shifted windows described in original coordinates: along an axis shifted by s,
    window boundaries sit at s, s + win, ...; positions before s form their own (wrapped) piece.
    Tokens attend when floor((r - s) / win) agrees on both axes (no modular arithmetic)."""
    h, w = grid
    wh, ww = min(win[0], h), min(win[1], w)
    sh = wh // 2 if wh < h else 0
    sw = ww // 2 if ww < w else 0
    mask = torch.zeros(h * w, h * w, dtype=torch.bool)
    for i, j in itertools.product(range(h * w), repeat=2):
        (ri, ci), (rj, cj) = divmod(i, w), divmod(j, w)
        mask[i, j] = (ri - sh) // wh == (rj - sh) // wh and (ci - sw) // ww == (cj - sw) // ww
    return mask


def calibrate(module: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``x`` (one train-mode pass with
    momentum 1), then switch to eval mode, so that eval-mode neurons actually fire."""
    for mod in module.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.momentum = 1.0
    module.train()
    with torch.no_grad():
        module(x)
    return module.eval()


#: neuron settings under which the small SSA modules of these tests fire (with the defaults,
#: tau = 2 and v_threshold = 1, a 16-channel SSA at initialisation is almost silent, its attention
#: neuron never fires and no gradient reaches the output projection)
LIVELY = {"tau": 1.0, "v_threshold": 0.5}


def spikes(shape, seed=0, p=0.5, dtype=F64):
    return (torch.rand(*shape, generator=gen(seed), dtype=dtype) < p).to(dtype)


# ---- linear / quadratic attention --------------------------------------------------------------


def test_attention_functions_hand_computed():
    # Q K^T = [[1, 3], [2, 0]]; (Q K^T) V = [1*(1,-1) + 3*(0,1), 2*(1,-1)] = [(1, 2), (2, -2)]
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64).view(1, 1, 1, 2, 2)
    k = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=F64).view(1, 1, 1, 2, 2)
    v = torch.tensor([[1.0, -1.0], [0.0, 1.0]], dtype=F64).view(1, 1, 1, 2, 2)
    expected = torch.tensor([[1.0, 2.0], [2.0, -2.0]], dtype=F64).view(1, 1, 1, 2, 2)
    assert torch.equal(linear_attention(q, k, v), expected)
    assert torch.equal(quadratic_attention(q, k, v), expected)


def test_attention_functions_match_triple_loop():
    q, k, v = a2o_qkv(2, 1, 2, 5, 3, seed=1)
    ref = loop_attention(q, k, v)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(linear_attention(q, k, v), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(quadratic_attention(q, k, v), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 4, 7, 5), (1, 2, 2, 64, 8),
                                   (3, 1, 6, 17, 16), (2, 2, 1, 5, 32)])
def test_linear_equals_quadratic(shape):
    q, k, v = a2o_qkv(*shape, seed=sum(shape))
    lin, quad = linear_attention(q, k, v), quadratic_attention(q, k, v)
    assert lin.shape == shape and lin.dtype == F64
    assert torch.allclose(lin, quad, rtol=1e-12, atol=1e-10)
    # and both are the explicit score-matrix sum, head by head
    ref = torch.einsum("tbhnc,tbhmc,tbhme->tbhne", q, k, v)
    assert torch.allclose(lin, ref, rtol=1e-12, atol=1e-10)


def test_attention_functions_check_shapes():
    q, k, v = a2o_qkv(1, 1, 1, 4, 2)
    with pytest.raises(InputError):
        linear_attention(q[0], k[0], v[0])  # rank 4
    with pytest.raises(InputError):
        quadratic_attention(q, k[..., :1], v)  # d of q and k differ
    with pytest.raises(InputError):
        linear_attention(q, k, v[..., :3, :])  # N of k and v differ
    with pytest.raises(InputError):
        quadratic_attention(q, k.expand(1, 2, 1, 4, 2), v)  # batch differs


def test_attention_multiplies_by_hand():
    f = A2OS2A.attention_multiplies
    # Q (K^T V): K^T V is d x d sums over N (N d^2 MACs), then Q times it (N d^2): 2 H N d^2
    assert f(4, 2, 3) == 2 * 3 * 4 * 2 * 2 == 96
    # (Q K^T) V: N x N scores over d (N^2 d), then times V (N^2 d): 2 H N^2 d
    assert f(4, 2, 3, quadratic=True) == 2 * 3 * 16 * 2 == 192
    assert f(196, 64, 6) == 9_633_792
    assert f(196, 64, 6, quadratic=True) == 29_503_488
    assert f(64, 64, 6) == f(64, 64, 6, quadratic=True) == 3_145_728
    assert f(1, 1, 1) == 2


# ---- A2OS2A module -----------------------------------------------------------------------------


@pytest.mark.parametrize("attn_neuron", ["lif", "ternary"])
def test_a2os2a_linear_and_quadratic_modules_agree(attn_neuron):
    torch.manual_seed(0)
    x = spikes((4, 2, 16, 32), seed=3)
    lin = calibrate(A2OS2A(32, 4, attn_neuron=attn_neuron).double(), x)
    quad = A2OS2A(32, 4, quadratic=True, attn_neuron=attn_neuron).double()
    quad.load_state_dict(lin.state_dict())
    quad.eval()
    seen = {}
    lin.attn_lif.register_forward_hook(lambda mod, inp, out: seen.__setitem__("y", inp[0]))
    with torch.no_grad():
        a, b = lin(x), quad(x)
    assert seen["y"].abs().sum() > 0  # the attention is not trivially zero
    assert a.sum() > 0  # and something fires at the output
    assert torch.equal(a, b)
    assert a.shape == x.shape
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_a2os2a_neuron_value_sets(monkeypatch):
    torch.manual_seed(1)
    m = A2OS2A(32, 4, attn_neuron="ternary").double()
    x = spikes((4, 2, 16, 32), seed=4)
    seen = {}
    m.q_lif.register_forward_hook(lambda mod, inp, out: seen.__setitem__("q", out))
    m.v_lif.register_forward_hook(lambda mod, inp, out: seen.__setitem__("v", out))
    m.attn_lif.register_forward_hook(lambda mod, inp, out: seen.__setitem__("a", out))
    m.out_lif.register_forward_hook(lambda mod, inp, out: seen.__setitem__("o", out))
    real_linear = att.linear_attention

    def spy(q, k, v):
        seen["qkv"] = (q, k, v)
        return real_linear(q, k, v)

    monkeypatch.setattr(att, "linear_attention", spy)
    out = m(x)
    assert set(seen["q"].unique().tolist()) == {0.0, 1.0}
    assert set(seen["v"].unique().tolist()) == {-1.0, 0.0, 1.0}
    assert set(seen["a"].unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert set(seen["o"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out, seen["o"])
    q, k, v = seen["qkv"]
    assert q.shape == k.shape == v.shape == (4, 2, 4, 16, 8)  # T x B x H x N x d
    assert (k >= 0).all() and (k > 0).any()  # K is a ReLU
    assert set(q.unique().tolist()) == {0.0, 1.0}
    assert set(v.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert isinstance(m.q_lif, LIF) and not m.q_lif.ternary
    assert isinstance(m.v_lif, TernaryLIF)
    assert isinstance(m.attn_lif, TernaryLIF) and m.attn_lif.v_threshold == 0.5
    assert isinstance(A2OS2A(32, 4).attn_lif, LIF) and not A2OS2A(32, 4).attn_lif.ternary


def test_a2os2a_heads_split_channels_in_blocks():
    """Head h carries channels h*d .. (h+1)*d - 1: the module equals its own projections and
    neurons around a per-head attention written with explicit channel slices."""
    torch.manual_seed(2)
    x = spikes((3, 2, 9, 12), seed=5)
    m = calibrate(A2OS2A(12, 3).double(), x)
    with torch.no_grad():
        q = m.q_lif(m.q_proj(x))
        k = torch.relu(m.k_proj(x))
        v = m.v_lif(m.v_proj(x))
        d = 4
        y = torch.cat([q[..., h * d:(h + 1) * d] @ k[..., h * d:(h + 1) * d].transpose(-2, -1)
                       @ v[..., h * d:(h + 1) * d] for h in range(3)], dim=-1)
        assert y.abs().sum() > 0
        ref = m.out_lif(m.out_proj(m.attn_lif(y)))
        out = m(x)
    assert torch.equal(out, ref)


def test_a2os2a_options_checked():
    with pytest.raises(ConfigError):
        A2OS2A(32, 4, quadratic=1)
    with pytest.raises(ConfigError):
        A2OS2A(32, 4, attn_neuron="relu")
    with pytest.raises(ConfigError):
        A2OS2A(30, 4)
    with pytest.raises(ConfigError):
        A2OS2A(32, 4, tau=0.0)
    with pytest.raises(ConfigError):
        A2OS2A(32, 4, attn_threshold=float("nan"))


# ---- window attention --------------------------------------------------------------------------


def test_window_attention_hand_computed_1x4():
    # one row of 4 tokens, d = 1, windows of 1 x 2; q = 1 everywhere, k = 1..4, v = 1, 10, 100, 1000
    q = torch.ones(1, 1, 1, 4, 1, dtype=F64)
    k = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64).view(1, 1, 1, 4, 1)
    v = torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=F64).view(1, 1, 1, 4, 1)
    # windows {0, 1}, {2, 3}: 1*1 + 2*10 = 21 and 3*100 + 4*1000 = 4300
    out = window_attention(q, k, v, 1.0, (1, 4), (1, 2))
    assert out.flatten().tolist() == [21.0, 21.0, 4300.0, 4300.0]
    # shifted by 1: windows {1, 2} and the wrapped pair {3, 0}, which does not attend across:
    # token 0 -> 1*1, tokens 1, 2 -> 2*10 + 3*100, token 3 -> 4*1000
    out = window_attention(q, k, v, 1.0, (1, 4), (1, 2), shift=True)
    assert out.flatten().tolist() == [1.0, 320.0, 320.0, 4000.0]
    # scale multiplies; global attention sums everything: 1 + 20 + 300 + 4000 = 4321
    out = window_attention(q, k, v, 0.5, (1, 4), None)
    assert out.flatten().tolist() == [2160.5] * 4


@pytest.mark.parametrize("grid", [(4, 4), (2, 6), (3, 5)])
def test_global_window_attention(grid):
    q, k, v = real_qkv(2, 2, 3, grid[0] * grid[1], 4, seed=grid[1])
    ref = ((q @ k.transpose(-2, -1)) * 0.3) @ v
    assert torch.allclose(window_attention(q, k, v, 0.3, grid), ref, rtol=1e-12, atol=1e-12)
    # a window covering the whole grid (clipped) is global, shifted or not
    big = (grid[0] * 2, grid[1] + 1)
    for shift in (False, True):
        out = window_attention(q, k, v, 0.3, grid, big, shift=shift)
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grid,win", [((4, 4), (2, 2)), ((6, 6), (3, 3)), ((4, 8), (2, 4)),
                                      ((4, 8), (4, 2)), ((2, 6), (1, 3)), ((6, 4), (6, 2)),
                                      ((4, 4), (8, 2))])
def test_window_attention_matches_mask_reference(grid, win):
    N = grid[0] * grid[1]
    q, k, v = real_qkv(2, 1, 2, N, 3, seed=N + win[0])
    mask = plain_window_mask(grid, win)
    ref = masked_attention(q, k, v, mask, 0.25)
    out = window_attention(q, k, v, 0.25, grid, win)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    # the windowed result really differs from global attention unless one window covers all
    if not mask.all():
        assert not torch.allclose(out, ((q @ k.transpose(-2, -1)) * 0.25) @ v)
    # an int window is a square one
    if win[0] == win[1]:
        assert torch.equal(window_attention(q, k, v, 0.25, grid, win[0]), out)


@pytest.mark.parametrize("grid,win", [((4, 4), (2, 2)), ((6, 6), (3, 3)), ((4, 8), (2, 4)),
                                      ((8, 4), (4, 2)), ((4, 8), (2, 2)), ((2, 8), (2, 2)),
                                      ((6, 6), (2, 3)), ((8, 8), (4, 4))])
@pytest.mark.parametrize("reference", [swin_mask, shifted_blocks_mask])
def test_shifted_window_attention_matches_swin_reference(grid, win, reference):
    N = grid[0] * grid[1]
    q, k, v = real_qkv(1, 2, 2, N, 3, seed=N + 7 * win[1])
    mask = reference(grid, win)
    ref = masked_attention(q, k, v, mask, 0.5)
    out = window_attention(q, k, v, 0.5, grid, win, shift=True)
    assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12)
    # shifting changes the partition
    unshifted = window_attention(q, k, v, 0.5, grid, win)
    assert not torch.allclose(out, unshifted)


def test_reference_masks_sanity():
    """The two independent shifted references agree, each token attends to itself, and the masks
    are symmetric and sized like windows."""
    for grid, win in [((4, 4), (2, 2)), ((6, 6), (3, 3)), ((4, 8), (2, 4)), ((2, 8), (2, 2))]:
        a, b = swin_mask(grid, win), shifted_blocks_mask(grid, win)
        assert torch.equal(a, b)
        assert a.diagonal().all() and torch.equal(a, a.T)
        assert a.sum(1).max() == min(win[0], grid[0]) * min(win[1], grid[1])
        assert a.sum(1).min() < a.sum(1).max()  # some shifted windows are cut by the wrap


def test_shifted_corner_token_attends_only_to_itself():
    # 4 x 4 grid, 2 x 2 windows, shift 1: token 0 shares its rolled window with tokens 3, 12, 15,
    # all joined to it by the wrap-around only, so its output is scale (q0 . k0) v0
    q, k, v = real_qkv(1, 1, 1, 16, 2, seed=11)
    out = window_attention(q, k, v, 0.7, (4, 4), 2, shift=True)
    expected = 0.7 * (q[..., 0, :] * k[..., 0, :]).sum(-1, keepdim=True) * v[..., 0, :]
    assert torch.allclose(out[..., 0, :], expected, rtol=1e-12, atol=1e-12)
    k2, v2 = k.clone(), v.clone()
    k2[..., [3, 12, 15], :] += 5.0
    v2[..., [3, 12, 15], :] -= 5.0
    assert torch.equal(window_attention(q, k2, v2, 0.7, (4, 4), 2, shift=True)[..., 0, :],
                       out[..., 0, :])
    # token 5 (row 1, col 1) shares the shifted window rows 1-2 x cols 1-2 with 6, 9, 10
    k3 = k.clone()
    k3[..., 10, :] += 1.0
    assert not torch.equal(window_attention(q, k3, v, 0.7, (4, 4), 2, shift=True)[..., 5, :],
                           out[..., 5, :])


@pytest.mark.parametrize("shift", [False, True])
def test_window_output_depends_only_on_its_window(shift):
    grid, win = (6, 6), (3, 3)
    mask = (shifted_blocks_mask if shift else plain_window_mask)(grid, win)
    q, k, v = real_qkv(1, 1, 2, 36, 4, seed=13)
    out = window_attention(q, k, v, 0.5, grid, win, shift=shift)
    for i in (7, 20, 30, 35):
        outside = (~mask[i]).nonzero().flatten()
        inside = [j for j in mask[i].nonzero().flatten().tolist() if j != i]
        assert len(outside) and inside
        for j in outside[:5].tolist():
            q2, k2, v2 = q.clone(), k.clone(), v.clone()
            q2[..., j, :] += 3.0
            k2[..., j, :] -= 2.0
            v2[..., j, :] *= -4.0
            out2 = window_attention(q2, k2, v2, 0.5, grid, win, shift=shift)
            assert torch.equal(out2[..., i, :], out[..., i, :])
            assert not torch.equal(out2[..., j, :], out[..., j, :])
        v3 = v.clone()
        v3[..., inside[0], :] += 1.0
        out3 = window_attention(q, k, v3, 0.5, grid, win, shift=shift)
        assert not torch.allclose(out3[..., i, :], out[..., i, :])


def test_window_attention_checks():
    q, k, v = real_qkv(1, 1, 1, 16, 2)
    with pytest.raises(InputError):
        window_attention(q[..., :15, :], k[..., :15, :], v[..., :15, :], 1.0, (4, 4))
    with pytest.raises(InputError):
        window_attention(q[0], k[0], v[0], 1.0, (4, 4))
    with pytest.raises(ConfigError):
        window_attention(q, k, v, 1.0, (4, 4), 3)  # 3 does not divide 4
    with pytest.raises(ConfigError):
        window_attention(q, k, v, 1.0, (4, 4), (2, 2, 2))
    with pytest.raises(ConfigError):
        window_attention(q, k, v, 1.0, (4, 4), 0)


# ---- shifted_window_mask -----------------------------------------------------------------------


def test_shifted_window_mask_4x4_by_hand():
    T, F = True, False
    # rolled by (-1, -1), per-axis region labels [0, 0, 1, 2]; windows row-major, tokens row-major
    expected = torch.tensor([
        # window 0: rolled rows 0-1, cols 0-1 = original rows 1-2, cols 1-2, one region
        [[T, T, T, T], [T, T, T, T], [T, T, T, T], [T, T, T, T]],
        # window 1: rolled cols 2, 3 = original cols 3 and 0 (wrapped): split by column
        [[T, F, T, F], [F, T, F, T], [T, F, T, F], [F, T, F, T]],
        # window 2: rolled rows 2, 3 = original rows 3 and 0: split by row
        [[T, T, F, F], [T, T, F, F], [F, F, T, T], [F, F, T, T]],
        # window 3: original corners (3, 3), (3, 0), (0, 3), (0, 0): four regions
        [[T, F, F, F], [F, T, F, F], [F, F, T, F], [F, F, F, T]],
    ])
    mask = shifted_window_mask((4, 4), 2)
    assert mask.dtype == torch.bool and mask.shape == (4, 4, 4)
    assert torch.equal(mask, expected)
    assert torch.equal(shifted_window_mask(4, (2, 2)), expected)


def test_shifted_window_mask_unshifted_axes():
    assert shifted_window_mask((2, 2), 2) is None  # one window covers the grid
    assert shifted_window_mask((4, 4), 8) is None  # clipped to the grid
    assert shifted_window_mask((4, 4), 1) is None  # 1 // 2 = 0: nothing to shift
    # 2 x 4 grid, 2 x 2 windows: rows are covered (not shifted), columns shift by 1
    T, F = True, False
    col_split = [[T, F, T, F], [F, T, F, T], [T, F, T, F], [F, T, F, T]]
    expected = torch.tensor([[[T] * 4] * 4, col_split])
    assert torch.equal(shifted_window_mask((2, 4), 2), expected)
    with pytest.raises(ConfigError):
        shifted_window_mask((4, 6), 4)


# ---- SSA modules: windows and channel groups ---------------------------------------------------


def test_window_ssa_module_matches_reference_pipeline():
    torch.manual_seed(3)
    x = spikes((3, 2, 16, 16), seed=6)
    m = calibrate(WindowSSA(16, 2, window=2, shift=True, **LIVELY).double(), x)
    mask = swin_mask((4, 4), (2, 2))
    with torch.no_grad():
        q, k, v = (lif(proj(x)) for lif, proj in ((m.q_lif, m.q_proj), (m.k_lif, m.k_proj),
                                                   (m.v_lif, m.v_proj)))
        d = 8
        y = torch.cat([masked_attention(q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d],
                                        v[..., h * d:(h + 1) * d], mask, d ** -0.5)
                       for h in range(2)], dim=-1)
        assert y.abs().sum() > 0
        ref = m.out_lif(m.out_proj(m.attn_lif(y)))
        out = m(x)
    assert out.sum() > 0
    assert m.scale == d ** -0.5
    assert torch.equal(out, ref)


def test_window_ssa_token_locality_in_eval_mode():
    torch.manual_seed(4)
    x = 3.0 * torch.randn(4, 1, 16, 16, generator=gen(7), dtype=F64)
    m = calibrate(WindowSSA(16, 2, window=2, **LIVELY).double(), x)
    with torch.no_grad():
        out = m(x)
        x2 = x.clone()
        x2[:, :, [2, 3, 6, 7, 8, 15], :] = -x2[:, :, [2, 3, 6, 7, 8, 15], :]  # not in window {0,1,4,5}
        out2 = m(x2)
    assert out[:, :, [0, 1, 4, 5]].sum() > 0
    assert torch.equal(out2[:, :, [0, 1, 4, 5]], out[:, :, [0, 1, 4, 5]])
    assert not torch.equal(out2, out)


def test_channel_group_ssa_blocks_independent():
    torch.manual_seed(5)
    C, g = 16, 4
    x = 3.0 * torch.randn(4, 2, 16, C, generator=gen(8), dtype=F64)
    m = calibrate(ChannelGroupSSA(C, 4, groups=g, **LIVELY).double(), x)
    assert m.groups == g and m.window is None
    gd = C // g
    with torch.no_grad():
        out = m(x)
        assert out.sum() > 0
        for j in range(g):
            x2 = x.clone()
            x2[..., j * gd:(j + 1) * gd] = 3.0 * torch.randn(4, 2, 16, gd, generator=gen(20 + j),
                                                            dtype=F64)
            out2 = m(x2)
            for i in range(g):
                same = torch.equal(out2[..., i * gd:(i + 1) * gd], out[..., i * gd:(i + 1) * gd])
                assert same == (i != j), (i, j)


def test_dense_ssa_mixes_channel_blocks():
    """Control for the test above: without groups, perturbing one block changes the others."""
    torch.manual_seed(5)
    x = 3.0 * torch.randn(4, 2, 16, 16, generator=gen(8), dtype=F64)
    m = calibrate(SpikingSelfAttention(16, 4, **LIVELY).double(), x)
    with torch.no_grad():
        x2 = x.clone()
        x2[..., :4] = -x2[..., :4]
        out, out2 = m(x), m(x2)
    assert not torch.equal(out[..., 4:], out2[..., 4:])


def test_channel_group_checks():
    with pytest.raises(ConfigError):
        ChannelGroupSSA(32, 4, groups=3)  # 3 does not divide 32
    with pytest.raises(ConfigError):
        ChannelGroupSSA(32, 4, groups=8)  # 8 divides 32 but not 4 heads
    with pytest.raises(ConfigError):
        ChannelGroupSSA(32, 4, groups=0)
    with pytest.raises(ConfigError):
        ChannelGroupSSA(32, 4, groups=2.0)
    assert ChannelGroupSSA(32, 4, groups=4).q_proj.weight.shape == (4, 8, 8)


def test_ssa_config_checks():
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 4, shift=True)  # shift needs a window
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 4, window=1, shift=True)
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 4, window=2, shift="yes")
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 4, window=3, grid=(4, 4))  # 3 does not divide 4
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 4, scale=0.0)
    with pytest.raises(ConfigError):
        WindowSSA(32, 4, window=None)
    with pytest.raises(ConfigError):
        SpikingSelfAttention(32, 5)
    assert SpikingSelfAttention(32, 4, scale=0.125).scale == 0.125
    assert SpikingSelfAttention(32, 2).scale == 16 ** -0.5


# ---- GroupedProjection -------------------------------------------------------------------------


def test_grouped_projection_groups1_is_linear_plus_batchnorm():
    torch.manual_seed(6)
    gp = GroupedProjection(8, 1).double()
    lin, bn = nn.Linear(8, 8).double(), nn.BatchNorm1d(8).double()
    with torch.no_grad():
        lin.weight.copy_(gp.weight[0])
        lin.bias.copy_(gp.bias)
    x = torch.randn(3, 2, 5, 8, generator=gen(9), dtype=F64)
    for _ in range(2):  # training mode: batch statistics, and the running ones move alike
        assert torch.allclose(gp(x), bn(lin(x.reshape(-1, 8))).reshape(3, 2, 5, 8),
                              rtol=1e-12, atol=1e-12)
    assert torch.allclose(gp.bn.running_mean, bn.running_mean, rtol=1e-12, atol=1e-12)
    assert torch.allclose(gp.bn.running_var, bn.running_var, rtol=1e-12, atol=1e-12)
    gp.eval()
    bn.eval()
    assert torch.allclose(gp(x), bn(lin(x.reshape(-1, 8))).reshape(3, 2, 5, 8),
                          rtol=1e-12, atol=1e-12)


def test_grouped_projection_is_block_diagonal():
    torch.manual_seed(7)
    C, g = 12, 3
    gd = C // g
    gp = GroupedProjection(C, g).double()
    assert gp.weight.shape == (g, gd, gd)
    dense = torch.zeros(C, C, dtype=F64)
    for blk in range(g):
        for o in range(gd):
            for i in range(gd):
                dense[blk * gd + o, blk * gd + i] = gp.weight[blk, o, i]
    x = torch.randn(6, 7, C, generator=gen(10), dtype=F64)
    mean = (x.reshape(-1, C) @ dense.T + gp.bias).mean(0)
    var = (x.reshape(-1, C) @ dense.T + gp.bias).var(0, unbiased=False)
    ref = (x @ dense.T + gp.bias - mean) / torch.sqrt(var + gp.bn.eps)
    assert torch.allclose(gp(x), ref, rtol=1e-10, atol=1e-10)  # bn weight 1, bias 0 at init
    # eval mode with fresh running statistics (mean 0, var 1): the Jacobian is the dense weight
    gp = GroupedProjection(C, g).double().eval()
    jac = torch.autograd.functional.jacobian(gp, torch.randn(1, C, dtype=F64))[0, :, 0, :]
    for bo, bi in itertools.product(range(g), repeat=2):
        block = jac[bo * gd:(bo + 1) * gd, bi * gd:(bi + 1) * gd]
        if bo == bi:
            expected = gp.weight[bo].detach() / torch.sqrt(torch.tensor(1 + gp.bn.eps, dtype=F64))
            assert torch.allclose(block, expected, rtol=1e-12, atol=1e-12)
        else:
            assert (block == 0).all()


@pytest.mark.parametrize("groups", [0, 3, 2.0, True])
def test_grouped_projection_rejects_groups_that_do_not_divide(groups):
    with pytest.raises(ConfigError, match="groups must be a whole number"):
        GroupedProjection(8, groups)


# ---- registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls", [("ssa", SpikingSelfAttention), ("a2os2a", A2OS2A),
                                      ("window", WindowSSA), ("channel_group", ChannelGroupSSA)])
def test_build_attention_by_name(name, cls):
    m = build_attention(name, 32, 4)
    assert type(m) is cls
    assert m.dim == 32 and m.num_heads == 4 and m.head_dim == 8
    assert cls.registered_name == name and ATTENTION[name] is cls


def test_build_attention_defaults_and_options():
    assert build_attention("window", 32, 4).window == (4, 4)
    assert build_attention("window", 32, 4, window=(2, 4), shift=True).window == (2, 4)
    assert build_attention("channel_group", 32, 4).groups == 2
    assert build_attention("ssa", 32, 4).window is None
    assert build_attention("a2os2a", 32, 4, quadratic=True).quadratic is True
    assert set(ATTENTION) >= {"ssa", "a2os2a", "window", "channel_group"}


def test_build_attention_errors():
    with pytest.raises(ConfigError) as info:
        build_attention("nope", 32, 4)
    for known in ("ssa", "a2os2a", "window", "channel_group", "nope"):
        assert known in str(info.value)
    with pytest.raises(ConfigError, match="a2os2a"):
        build_attention("a2os2a", 32, 4, window=2)  # an option A2OS2A does not take
    with pytest.raises(ConfigError):
        build_attention("ssa", 32, 4, bogus=1)
    with pytest.raises(ConfigError):
        build_attention("window", 32, 4, window=0)
    with pytest.raises(ConfigError):
        build_attention("window", 32, 4, groups=2)  # WindowSSA has no groups
    with pytest.raises(ConfigError):
        build_attention("channel_group", 32, 3)


def test_register_attention():
    before = dict(ATTENTION)
    with pytest.raises(ConfigError):
        register_attention("ssa")(type("Dup", (nn.Module,), {}))
    assert ATTENTION == before

    class Extra(nn.Module):
        def __init__(self, dim, num_heads, flag=False):
            super().__init__()
            self.dim, self.num_heads, self.flag = dim, num_heads, flag

    try:
        assert register_attention("test_extra_attention")(Extra) is Extra
        m = build_attention("test_extra_attention", 8, 2, flag=True)
        assert isinstance(m, Extra) and m.flag and m.dim == 8
        assert Extra.registered_name == "test_extra_attention"
    finally:
        ATTENTION.pop("test_extra_attention", None)
    assert ATTENTION == before


# ---- input validation --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ssa", "a2os2a", "window", "channel_group"])
def test_module_input_checks(name):
    options = {"window": 2} if name == "window" else {}
    m = build_attention(name, 8, 2, **options)
    good = spikes((2, 1, 16, 8), dtype=torch.float32)
    assert m(good).shape == good.shape
    with pytest.raises(InputError):
        m(good[0])  # rank 3
    with pytest.raises(InputError):
        m(good.unsqueeze(0))  # rank 5
    with pytest.raises(InputError):
        m(spikes((2, 1, 16, 6), dtype=torch.float32))  # C = 6, not 8
    with pytest.raises(InputError):
        m(good.to(torch.int64))


@pytest.mark.parametrize("name", ["ssa", "window", "channel_group"])
def test_token_grid_checks(name):
    options = {"window": 2} if name == "window" else {}
    with pytest.raises(ConfigError):
        build_attention(name, 8, 2, **options)(torch.zeros(1, 1, 6, 8))  # 6 is not a square
    m = build_attention(name, 8, 2, grid=(2, 4), **options)
    assert m(torch.zeros(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ConfigError):
        m(torch.zeros(1, 1, 16, 8))  # the 2 x 4 grid holds 8 tokens
    assert m.token_grid(8) == (2, 4)
    assert build_attention(name, 8, 2, **options).token_grid(36) == (6, 6)


def test_a2os2a_any_token_count():
    m = A2OS2A(8, 2)
    assert m(torch.zeros(2, 1, 7, 8)).shape == (2, 1, 7, 8)  # no grid needed


# ---- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a2os2a", "ssa", "window", "channel_group"])
def test_surrogate_gradients_reach_projections(name):
    torch.manual_seed(8)
    options = {"window": 2} if name == "window" else {}
    m = build_attention(name, 16, 2, **options, **LIVELY)
    x = spikes((4, 2, 16, 16), seed=12, dtype=torch.float32).requires_grad_()
    m(x).sum().backward()
    for proj in (m.q_proj, m.k_proj, m.v_proj, m.out_proj):
        for p in (proj.weight, proj.bias):
            assert p.grad is not None
            assert torch.isfinite(p.grad).all()
            assert p.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
