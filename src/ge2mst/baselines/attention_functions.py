"""The attention functions of the baseline modules, on T x B x H x N x d tensors (T steps, B
samples, H heads, N tokens, d channels per head): Q (K^T V) in linear time, (Q K^T) V through the
score matrix (for checking), and attention inside (shifted) windows of the token grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import whole_number
from ..errors import ConfigError, InputError


def _pair(name: str, value) -> tuple[int, int]:
    """An int n -> (n, n); a pair of ints -> itself; checked >= 1."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ConfigError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return whole_number(f"{name}[0]", value[0]), whole_number(f"{name}[1]", value[1])
    v = whole_number(name, value)
    return v, v


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 5 or k.dim() != 5 or v.dim() != 5:
        raise InputError("attention expects q, k, v of shape T x B x H x N x d, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.shape[:3] != k.shape[:3] \
            or k.shape[:3] != v.shape[:3]:
        raise InputError("q, k, v shapes do not match (T x B x H x N x d, same N for k and v, same "
                         f"d for q and k): {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")


# ---- attention functions on T x B x H x N x d --------------------------------------------------


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Q (K^T V) per head, no softmax, no scale: T x B x H x N x d -> T x B x H x N x d.

    K^T V is a d x d matrix per head, so the cost is 2 N d^2 multiply-accumulates per head and no
    N x N tensor is formed.
    """
    _check_qkv(q, k, v)
    return q @ (k.transpose(-2, -1) @ v)


def quadratic_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(Q K^T) V per head, no softmax, no scale: the same value as `linear_attention`, computed
    through the N x N score matrix (2 N^2 d multiply-accumulates per head). For checking."""
    _check_qkv(q, k, v)
    return (q @ k.transpose(-2, -1)) @ v


def _axis_shift(length: int, window: int, shift: bool) -> int:
    """Cyclic shift along one grid axis: window // 2 when shifting and the window is smaller than
    the axis (as in Swin, an axis covered by one window is not shifted), else 0."""
    return window // 2 if shift and window < length else 0


def _regions(length: int, window: int, s: int) -> torch.Tensor:
    """Region label (0, 1, 2) of every position of one rolled axis. After rolling by -s, the last
    window holds the tail of the axis (label 1) and the wrapped head of the axis (label 2)."""
    lab = torch.zeros(length, dtype=torch.long)
    if s:
        lab[length - window:length - s] = 1
        lab[length - s:] = 2
    return lab


def _partition(x: torch.Tensor, grid: tuple[int, int], win: tuple[int, int]) -> torch.Tensor:
    """... x (h*w) x d tokens -> ... x nW x (wh*ww) x d windows (row-major windows and tokens)."""
    *lead, _, d = x.shape
    (h, w), (wh, ww) = grid, win
    n = len(lead)
    y = x.reshape(*lead, h // wh, wh, w // ww, ww, d)
    y = y.permute(*range(n), n, n + 2, n + 1, n + 3, n + 4)
    return y.reshape(*lead, (h // wh) * (w // ww), wh * ww, d)


def _unpartition(y: torch.Tensor, grid: tuple[int, int], win: tuple[int, int]) -> torch.Tensor:
    """Inverse of `_partition`."""
    *lead, _, _, d = y.shape
    (h, w), (wh, ww) = grid, win
    n = len(lead)
    x = y.reshape(*lead, h // wh, w // ww, wh, ww, d)
    x = x.permute(*range(n), n, n + 2, n + 1, n + 3, n + 4)
    return x.reshape(*lead, h * w, d)


def _check_window(grid: tuple[int, int], win: tuple[int, int]) -> tuple[int, int]:
    """Window clipped to the grid (a window at least as large as an axis covers it whole); an
    axis not divisible by the window raises ConfigError."""
    (h, w), (wh, ww) = grid, win
    wh, ww = min(wh, h), min(ww, w)
    if h % wh or w % ww:
        raise ConfigError(f"a {wh}x{ww} window does not divide the {h}x{w} token grid; choose a "
                          "window side that divides the grid side")
    return wh, ww


def shifted_window_mask(grid: tuple[int, int], window: int | tuple[int, int]) -> torch.Tensor | None:
    """The shifted-window mask, nW x M x M bool (M = tokens per window), or None when no axis is
    shifted. Entry [w, i, j] is True when tokens i and j of rolled window w came from the same
    region of the unrolled grid, i.e. may attend to each other; tokens brought together only by the
    cyclic wrap-around are False."""
    grid = _pair("grid", grid)
    win = _check_window(grid, _pair("window", window))
    sh, sw = (_axis_shift(g, wi, True) for g, wi in zip(grid, win, strict=True))
    if not (sh or sw):
        return None
    lab_h = _regions(grid[0], win[0], sh)
    lab_w = _regions(grid[1], win[1], sw)
    region = (lab_h[:, None] * 3 + lab_w[None, :]).reshape(-1, 1)
    rw = _partition(region, grid, win)[..., 0]  # nW x M
    return rw[:, :, None] == rw[:, None, :]


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     grid: tuple[int, int], window: int | tuple[int, int] | None = None,
                     shift: bool = False) -> torch.Tensor:
    """Spikformer attention (Q K^T * scale) V, no softmax, inside windows of the token grid.

    Args:
        q, k, v: T x B x H x N x d, tokens in row-major order of the h x w ``grid`` (N = h w).
        scale: multiplies the scores.
        window: window side (int) or (wh, ww); None: one window over the whole grid (global
            attention). A window larger than an axis is clipped to it.
        shift: roll the grid by (-wh // 2, -ww // 2) before cutting windows and roll the result back
            (Swin-style shifted windows); the scores of token pairs joined only by the wrap-around
            are zeroed (`shifted_window_mask`), which without softmax is exactly "not attending".

    Returns:
        T x B x H x N x d.
    """
    _check_qkv(q, k, v)
    grid = _pair("grid", grid)
    if q.shape[-2] != grid[0] * grid[1] or k.shape[-2] != q.shape[-2]:
        raise InputError(f"{q.shape[-2]} tokens do not fill the {grid[0]}x{grid[1]} grid")
    win = grid if window is None else _check_window(grid, _pair("window", window))
    sh, sw = (_axis_shift(g, wi, shift) for g, wi in zip(grid, win, strict=True))

    def cut(x: torch.Tensor) -> torch.Tensor:
        if sh or sw:
            x = x.unflatten(-2, grid).roll((-sh, -sw), dims=(-3, -2)).flatten(-3, -2)
        return _partition(x, grid, win)

    qw, kw, vw = cut(q), cut(k), cut(v)
    scores = (qw @ kw.transpose(-2, -1)) * scale  # ... x nW x M x M
    if sh or sw:
        mask = shifted_window_mask(grid, win)
        scores = scores * mask.to(device=scores.device, dtype=scores.dtype)
    out = _unpartition(scores @ vw, grid, win)
    if sh or sw:
        out = out.unflatten(-2, grid).roll((sh, sw), dims=(-3, -2)).flatten(-3, -2)
    return out


# ---- building blocks ---------------------------------------------------------------------------
