"""GW-SSA (group-wise spiking self-attention) and SSA, in ANN mode and converted SNN mode.

On spike-coded input X (B x C x H x W, the output of an ExpG neuron):

    Q, K, V = signed ExpG(BN(1x1 conv(X)))            (ternary spikes, at most G each)
    heads split into a global part and a local part:
      global: the k*k strided token subsets {(i*k + a, j*k + b)}, each a dilated view of the map
      local:  the k*k windows of (H/k) x (W/k) contiguous tokens
    inside each group: A = ExpG(Q K^T * s)  (an ExpG neuron replaces softmax, s a power of two)
                       O = A V
    out = BN(1x1 conv(concat of heads)) + BN(depthwise 3x3 conv(X))   (the conv branch)

SSA is the same attention with one group over all tokens and no conv branch.

Exactness. Every operand of the two attention products is an integer code times a level spacing:
Q = dq * nq, K = dk * nk, V = dv * nv, A = da * na. Evaluation (ANN in eval mode, and the spiking
network) computes the products on the integer codes, exactly in float64, and applies the spacings
after: nq nk^T -> score -> code of A -> na nv. The ANN and the SNN call the same function
(`exact_group_attention`) on the same codes, so they agree bit for bit; in the SNN the codes are
read from the emitted spike trains, and each product of two codes is a sum of spike-pair
coincidences times powers of two (AND, shift, add). Training uses the ordinary float products
with straight-through gradients.

Grouping k is either given (``k``) or follows from a fixed group side (``window``: k = H /
window). With a fixed window the number of tokens per group stays constant as the image grows, so
the attention cost grows linearly with the number of tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .._checks import whole_number
from ..core.coding import level_spacing
from ..core.quantizers import ExpGQuant, SignedExpGQuant
from ..errors import ConfigError, InputError
from .layers import ConvBN

# ---- token grouping ----------------------------------------------------------------------------


def group_tokens(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """Group the tokens of ``x`` (... x H x W x D) into k*k groups: ... x k*k x (H/k * W/k) x D.

    ``mode="local"``: windows of contiguous tokens; ``mode="global"``: strided subsets, token
    (i, j) in group (i mod k, j mod k).
    """
    *lead, H, W, D = x.shape
    if H % k or W % k:
        raise InputError(f"a {H}x{W} token map cannot be cut into k = {k} groups per side")
    h, w = H // k, W // k
    n = len(lead)
    if mode == "local":
        y = x.reshape(*lead, k, h, k, w, D)
        perm = (*range(n), n, n + 2, n + 1, n + 3, n + 4)
    elif mode == "global":
        y = x.reshape(*lead, h, k, w, k, D)
        perm = (*range(n), n + 1, n + 3, n, n + 2, n + 4)
    else:
        raise ConfigError(f"grouping mode must be 'local' or 'global', got {mode!r}")
    return y.permute(perm).reshape(*lead, k * k, h * w, D)


def ungroup_tokens(y: torch.Tensor, k: int, H: int, W: int, mode: str) -> torch.Tensor:
    """Inverse of `group_tokens`: ... x k*k x (H/k * W/k) x D back to ... x H x W x D."""
    *lead, _, _, D = y.shape
    h, w = H // k, W // k
    n = len(lead)
    if mode == "local":
        z = y.reshape(*lead, k, k, h, w, D).permute(*range(n), n, n + 2, n + 1, n + 3, n + 4)
    else:
        z = y.reshape(*lead, k, k, h, w, D).permute(*range(n), n + 2, n, n + 3, n + 1, n + 4)
    return z.reshape(*lead, H, W, D)


def group_index(H: int, W: int, k: int, mode: str) -> torch.Tensor:
    """Group id (0..k*k-1) of every token of an H x W map, as an H x W tensor."""
    i = torch.arange(H).view(H, 1)
    j = torch.arange(W).view(1, W)
    if mode == "local":
        return (i // (H // k)) * k + j // (W // k)
    return (i % k) * k + j % k


# ---- the exact evaluation path -----------------------------------------------------------------


def exact_group_attention(nq: torch.Tensor, nk: torch.Tensor, nv: torch.Tensor, score_scale: float,
                          attn_codes: Callable[[torch.Tensor], torch.Tensor], out_scale: float,
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention on integer codes, exact in float64.

    Args:
        nq: query codes, ... x n x d (any integer or float dtype holding integers).
        nk: key codes, of the same form.
        nv: value codes, of the same form.
        score_scale: dq * dk * s, applied to the integer scores nq nk^T.
        attn_codes: maps the float64 scores to the attention neuron's integer codes.
        out_scale: da * dv, applied to the integer output na nv.

    Returns:
        (output values in float64, attention codes).
    """
    q, k, v = (t.to(torch.float64) for t in (nq, nk, nv))
    scores = (q @ k.transpose(-1, -2)) * score_scale  # integer sums are exact below 2**53
    na = attn_codes(scores)
    out = (na.to(torch.float64) @ v) * out_scale
    return out, na


def _power_of_two_scale(head_dim: int) -> float:
    return 2.0 ** -round(math.log2(math.sqrt(head_dim)))


# ---- geometry and the ANN module --------------------------------------------------------------


class GroupedAttention(nn.Module):
    """Geometry of group-wise attention (heads, global/local split, k or window), both modes."""

    def __init__(self, dim: int, heads: int, global_ratio: float = 0.5, k: int | None = None,
                 window: int | None = None) -> None:
        super().__init__()
        whole_number("dim", dim)
        whole_number("heads", heads)
        if dim % heads:
            raise ConfigError(f"dim = {dim} is not divisible by heads = {heads}")
        n_global = heads * global_ratio
        if not 0 <= global_ratio <= 1 or abs(n_global - round(n_global)) > 1e-9:
            raise ConfigError(f"heads = {heads} cannot be split with global_ratio = {global_ratio}:"
                              " heads * global_ratio must be a whole number")
        if (k is None) == (window is None):
            raise ConfigError("give exactly one of k (groups per side) and window (group side)")
        for name, value in (("k", k), ("window", window)):
            if value is not None:
                whole_number(name, value)
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.global_heads = int(round(n_global))
        self.global_ratio = global_ratio
        self.k, self.window = k, window
        self.scale = _power_of_two_scale(self.head_dim)

    def groups_per_side(self, H: int, W: int) -> int:
        """k for an H x W token map (checked)."""
        name = type(self).__name__
        if self.k is not None:
            k = self.k
        else:
            if H != W:
                raise InputError(f"{name}: window grouping needs a square map, got {H}x{W}")
            if H % self.window:
                raise InputError(f"{name}: a {H}x{W} token map is not divisible by the group "
                                 f"side window = {self.window}")
            k = H // self.window
        if H % k or W % k:
            raise InputError(f"{name}: the {H}x{W} token map is not divisible by k = {k}")
        return k

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x heads x H x W x head_dim."""
        B, _, H, W = x.shape
        return x.reshape(B, self.heads, self.head_dim, H, W).permute(0, 1, 3, 4, 2)

    def _unheads(self, x: torch.Tensor) -> torch.Tensor:
        B, h, H, W, d = x.shape
        return x.permute(0, 1, 4, 2, 3).reshape(B, h * d, H, W)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x heads x k*k x n x head_dim: global heads in strided subsets,
        local heads in windows, stacked along the head axis."""
        _, _, H, W = x.shape
        k = self.groups_per_side(H, W)
        xh = self._heads(x)
        g = self.global_heads
        return torch.cat([group_tokens(xh[:, :g], k, "global"),
                          group_tokens(xh[:, g:], k, "local")], dim=1)

    def ungrouped(self, y: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Inverse of `grouped`."""
        k = self.groups_per_side(H, W)
        g = self.global_heads
        return self._unheads(torch.cat([ungroup_tokens(y[:, :g], k, H, W, "global"),
                                        ungroup_tokens(y[:, g:], k, H, W, "local")], dim=1))

    def attend(self, q: torch.Tensor, k_: torch.Tensor, v: torch.Tensor,
               op: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Group q, k, v (B x C x H x W), apply ``op`` once to all groups (... x n x d tensors),
        and ungroup the result to B x C x H x W."""
        _, _, H, W = q.shape
        return self.ungrouped(op(self.grouped(q), self.grouped(k_), self.grouped(v)), H, W)

    def extra_repr(self) -> str:
        grouping = f"k={self.k}" if self.k is not None else f"window={self.window}"
        return f"dim={self.dim}, heads={self.heads} ({self.global_heads} global), {grouping}"


class GWSSA(GroupedAttention):
    """Group-wise spiking self-attention (ANN mode; ``ge2mst.convert`` makes it spiking).

    Args:
        dim: channels C (input and output).
        heads: attention heads; ``dim`` must be divisible by it.
        global_ratio: fraction of the heads that attend within the strided (global) subsets;
            the rest attend within local windows. ``heads * global_ratio`` must be whole.
        k: groups per side (k*k groups), or None to derive it from ``window``.
        window: tokens per group side (k = H / window), or None when ``k`` is given.
        conv_branch: add the depthwise 3x3 convolution branch on the input.
        T: time steps of the ExpG coding of Q, K, V and of the attention matrix.
        G: temporal groups of that coding.

    Attributes:
        exact_eval: evaluation (at p = 1) takes the integer-code path that the spiking network
            shares (default True). False makes evaluation take the float path of training (float
            products of the quantized values, the attention quantizer on their float scores):
            the function the weights were trained through, which `ge2mst.analysis.verify` runs
            as a reference that shares no attention code with the spiking network
            (`float_attention`).
    """

    exact_eval: bool = True

    def __init__(self, dim: int, heads: int, global_ratio: float = 0.5, k: int | None = None,
                 window: int | None = None, conv_branch: bool = True, T: int = 4, G: int = 2):
        super().__init__(dim, heads, global_ratio, k, window)
        self.q_conv, self.k_conv, self.v_conv = (ConvBN(dim, dim, 1) for _ in range(3))
        self.q_act, self.k_act, self.v_act = (SignedExpGQuant(T, G) for _ in range(3))
        self.attn_act = ExpGQuant(T, G)
        self.proj = ConvBN(dim, dim, 1)
        self.conv = ConvBN(dim, dim, 3, groups=dim) if conv_branch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q_pre, k_pre, v_pre = self.q_conv(x), self.k_conv(x), self.v_conv(x)
        acts = (self.q_act, self.k_act, self.v_act, self.attn_act)
        # the exact integer-code path is the quantized network (p = 1); training, calibration
        # looking at the raw inputs, and an evaluation in the middle of progressive training
        # (p < 1: the hybrid network that is being trained) take the float path, which honours p
        if (self.training or not self.exact_eval or self.attn_act.bypass
                or any(a.p < 1.0 for a in acts)):
            q, k_, v = self.q_act(q_pre), self.k_act(k_pre), self.v_act(v_pre)

            def op(a, b, c):
                return self.attn_act((a @ b.transpose(-1, -2)) * self.scale) @ c

            out = self.attend(q, k_, v, op)
        else:
            out = self.attend(self.q_act.codes(q_pre), self.k_act.codes(k_pre),
                              self.v_act.codes(v_pre), self.exact_op(self.attn_act.codes))
            out = out.to(x.dtype)
        out = self.proj(out)
        if self.conv is not None:
            out = out + self.conv(x)
        return out

    def spacings(self) -> tuple[float, float]:
        """(score scale dq*dk*s, output scale da*dv) of the exact path."""
        return attention_spacings(self.q_act, self.k_act, self.v_act, self.attn_act, self.scale)

    def exact_op(self, attn_codes: Callable[[torch.Tensor], torch.Tensor]):
        score_scale, out_scale = self.spacings()

        def op(a, b, c):
            return exact_group_attention(a, b, c, score_scale, attn_codes, out_scale)[0]

        return op

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, conv_branch={self.conv is not None}"


def float_attention(model: nn.Module, on: bool = True) -> nn.Module:
    """Make every GW-SSA / SSA of ``model`` evaluate through the float path of training (``on``)
    or the exact integer-code path (``on=False``, the default state); returns ``model``."""
    for module in model.modules():
        if isinstance(module, GWSSA):
            module.exact_eval = not on
    return model


def attention_spacings(q_act, k_act, v_act, attn_act, scale: float) -> tuple[float, float]:
    """(dq * dk * s, da * dv) from four modules that carry ``lam`` and ``book``."""
    dq, dk, dv, da = (float(level_spacing(m.lam, m.book.n_max))
                      for m in (q_act, k_act, v_act, attn_act))
    return dq * dk * scale, da * dv


class SSA(GWSSA):
    """Spiking self-attention: one group over all tokens, every head, no conv branch."""

    def __init__(self, dim: int, heads: int, T: int = 4, G: int = 2) -> None:
        super().__init__(dim, heads, global_ratio=1.0, k=1, conv_branch=False, T=T, G=G)
