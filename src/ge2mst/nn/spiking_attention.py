"""The converted (spiking) GW-SSA / SSA.

Q, K and V are emitted as ternary spike trains by signed ExpG-IF neurons; the attention products
are computed once per inference on the codes read from those spike trains (time-collapsed, as
METHOD.md section 5 defines), with `exact_group_attention`, the very function the ANN evaluates;
the attention matrix is emitted as spikes by an ExpG-IF neuron in place of softmax. The integer
output O = na nv enters the output projection as one input window (step 1 in event mode).

While recording or counting, the module also counts the spike-pair coincidences of the two products (the
accumulates a multiplication-free implementation performs), their upper bound (every neuron at its
cap G) and the multiply-accumulates the ANN spends on them, in ``last_ops``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.neurons import ExpGIF
from .attention import GWSSA, GroupedAttention, attention_spacings, exact_group_attention
from .layers import Synapse, fold_batchnorm


def spike_pair_coincidences(cq: torch.Tensor, ck: torch.Tensor) -> torch.Tensor:
    """sum_{i,j,d} cq[..., i, d] * ck[..., j, d] over the last two axes (spike counts per element)."""
    return (cq.to(torch.float64).sum(-2) * ck.to(torch.float64).sum(-2)).sum(-1)


def _folded(conv_bn: nn.Module) -> nn.Module:
    """The Conv2d of a `ConvBN` with its BatchNorm folded (conversion may have folded it already)."""
    if isinstance(conv_bn.bn, nn.modules.batchnorm._BatchNorm):
        return fold_batchnorm(conv_bn.conv, conv_bn.bn)
    return conv_bn.conv


def _shift_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_{t,u} 2**(T-1-t) * 2**(T-1-u) * (a[t] @ b[u]) for spike trains a, b (T first).

    Each a[t] @ b[u] of two {-1, 0, 1} matrices counts signed spike-pair coincidences (AND and
    sign); the powers of two are shifts. Exact in float64 for any practical size.
    """
    T = a.shape[0]
    total = None
    for t in range(T):
        for u in range(T):
            term = (a[t] @ b[u]) * float(2 ** ((T - 1 - t) + (T - 1 - u)))
            total = term if total is None else total + term
    return total


class SpikingGWSSA(GroupedAttention):
    """Spiking GW-SSA built from a trained `GWSSA` by `from_ann` (called by `ge2mst.convert`)."""

    def __init__(self, dim: int, heads: int, global_ratio: float, k: int | None,
                 window: int | None) -> None:
        super().__init__(dim, heads, global_ratio, k, window)
        self.step_mode = "event"
        self.products = "codes"
        #: how the last call formed the two products ("codes" or "spikes"): what really ran, which
        #: `ge2mst.analysis.verify` reports and holds against what was asked
        self.ran_products: str | None = None
        self.last_ops: dict | None = None

    @classmethod
    def from_ann(cls, ann: GWSSA, options, name: str = "") -> SpikingGWSSA:
        """The spiking version of ``ann`` (named ``name`` in errors) for the `ConversionOptions`
        ``options``: its convolutions folded into synapses, its quantizers swapped for ExpG-IF
        neurons (`ExpGIF.from_quantizer`, which refuses p < 1 and a bad lambda)."""
        net = cls(ann.dim, ann.heads, ann.global_ratio, ann.k, ann.window)
        net.scale = ann.scale
        net.products = options.attention_products
        for part in ("q_conv", "k_conv", "v_conv", "proj"):
            setattr(net, part, Synapse(_folded(getattr(ann, part))))
        net.proj.input_kind = "integers"  # O = da dv (na nv): integer multiples of one quantum
        net.conv = Synapse(_folded(ann.conv)) if ann.conv is not None else None
        for part in ("q_act", "k_act", "v_act", "attn_act"):
            neuron = ExpGIF.from_quantizer(getattr(ann, part), form=options.form,
                                           online=options.online, name=f"{name}.{part}")
            if neuron.online:
                raise TypeError("spiking attention needs whole-window ExpG-IF neurons")
            setattr(net, part, neuron)
        return net

    def _needs_spikes(self, neuron: ExpGIF) -> bool:
        """Whether the spike trains themselves are needed (products from spikes, recording, the
        sequential or online form); otherwise the codes come straight from the membranes."""
        return (self.products == "spikes" or neuron.record or neuron.form != "search"
                or neuron.online)

    def _codes(self, neuron: ExpGIF, currents: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        if not self._needs_spikes(neuron):
            return None, neuron.codes(currents)
        spikes = neuron.spike(currents)
        return spikes, neuron.book.code_of(spikes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sq, nq = self._codes(self.q_act, self.q_conv(x))
        sk, nk = self._codes(self.k_act, self.k_conv(x))
        sv, nv = self._codes(self.v_act, self.v_conv(x))
        attn_spikes = {}

        def attn_fire(scores: torch.Tensor) -> torch.Tensor:
            attn_spikes["s"] = self.attn_act.spike_membrane(scores)
            return attn_spikes["s"]

        def attn_codes(scores: torch.Tensor) -> torch.Tensor:
            if not self._needs_spikes(self.attn_act):
                return self.attn_act.membrane_codes(scores.to(torch.float64))
            return self.attn_act.book.code_of(attn_fire(scores))

        score_scale, out_scale = attention_spacings(self.q_act, self.k_act, self.v_act,
                                                    self.attn_act, self.scale)

        def op(a, b, c):
            return exact_group_attention(a, b, c, score_scale, attn_codes, out_scale)[0]

        if self.products == "spikes":
            out = self._attend_spikes(sq, sk, sv, score_scale, attn_fire, out_scale)
        else:
            out = self.attend(nq, nk, nv, op)
            self.ran_products = "codes"
        out = out.to(x.dtype)
        if self.q_act.counting:  # spikes per neuron from the neurons' tallies
            self.last_ops = self._count(*(n.last_tally.per_neuron() for n in
                                          (self.q_act, self.k_act, self.v_act, self.attn_act)))
        elif self.q_act.record:
            self.last_ops = self._count(*(s.abs().sum(0) for s in (sq, sk, sv, attn_spikes["s"])))
        if self.step_mode == "event":
            window = out.new_zeros((x.shape[0], *out.shape))
            window[0] = out
            out = window
        out = self.proj(out)
        if self.conv is not None:
            out = out + self.conv(x)
        return out

    def _attend_spikes(self, sq, sk, sv, score_scale, attn_fire, out_scale) -> torch.Tensor:
        """Both products from the spike trains: sum over step pairs (t, u) of the signed
        coincidence count s_t . s_u, shifted left by (T-1-t) + (T-1-u)."""
        T, B, _, H, W = sq.shape
        self.ran_products = "spikes"
        gq, gk, gv = (self.grouped(s.flatten(0, 1).to(torch.float64)).unflatten(0, (T, B))
                      for s in (sq, sk, sv))
        scores = _shift_add(gq, gk.transpose(-1, -2))  # the integers nq nk^T
        sa = attn_fire(scores * score_scale)
        out = _shift_add(sa.to(torch.float64), gv) * out_scale  # the integers na nv, scaled
        return self.ungrouped(out, H, W)

    @torch.no_grad()
    def _count(self, nq, nk, nv, na) -> dict:
        """Per image, from the spikes per neuron of Q, K, V (B x C x H x W) and of the attention
        matrix (B x heads x groups x n x n): spike-pair coincidences of Q K^T and A V, their
        upper bound, ANN MACs."""
        cq, ck, cv = (self.grouped(c.to(torch.float64)) for c in (nq, nk, nv))
        ca = na.to(torch.float64)
        qk = float(spike_pair_coincidences(cq, ck).sum())
        av = float((ca @ cv).sum())  # sum_{i,j,d} ca(i,j) cv(j,d)
        B, h, g, n, d = cq.shape
        macs = h * g * n * n * d  # per image, for each of the two products
        caps = (self.q_act.G * self.k_act.G, self.attn_act.G * self.v_act.G)
        return {"images": B, "qk_coincidences": qk / B, "av_coincidences": av / B,
                "coincidences_upper_bound": (caps[0] + caps[1]) * macs, "ann_macs": 2 * macs,
                "groups": g, "tokens_per_group": n}
