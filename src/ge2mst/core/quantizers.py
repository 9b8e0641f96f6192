"""ANN-mode activation quantizers: ExpG, signed ExpG, Exp-IF (G = 1) and uniform QCFS.

They train in one ordinary forward pass per image, with no time loop: the cost and memory of
training do not depend on T. Conversion (`ge2mst.convert`) swaps each of them for its spiking
neuron, which reproduces its output exactly.

Forward: the input is compared in float64 with the code book's boundaries delta * (half-integer
codes), delta = lambda / n_max rounded to float32 (`ge2mst.core.coding.level_spacing`), and the output
is delta * code. Backward (straight-through, as METHOD.md section 2 defines it):

    dQ/dx      = 1 on [0, lambda] (signed: [-lambda, lambda]), 0 elsewhere
    dQ/dlambda = (Q - x) / lambda inside, 1 above lambda (signed: -1 below -lambda), 0 below 0

Progressive training mixes the clipped identity and the quantizer with a fraction ``p``:
A_p(x) = (1 - p) * clip(x, 0, lambda) + p * Q(x). Only p = 1 is convertible.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .._checks import in_unit_interval, positive_number
from ..errors import ConfigError
from .coding import CodeBook, check_time_groups, expg_codebook, level_spacing, uniform_codebook

#: code books with at most this many boundaries find a level by comparing with each boundary in
#: turn (several times faster on CPUs than a binary search, and exact all the same); larger ones
#: use ``torch.searchsorted``
COMPARE_BOUNDARIES = 24
#: which way a value exactly on a boundary goes; ``"down"`` only to demonstrate a conversion
#: fault (`ge2mst.analysis.faults`)
TIES = "up"


def level_index(mag: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """``#{j : bounds_j <= mag}`` for each element (int64): the index of its level in the code
    book (ties go up; NaN gives 0). ``bounds`` sorted, on ``mag``'s device; no host sync."""
    up = TIES == "up"
    if bounds.numel() > COMPARE_BOUNDARIES:
        level = torch.searchsorted(bounds, mag.contiguous(), right=up)
        return level.masked_fill_(torch.isnan(mag), 0)
    count = torch.zeros(mag.shape, dtype=torch.uint8, device=mag.device)
    hit = torch.empty(mag.shape, dtype=torch.bool, device=mag.device)
    compare = torch.ge if up else torch.gt
    for j in range(bounds.numel()):
        compare(mag, bounds[j], out=hit)
        count.add_(hit)
    return count.long()


def quantize_codes(x: torch.Tensor, lam: torch.Tensor, book: CodeBook, signed: bool) -> torch.Tensor:
    """Integer code (int64, signed where ``signed``) of each element of ``x``.

    ``j* = #{j : b_j <= |x|}``: a binary search over the sorted boundaries, ties going up.
    NaN inputs give code 0 here; callers that care check for NaN first.
    """
    device = x.device
    delta = level_spacing(lam.to(device), book.n_max)
    bounds = (delta * book.on("mids", device)).contiguous()
    xd = x.detach().to(torch.float64)
    mag = xd.abs() if signed else xd
    codes = book.on("codes", device)[level_index(mag, bounds)]
    if signed:
        codes = codes * torch.sign(xd).to(torch.int64)
    return codes


def codes_to_values(codes: torch.Tensor, lam: torch.Tensor, n_max: int, dtype: torch.dtype) -> torch.Tensor:
    """delta * code, computed exactly in float64 and rounded once to ``dtype``."""
    return (level_spacing(lam.to(codes.device), n_max) * codes.to(torch.float64)).to(dtype)


def _round_up_to_float32(values: torch.Tensor) -> torch.Tensor:
    """The smallest float32 >= each float64 value: for a float32 ``x``, ``x >= b`` exactly when
    ``x >= _round_up_to_float32(b)``."""
    f32 = values.to(torch.float32)
    below = f32.to(torch.float64) < values
    return torch.where(below, torch.nextafter(f32, torch.full_like(f32, math.inf)), f32)


def _grid_values(delta: torch.Tensor, book: CodeBook, device: torch.device) -> torch.Tensor:
    """float32 output ``delta * code`` of every cell ``[delta k / 2, delta (k + 1) / 2)`` of the
    half-integer grid, k = 0 .. 2 n_max + 1 (the code of the last boundary <= k / 2), then NaN
    (the cell NaN inputs are sent to); made on ``device`` from the 0-dim ``delta`` there: no host
    synchronisation."""
    values = (delta * book.on("grid_codes", device).to(torch.float64)).to(torch.float32)
    return torch.cat([values, values.new_full((1,), math.nan)])


#: Code books of at most this many levels use a float32 binary search instead of the grid.
SEARCH_LEVELS = 0


def _quantize_float32(x: torch.Tensor, lam: torch.Tensor, book: CodeBook, signed: bool) -> torch.Tensor:
    """``codes_to_values(quantize_codes(x, ...), ..., float32)`` for float32 ``x``, bit for bit,
    in a few vectorised passes whose cost does not depend on the code book's size.

    Every boundary ``delta * mid`` lies on the grid ``delta * k / 2``, so the grid cell of ``|x|``
    decides its code: ``k = floor(|x| / (delta / 2))``, the quotient taken in float64. That is
    exact: ``|x|`` and ``delta`` carry 24 significant bits and ``k < 2**18``, so an exact
    quotient that is not a whole number lies more than 2**-49 (relative) from every whole number,
    far beyond float64's rounding (2**-53), and a whole one is computed exactly. A table of the
    2 n_max + 2 cells then gives the float32 output. No boolean mask and no ``where`` (slow on
    CPUs), and every pass after the float64 copy in place: NaN takes a cell of its own whose
    table entry is NaN, +-inf gives the clip, -0 and ternary zeros come out as +0 like the
    integer path. (``SEARCH_LEVELS``: code books that small take a
    binary search over the boundaries rounded up to float32 instead; 0 by default.)
    """
    device = x.device
    mag = x.abs() if signed else x
    delta = level_spacing(lam.to(device), book.n_max)
    if book.num_levels <= SEARCH_LEVELS:
        bounds = _round_up_to_float32(delta * book.on("mids", device))
        values = (delta * book.on("codes", device).to(torch.float64)).to(torch.float32)
        cell = torch.bucketize(torch.nan_to_num(mag, nan=0.0), bounds, right=True, out_int32=True)
        out = values.index_select(0, cell.reshape(-1)).view(x.shape)
        nan_kept = out + mag.clamp(-1.0, 1.0) * 0.0  # + (+0, -0 or NaN)
    else:
        table = _grid_values(delta, book, device)  # its last entry is NaN: the cell of a NaN
        cells = table.numel() - 1
        # in place on the float64 copy: clamp keeps NaN, which then takes the NaN cell
        quotient = mag.to(torch.float64).div_(delta / 2).clamp_(0, cells - 1).nan_to_num_(nan=cells)
        nan_kept = table.index_select(0, quotient.to(torch.int32).reshape(-1)).view(x.shape)
    if signed:  # sign(x) * value, + 0.0: a ternary zero (and -0) is +0, NaN stays NaN
        return (nan_kept * torch.sign(x)).add_(0.0)
    return nan_kept


def quantized_values(x: torch.Tensor, lam: torch.Tensor, book: CodeBook, signed: bool) -> torch.Tensor:
    """Q(x) = delta * code in ``x``'s dtype, without gradients: what the quantizer outputs, and
    what an ExpG-IF neuron decodes from the spikes it emits for the membrane ``x`` (the collapsed
    spiking network uses it when nobody records the spikes). NaN stays NaN."""
    if x.dtype == torch.float32:
        return _quantize_float32(x, lam, book, signed)
    out = codes_to_values(quantize_codes(x, lam, book, signed), lam, book.n_max, x.dtype)
    return torch.where(torch.isnan(x), x, out)


class _Quantize(torch.autograd.Function):
    """Q(x), or the progressive mix q + (1 - p) (clip(x) - q) for p < 1, in one autograd node.

    Both parts have the same straight-through gradient in x (1 on the clip range, 0 outside), so
    the mix needs no graph of its own: one mask serves the whole backward pass, which costs the
    same at p < 1 as at p = 1. The lambda gradient is p (Q - x) / lambda inside plus the clip's
    +-1 outside (``(1 - p)`` of it from the clipped part, ``p`` from Q).

    ``p`` and ``w = 1 - p`` are Python floats in eager mode (p = 1 then skips the mix), or 0-dim
    float32 tensors under ``torch.compile`` (`Quantizer` holds them as buffers, so a moving p
    never recompiles): the same float32 products either way, and at p = 1 the mix adds an exact
    zero, so a compiled step quantizes bit for bit as the eager one.
    """

    @staticmethod
    def forward(ctx, x, lam, book, signed, p, w):  # noqa: D401 - autograd signature
        q = quantized_values(x, lam, book, signed)
        if isinstance(p, torch.Tensor):  # traced: q may be a view of an intermediate, which a
            q = q.clone()                # saved tensor may not be (the compiler drops the copy)
        ctx.signed, ctx.p = signed, p
        ctx.save_for_backward(x, lam, q)
        if not isinstance(p, torch.Tensor) and p >= 1.0:
            return q
        lam_v = lam.to(x.dtype)
        clipped = torch.clamp(x, min=-lam_v if signed else torch.zeros_like(lam_v), max=lam_v)
        return clipped.sub_(q).mul_(w).add_(q)

    @staticmethod
    def backward(ctx, grad_out):
        x, lam, q = ctx.saved_tensors
        lam_v = lam.to(x.dtype)
        low = -lam_v if ctx.signed else torch.zeros_like(lam_v)
        clipped = torch.clamp(x, min=low, max=lam_v)
        inside = clipped == x  # True on [low, lambda], False elsewhere (and NaN)
        grad_in = grad_out * inside  # a boolean factor: one pass fewer than a float mask
        grad_lam = None
        if ctx.needs_input_grad[1]:  # sum over the regions of grad_out * dA/dlambda
            # inside: p (Q - x) / lambda; above lambda: +1; below -lambda (signed): -1; else 0
            outside = (x - clipped).sign_()
            if not ctx.signed:
                outside = outside.clamp_(min=0.0)
            # q - clipped: q - x where grad_in is not 0, and finite where x is +-inf
            grad_lam = torch.dot(grad_in.reshape(-1), (q - clipped).reshape(-1)) / lam_v
            if isinstance(ctx.p, torch.Tensor) or ctx.p < 1.0:
                grad_lam = grad_lam * ctx.p
            grad_lam = grad_lam + torch.dot(grad_out.reshape(-1), outside.reshape(-1))
            grad_lam = grad_lam.reshape(lam.shape).to(lam.dtype)
        return grad_in if ctx.needs_input_grad[0] else None, grad_lam, None, None, None, None


def quantize(x: torch.Tensor, lam: torch.Tensor, book: CodeBook, signed: bool = False,
             p: float = 1.0) -> torch.Tensor:
    """Quantize ``x`` to the levels ``delta * codes`` of ``book`` with straight-through gradients;
    with ``p < 1`` the progressive mix ``(1 - p) clip(x, low, lambda) + p Q(x)`` instead (computed
    as ``Q + (1 - p) (clip - Q)``)."""
    if not torch.is_floating_point(x):
        raise ConfigError(f"quantize expects a floating-point tensor, got {x.dtype}")
    p = in_unit_interval("the mixing fraction p", p)
    return _Quantize.apply(x, lam, book, signed, p, 1.0 - p)


#: compiled variants one fused kernel may hold: one per activation shape of a network (the
#: kernels are compiled for fixed shapes, which vectorise best on CPUs)
FUSED_SHAPES = 64
_FUSED: dict = {}  # "kernel": the compiled function; "failed": why compiling it failed


def _mix(x, lam, book, signed, p, w):
    return _Quantize.apply(x, lam, book, signed, p, w)


def _fused_quantize(x, lam, book, signed, p, w) -> torch.Tensor:
    """`_Quantize` with tensor ``p`` / ``w`` through ``torch.compile``: forward and backward each
    become one fused loop over the activation (same bits as the eager passes). Where compiling
    fails (a CPU without a C++ compiler), a warning, and the eager passes from then on."""
    if "failed" not in _FUSED:
        if "kernel" not in _FUSED:
            _FUSED["kernel"] = torch.compile(_mix, dynamic=False)
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        try:
            with torch._dynamo.config.patch({limit: FUSED_SHAPES}):
                return _FUSED["kernel"](x, lam, book, signed, p, w)
        except Exception as exc:  # the compiler's own failure: the eager passes below raise any real error
            _FUSED["failed"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            warnings.warn(f"fused quantizers are off: compiling them failed ({_FUSED['failed']}); "
                          "training goes on with the eager quantizers", RuntimeWarning, stacklevel=2)
    return _Quantize.apply(x, lam, book, signed, p, w)


def _dispatch_mode():
    """The active ``TorchDispatchMode`` (``FlopCounterMode``, ...), if any: compiling under one
    would leave the fused kernel skipped for good."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    return _get_current_dispatch_mode()


def _usable(lam: torch.Tensor) -> bool:
    """A lambda a quantizer can work with: positive and finite (reads it on the host)."""
    return bool(torch.isfinite(lam).all() & (lam > 0).all())


class Quantizer(nn.Module):
    """Base class of the activation quantizers: a learnable clip ``lam`` and a code book.

    Attributes:
        lam: learnable clip / scale lambda (a scalar parameter).
        p: mixing fraction of the progressive schedule (1 = fully quantized, convertible).
        bypass: when True the module acts as ReLU (unsigned) or identity (signed); used by
            calibration to look at the unclipped pre-activations.
        record: when True, every call of `forward` (at p = 1) and of `codes` keeps the integer
            codes it chose in ``last_codes``; `ge2mst.analysis.verification` compares them with the spikes.
    """

    signed: bool = False

    def __init__(self, book: CodeBook, lam: float = 1.0, p: float = 1.0, learn_lambda: bool = True):
        super().__init__()
        self.book = book
        self.lam = nn.Parameter(torch.tensor(positive_number("lambda", lam)), requires_grad=learn_lambda)
        # p and 1 - p as tensors for compiled training (not saved: p is set by the schedule)
        self.register_buffer("p_tensor", torch.ones(()), persistent=False)
        self.register_buffer("w_tensor", torch.zeros(()), persistent=False)
        self.p = p
        self.bypass = False
        self.record = False
        self.fused = False  # training: forward and backward compiled into fused loops
        self.last_codes: torch.Tensor | None = None

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = in_unit_interval("the mixing fraction p", value)
        with torch.no_grad():  # in place, on the module's device: no host synchronisation
            self.p_tensor.fill_(self._p)
            self.w_tensor.fill_(1.0 - self._p)

    @property
    def delta(self) -> float:
        """Level spacing delta = lambda / n_max (float32-rounded)."""
        return float(level_spacing(self.lam, self.book.n_max))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bypass:
            return x if self.signed else torch.relu(x)
        if x.dtype in (torch.float16, torch.bfloat16):
            # mixed-precision training: the levels are chosen in float32, never in 8-11 bits
            kind = x.device.type if torch.amp.is_autocast_available(x.device.type) else "cpu"
            with torch.autocast(kind, enabled=False):
                return self.forward(x.float())
        lam = self.lam
        if not self.training and lam.device.type != "meta" and not _usable(lam):
            # inference only (a training step never waits for the host; training keeps lambda
            # positive after each step)
            raise ConfigError(f"{type(self).__name__} has lambda = {lam.detach().cpu().tolist()}: "
                              "it must be a positive finite number (set it, or calibrate the model)")
        if self._p >= 1.0 and self.record:
            self.last_codes = quantize_codes(x, lam, self.book, self.signed)
        if torch.compiler.is_compiling():  # p as a graph input: a moving p never recompiles
            return _Quantize.apply(x, lam, self.book, self.signed, self.p_tensor, self.w_tensor)
        if self.fused and self.training and _dispatch_mode() is None:  # a FLOP counter sees eager ops
            return _fused_quantize(x, lam, self.book, self.signed, self.p_tensor, self.w_tensor)
        return quantize(x, lam, self.book, self.signed, self._p)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of ``x`` (what the spiking neuron encodes in its spike pattern)."""
        codes = quantize_codes(x, self.lam, self.book, self.signed)
        if self.record:
            self.last_codes = codes
        return codes

    def extra_repr(self) -> str:
        return f"{self.book.describe()}, lam={float(self.lam.detach()):.4g}, p={self._p:g}"


class ExpGQuant(Quantizer):
    """Unsigned ExpG quantizer with ``T`` steps in ``G`` groups (G = 1: Exp-IF, G = T: uniform)."""

    def __init__(self, T: int = 4, G: int = 2, lam: float = 1.0, p: float = 1.0,
                 learn_lambda: bool = True) -> None:
        T, G = check_time_groups(T, G)
        super().__init__(expg_codebook(T, G), lam=lam, p=p, learn_lambda=learn_lambda)

    @property
    def T(self) -> int:
        return self.book.T

    @property
    def G(self) -> int:
        return self.book.G

    def set_time_steps(self, T: int, G: int) -> None:
        """Re-code with another (T, G); lambda is kept."""
        T, G = check_time_groups(T, G)
        self.book = expg_codebook(T, G)


class SignedExpGQuant(ExpGQuant):
    """Signed ExpG quantizer sign(x) * Q(|x|) on [-lambda, lambda]: ternary spikes in SNN mode."""

    signed = True


class ExpIFQuant(ExpGQuant):
    """Exp-IF: ExpG with a single group, levels {0, 1, 2, 4, ...} * delta and at most one spike."""

    def __init__(self, T: int = 4, lam: float = 1.0, p: float = 1.0, learn_lambda: bool = True):
        super().__init__(T=T, G=1, lam=lam, p=p, learn_lambda=learn_lambda)


class QCFSQuant(Quantizer):
    """Uniform L-level quantizer of QCFS (floor(x L / lambda + 1/2), clipped): the baseline."""

    def __init__(self, L: int = 4, lam: float = 1.0, p: float = 1.0, learn_lambda: bool = True):
        super().__init__(uniform_codebook(L), lam=lam, p=p, learn_lambda=learn_lambda)

    @property
    def L(self) -> int:
        return self.book.L

    def set_levels(self, L: int) -> None:
        self.book = uniform_codebook(L)


def quantizers(model: nn.Module):
    """Yield ``(name, quantizer)`` for every quantizer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, Quantizer):
            yield name, module


def set_mixing(model: nn.Module, p: float) -> None:
    """Set the progressive mixing fraction ``p`` of every quantizer of ``model``."""
    for _, q in quantizers(model):
        q.p = p


def fuse_quantizers(model: nn.Module, on: bool = True) -> None:
    """Train every quantizer of ``model`` through fused kernels (``torch.compile`` of its forward
    and backward, one variant per activation shape; the same bits as the eager passes, p included,
    and no recompilation as p moves). Evaluation and conversion keep the eager passes. Needs a
    C++ compiler on CPUs (else a warning, and the eager passes)."""
    for _, q in quantizers(model):
        q.fused = bool(on)


def set_time_steps(model: nn.Module, T: int, G: int) -> None:
    """Re-code every ExpG quantizer of ``model`` with (T, G); QCFS quantizers get L = T."""
    for _, q in quantizers(model):
        if isinstance(q, ExpGQuant):
            q.set_time_steps(T, G if not isinstance(q, ExpIFQuant) else 1)
        elif isinstance(q, QCFSQuant):
            q.set_levels(T)
