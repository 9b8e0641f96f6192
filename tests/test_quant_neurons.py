"""Quantizers (ANN mode) against neurons (SNN mode): property tests over every (T, G)."""

import math
from pathlib import Path

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ge2mst import ExpGIF, ExpGQuant, IFNeuron, QCFSQuant, SignedExpGQuant
from ge2mst.core.coding import expg_codebook, level_spacing
from ge2mst.errors import ConfigError, InputError

VALID_TG = [(T, G) for T in range(1, 9) for G in range(1, T + 1) if T % G == 0]


def _inputs(book, lam, draw_floats, signed):
    """Random values plus every boundary exactly and one float64 ulp either side of it."""
    delta = level_spacing(torch.tensor(lam), book.n_max)
    bounds = delta * book.mids
    below = torch.nextafter(bounds, torch.full_like(bounds, -math.inf))
    above = torch.nextafter(bounds, torch.full_like(bounds, math.inf))
    x = torch.cat([torch.tensor(draw_floats, dtype=torch.float64), bounds, below, above,
                   torch.tensor([0.0, -0.0, lam, 10 * lam, -lam], dtype=torch.float64)])
    if signed:
        x = torch.cat([x, -x])
    return x


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG), signed=st.booleans(),
       lam=st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False),
       values=st.lists(st.floats(min_value=-2e3, max_value=2e3, allow_nan=False, width=64),
                       min_size=1, max_size=64))
def test_quantizer_search_and_sequential_neurons_agree(tg, signed, lam, values):
    T, G = tg
    qcls = SignedExpGQuant if signed else ExpGQuant
    q = qcls(T=T, G=G, lam=lam).double()
    x = _inputs(q.book, lam, values, signed)
    expected = q(x).detach()
    codes = q.codes(x)
    for form in ("search", "sequential"):
        neuron = ExpGIF(T, G, q.lam.detach(), signed=signed, form=form)
        spikes = neuron.fire(x)
        assert spikes.shape == (T, x.numel())
        allowed = {-1, 0, 1} if signed else {0, 1}
        assert set(spikes.unique().tolist()) <= allowed
        assert int(spikes.abs().sum(0).max()) <= G
        assert not neuron.book.illegal_mask(spikes).any()
        assert torch.equal(neuron.book.code_of(spikes), codes)
        assert torch.equal(neuron.decode(spikes, torch.float64), expected)
        if not signed:
            assert (spikes >= 0).all()
        else:  # every spike carries the sign of the membrane
            assert ((spikes * torch.sign(x)) >= 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG + [(0, 4), (0, 64)]), signed=st.booleans(),
       lam=st.floats(min_value=0.0009765625, max_value=1024.0, allow_nan=False,
                     allow_infinity=False, width=32),
       values=st.lists(st.floats(min_value=-2048.0, max_value=2048.0, width=32), min_size=1, max_size=64),
       search_levels=st.sampled_from([0, 4, 10_000]))
def test_float32_fast_path_equals_the_float64_integer_path(tg, signed, lam, values, search_levels):
    """Training's float32 quantizer (binary search on rounded-up boundaries, or the grid with
    two exact edge comparisons) gives the very bits of delta * code computed in float64 and
    rounded once, at every boundary and one float32 ulp either side, for inf, -0 and NaN."""
    import ge2mst.core.quantizers as quant
    from ge2mst.core.coding import uniform_codebook

    T, G = tg
    book = uniform_codebook(G) if T == 0 else expg_codebook(T, G)  # (0, L): QCFS levels
    lam_t = torch.tensor(lam)
    bounds = (level_spacing(lam_t, book.n_max) * book.mids).to(torch.float32)
    x = torch.cat([torch.tensor(values, dtype=torch.float32), bounds,
                   torch.nextafter(bounds, torch.full_like(bounds, -math.inf)),
                   torch.nextafter(bounds, torch.full_like(bounds, math.inf)),
                   torch.tensor([0.0, -0.0, lam, -lam, 10 * lam, math.inf, -math.inf, math.nan])])
    if signed:
        x = torch.cat([x, -x])
    codes = quant.quantize_codes(x, lam_t, book, signed)
    expected = quant.codes_to_values(codes, lam_t, book.n_max, torch.float32)
    expected = torch.where(torch.isnan(x), x, expected)
    old, quant.SEARCH_LEVELS = quant.SEARCH_LEVELS, search_levels
    try:
        got = quant._quantize_float32(x, lam_t, book, signed)
    finally:
        quant.SEARCH_LEVELS = old
    assert got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32)[~torch.isnan(x)],
                       expected.view(torch.int32)[~torch.isnan(x)])  # bits: +0 stays +0
    assert torch.isnan(got[torch.isnan(x)]).all()


@pytest.mark.parametrize("T,G", VALID_TG)
def test_event_mode_output_sums_to_the_quantized_value(T, G):
    torch.manual_seed(T * 10 + G)
    q = ExpGQuant(T=T, G=G, lam=1.7).double()
    currents = torch.randn(T, 3, 50, dtype=torch.float64)
    neuron = ExpGIF(T, G, q.lam.detach(), form="sequential")
    out = neuron(currents)
    assert out.shape == currents.shape
    torch.testing.assert_close(out.sum(0), q(currents.sum(0)).detach(), rtol=0, atol=1e-15)
    # each step's output is a spike times theta_t = delta * 2**(T-1-t)
    theta = neuron.thresholds().view(-1, 1, 1)
    ratio = out / theta
    assert torch.equal(ratio, ratio.round()) and set(ratio.unique().tolist()) <= {0.0, 1.0}


def test_worked_example_of_the_method_note():
    q = ExpGQuant(T=4, G=2, lam=2.0)
    x = torch.tensor([1.13, 1.95])
    torch.testing.assert_close(q(x), torch.tensor([1.2, 2.0]))
    assert q.codes(x).tolist() == [6, 10]
    spikes = ExpGIF(4, 2, 2.0).fire(x)
    assert spikes.T.tolist() == [[0, 1, 1, 0], [1, 0, 1, 0]]
    # QCFS with L = 4 gives 1.0 (2 spikes) and 2.0 (4 spikes)
    qcfs = QCFSQuant(L=4, lam=2.0)
    torch.testing.assert_close(qcfs(x), torch.tensor([1.0, 2.0]))
    assert qcfs.codes(x).tolist() == [2, 4]


def test_ties_go_up_and_clipping():
    q = ExpGQuant(T=4, G=2, lam=2.0).double()
    delta = q.delta
    x = torch.tensor([delta * 0.5, delta * 0.5 - 1e-12, -5.0, 100.0], dtype=torch.float64)
    assert q.codes(x).tolist() == [1, 0, 0, 10]


# ---- gradients -----------------------------------------------------------------------------
def _surrogate(x, lam, frozen, signed):
    """lambda * clip(x / lambda) + lambda * D, with D = P(c) - c frozen at the evaluation point."""
    low = -1.0 if signed else 0.0
    return lam * torch.clamp(x / lam, low, 1.0) + lam * frozen


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("T,G", [(4, 2), (4, 1), (4, 4), (8, 2), (6, 3)])
def test_gradients_match_finite_differences_of_the_surrogate(T, G, signed):
    torch.manual_seed(0)
    lam0 = 1.3
    x = (torch.rand(200, dtype=torch.float64) * 4 - 2) * lam0
    x = x[(x.abs() - lam0).abs() > 1e-3]  # stay off the clip kinks, where FD is undefined
    x = x[x.abs() > 1e-3]
    q = (SignedExpGQuant if signed else ExpGQuant)(T=T, G=G, lam=lam0).double()
    xg = x.clone().requires_grad_(True)
    weights = torch.randn_like(x)
    (q(xg) * weights).sum().backward()
    eps = 1e-6
    lam = torch.tensor(lam0, dtype=torch.float64)
    with torch.no_grad():
        frozen = (q(x) - torch.clamp(x, -lam0 if signed else 0, lam0)) / lam0
    # d/dx by central differences of the surrogate, element by element
    fd_x = (_surrogate(x + eps, lam, frozen, signed)
            - _surrogate(x - eps, lam, frozen, signed)) / (2 * eps)
    torch.testing.assert_close(xg.grad, weights * fd_x, rtol=1e-6, atol=1e-6)

    def f(lv):  # d/dlambda, D frozen at lambda0
        return _surrogate(x, lv, frozen, signed) @ weights

    fd_lam = (f(lam + eps) - f(lam - eps)) / (2 * eps)
    torch.testing.assert_close(q.lam.grad, fd_lam.to(q.lam.dtype), rtol=1e-5, atol=1e-6)


def test_lambda_gradient_formula_by_region():
    q = ExpGQuant(T=4, G=2, lam=2.0).double()
    x = torch.tensor([-0.5, 1.13, 3.0], dtype=torch.float64)
    for i, expected in enumerate([0.0, (1.2 - 1.13) / 2.0, 1.0]):
        q.zero_grad()
        q(x)[i].backward()
        assert float(q.lam.grad) == pytest.approx(expected, abs=1e-7)  # delta is float32-rounded
    s = SignedExpGQuant(T=4, G=2, lam=2.0).double()
    s(torch.tensor([-3.0], dtype=torch.float64)).sum().backward()
    assert float(s.lam.grad) == -1.0


def test_progressive_mixing_gradcheck():
    q = ExpGQuant(T=4, G=2, lam=1.0, p=0.3).double()
    x = torch.tensor([0.21, 0.77, 1.6, -0.4], dtype=torch.float64)
    out = q(x)
    clipped = torch.clamp(x, 0, 1.0)
    quant = ExpGQuant(T=4, G=2, lam=1.0).double()(x)
    torch.testing.assert_close(out, 0.7 * clipped + 0.3 * quant)
    with pytest.raises(ConfigError):
        q.p = 1.5


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.85])
def test_progressive_mixing_gradients_match_the_composed_graph(p, signed):
    """The mix is one autograd node; its gradients in x and lambda must equal those of the
    graph written out: (1 - p) * clamp(x, low, lambda) + p * Q(x), with Q at p = 1."""
    torch.manual_seed(1)
    lam0 = 1.3
    x = (torch.rand(300, dtype=torch.float64) * 4 - 2) * lam0
    x = x[((x.abs() - lam0).abs() > 1e-3) & (x.abs() > 1e-3)]  # off the clip kinks
    weights = torch.randn_like(x)
    cls = SignedExpGQuant if signed else ExpGQuant
    mixed = cls(T=4, G=2, lam=lam0, p=p).double()
    xg = x.clone().requires_grad_(True)
    out = mixed(xg)
    (out * weights).sum().backward()
    plain = cls(T=4, G=2, lam=lam0).double()
    xr = x.clone().requires_grad_(True)
    low = -plain.lam if signed else torch.zeros_like(plain.lam)
    ref = (1 - p) * torch.clamp(xr, min=low, max=plain.lam) + p * plain(xr)
    (ref * weights).sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=1e-15)  # (1-p) w + p w = w
    torch.testing.assert_close(mixed.lam.grad, plain.lam.grad, rtol=1e-12, atol=1e-12)
    assert float(mixed.lam.grad) != 0.0


# ---- whole-window firing is necessary --------------------------------------------------------
def test_online_firing_gives_wrong_codes_in_a_two_layer_network():
    torch.manual_seed(0)
    T, G = 4, 2
    layer1 = ExpGIF(T, G, 1.0)
    w = torch.randn(64, 32, dtype=torch.float64) / 4
    a = torch.rand(500, 64, dtype=torch.float64) * 1.2
    # layer 1 receives its input at step 1 and emits theta-weighted spikes over T steps
    cur1 = torch.zeros(T, 500, 64, dtype=torch.float64)
    cur1[0] = a
    out1 = layer1(cur1)
    cur2 = out1 @ w  # per-step input currents of layer 2
    whole = ExpGIF(T, G, 1.0)
    online = ExpGIF(T, G, 1.0, form="sequential", online=True)
    whole.record = online.record = True
    whole(cur2)
    online(cur2)
    ref = ExpGQuant(T=T, G=G, lam=1.0).double().codes(cur2.sum(0))
    assert torch.equal(whole.book.code_of(whole.last_spikes), ref)
    wrong = int((online.book.code_of(online.last_spikes) != ref).sum())
    assert wrong > 0.02 * ref.numel(), wrong


# ---- vanilla IF ------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 2, 4, 8])
def test_if_neuron_with_constant_current_is_qcfs(T):
    lam = 1.5
    z = torch.linspace(-0.5, 2.0, 257, dtype=torch.float64)
    z = z[((z * T / lam) - (z * T / lam).floor() - 0.5).abs() > 1e-9]  # avoid exact ties
    neuron = IFNeuron(T, lam)
    out = neuron((z / T).expand(T, -1).contiguous())
    expected = QCFSQuant(L=T, lam=lam).double()(z).detach()
    torch.testing.assert_close(out.sum(0), expected)


def test_if_neuron_fires_online():
    neuron = IFNeuron(4, 4.0)  # theta = 1, v0 = 0.5
    neuron.record = True
    cur = torch.tensor([[2.0], [0.0], [0.0], [-2.0]], dtype=torch.float64)
    out = neuron(cur)
    # fires at steps 1 and 2 from the early current; the late negative current cannot undo them
    assert neuron.last_spikes[:, 0].tolist() == [1, 1, 0, 0]
    assert out.sum().item() == 2.0
    assert QCFSQuant(L=4, lam=4.0)(torch.tensor([0.0])).item() == 0.0


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(T=4, G=3), "divide"), (dict(T=0, G=1), "at least 1"),
    (dict(T=4, G=2, lam=0.0), "positive"), (dict(T=4, G=2, lam=-1.0), "positive"),
    (dict(T=4, G=2, lam=float("nan")), "positive"),
])
def test_quantizer_rejects_impossible_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ExpGQuant(**kwargs)


def test_neuron_rejects_bad_input():
    neuron = ExpGIF(4, 2, 1.0)
    with pytest.raises(InputError, match="T = 4 first"):
        neuron(torch.zeros(3, 2, 5))
    with pytest.raises(InputError, match="T x B"):
        neuron(torch.zeros(4))
    with pytest.raises(InputError, match="NaN"):
        neuron(torch.full((4, 2), float("nan")))
    one_nan = torch.zeros(4, 2, 3)
    one_nan[3, 1, 2] = float("nan")  # one current of the last step
    with pytest.raises(InputError, match="NaN"):
        neuron(one_nan)
    opposite = torch.zeros(4, 2)
    opposite[0, 0], opposite[2, 0] = float("inf"), -float("inf")
    with pytest.raises(InputError, match="inf"):
        neuron(opposite)
    with pytest.raises(InputError, match="floating-point"):
        neuron(torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ConfigError, match="positive"):
        ExpGIF(4, 2, 0.0)
    with pytest.raises(ConfigError, match="form"):
        ExpGIF(4, 2, 1.0, form="magic")


def test_codebooks_are_shared_not_rebuilt():
    assert expg_codebook(4, 2) is expg_codebook(4, 2)


SHIPPED_TINY = (Path(__file__).resolve().parents[1] / "checkpoints"
                / "ge2mst_cifar_tiny_effdim.safetensors")


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
@pytest.mark.cifar
@pytest.mark.parametrize("T,G,search_levels", [(4, 2, 0), (8, 2, 0), (2, 2, 4), (4, 2, 10_000)])
def test_float32_fast_path_is_bit_identical_on_real_cifar_activations(cache_dir, monkeypatch, T, G,
                                                                      search_levels):
    """Every quantizer input of the trained, shipped cifar_tiny on 128 real CIFAR-10 test images
    in a training-mode forward pass (float32, as in training: convolutions, MLPs, Q, K, V and the
    attention matrices) quantizes to the very bits of the float64 integer path."""
    import ge2mst.core.quantizers as quant
    from ge2mst.data import load_dataset, normalize
    from ge2mst.io.checkpoint import load_checkpoint

    model, config = load_checkpoint(SHIPPED_TINY, T=T, G=G)
    model.train()  # the training path: attention through the quantizers, not the integer codes
    data = load_dataset(str(CIFAR), split="test", limit=128, cache_dir=cache_dir)
    x = normalize(data.images, torch.tensor(config["mean"]), torch.tensor(config["std"]))
    seen = []
    fast = quant._quantize_float32

    def recording(inp, lam, book, signed):
        out = fast(inp, lam, book, signed)
        seen.append((inp, lam, book, signed, out))
        return out

    monkeypatch.setattr(quant, "_quantize_float32", recording)
    monkeypatch.setattr(quant, "SEARCH_LEVELS", search_levels)  # grid, or binary search
    with torch.no_grad():
        model(x.float())
    assert len(seen) == len(list(quant.quantizers(model)))  # every quantizer, once
    paths, compared = set(), 0
    for inp, lam, book, signed, out in seen:
        paths.add(book.num_levels <= quant.SEARCH_LEVELS)
        codes = quant.quantize_codes(inp, lam, book, signed)
        expected = quant.codes_to_values(codes, lam, book.n_max, torch.float32)
        assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
        compared += inp.numel()
    assert compared > 1_000_000
    assert paths == {search_levels > 0}  # the path the parametrisation means to exercise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG), signed=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       lam=st.floats(min_value=0.0009765625, max_value=1024.0, allow_nan=False,
                     allow_infinity=False, width=32),
       values=st.lists(st.floats(allow_nan=False, allow_infinity=True, width=32), max_size=48))
def test_collapsed_neuron_without_recording_decodes_what_its_spikes_say(tg, signed, dtype, lam,
                                                                        values):
    """The collapsed neuron's fast path (Q(V) by the quantizer's kernel, spikes not materialised)
    gives the very bits of decoding the spikes it emits when recording, at every boundary."""
    T, G = tg
    neuron = ExpGIF(T, G, lam, signed=signed)
    neuron.step_mode = "collapsed"
    x = _inputs(neuron.book, lam, values, signed).to(dtype)
    fast = neuron(x)
    assert neuron.last_spikes is None  # the fast path fired no pattern table
    neuron.record = True
    recorded = neuron(x)
    assert neuron.last_spikes is not None and fast.dtype == recorded.dtype == dtype
    assert torch.equal(fast, recorded) and torch.equal(torch.signbit(fast), torch.signbit(recorded))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG), signed=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       lam=st.floats(min_value=0.0009765625, max_value=1024.0, allow_nan=False,
                     allow_infinity=False, width=32),
       values=st.lists(st.floats(allow_nan=False, allow_infinity=True, width=32), max_size=48),
       seed=st.integers(0, 1000))
def test_event_neuron_without_recording_emits_what_the_recording_path_emits(tg, signed, dtype, lam,
                                                                           values, seed):
    """Event mode's form A (code by binary search, its digits written out as theta_t * s_t) gives
    the very bits of firing through the pattern table and weighting in float64, records those
    spikes and the membrane, membranes on and one ulp either side of every boundary included."""
    T, G = tg
    neuron = ExpGIF(T, G, lam, signed=signed)
    membranes = _inputs(neuron.book, lam, values, signed)
    # spread each membrane over the T steps: the first step carries it, the others cancel out
    noise = torch.randn((T - 1, membranes.numel()), generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64).round()
    currents = torch.cat([(membranes - noise.sum(0)).unsqueeze(0), noise]).to(dtype)
    currents = torch.nan_to_num(currents, nan=0.0)
    fast = neuron(currents)
    assert neuron.last_spikes is None  # nothing recorded
    neuron.record = True
    assert torch.equal(neuron(currents), fast)  # recording changes nothing in the output
    # firing through the pattern table (form A as `fire` does it) and weighting in float64
    # the window's membrane is the currents added in time order (the event-driven definition;
    # torch.sum may add them in another order, which moves inputs one ulp off a boundary)
    membrane = currents[0].to(torch.float64)
    for current in currents[1:]:
        membrane = membrane + current.to(torch.float64)
    table = neuron.fire(membrane)
    assert torch.equal(neuron.last_spikes, table.to(torch.int8))
    assert torch.equal(neuron.last_membrane, membrane)
    theta = neuron.thresholds().view(-1, 1)
    reference = (table.to(torch.float64) * theta).to(dtype)
    assert fast.shape == reference.shape == currents.shape and fast.dtype == dtype
    assert torch.equal(fast, reference) and torch.equal(torch.signbit(fast), torch.signbit(reference))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("signed", [False, True])
def test_event_neuron_leaves_its_input_alone_and_sums_the_window_in_order(dtype, signed):
    """The event-mode neuron sums its window into a membrane of its own (the residual stream it
    reads is used again after it) and in the order of torch.sum over the steps, in float64."""
    gen = torch.Generator().manual_seed(3)
    scale = torch.logspace(-6, 6, 4, dtype=torch.float64).view(4, 1, 1)
    currents = (torch.randn(4, 64, 33, generator=gen, dtype=torch.float64) * scale).to(dtype)
    before = currents.clone()
    neuron = ExpGIF(4, 2, 3.0, signed=signed)
    neuron.record = True
    neuron(currents)
    assert torch.equal(currents, before)
    assert torch.equal(neuron.last_membrane, torch.sum(before, 0, dtype=torch.float64))


@pytest.mark.parametrize(("T", "G"), [(4, 2), (4, 1), (4, 4), (6, 3), (8, 2)])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("step_mode", ["event", "collapsed"])
def test_codes_without_spike_trains_equal_the_codes_of_the_spike_trains(T, G, signed, step_mode):
    """`ExpGIF.codes` (boundary comparisons on the membrane, no spike trains) against the code of
    the fired pattern, for membranes on every boundary, one ulp either side, zeros and +-inf."""
    neuron = ExpGIF(T, G, 2.5, signed=signed)
    neuron.step_mode = step_mode
    book = neuron.book
    bounds = neuron.delta64 * book.mids
    edge = torch.cat([bounds, torch.nextafter(bounds, torch.full_like(bounds, 1e9)),
                      torch.nextafter(bounds, torch.zeros_like(bounds)),
                      torch.tensor([0.0, -0.0, 1e9, float("inf"), -float("inf")], dtype=torch.float64)])
    membrane = torch.cat([edge, -edge, torch.randn(200, dtype=torch.float64) * 3])
    if step_mode == "event":
        x = torch.zeros(T, membrane.numel(), dtype=torch.float64)
        x[0] = membrane  # one step carries the whole window: the membrane is exact
    else:
        x = membrane
    assert torch.equal(neuron.codes(x), book.code_of(neuron.spike(x)))
