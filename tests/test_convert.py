"""Conversion: BN folding, module swap, and SNN == ANN element by element on real images.

The real images here are scikit-learn's bundled handwritten digits (always present); the CIFAR-10
checks live in test_cli_verify.py.
"""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from ge2mst import (
    ConversionError,
    ExpGIF,
    ExpGQuant,
    IFNeuron,
    InputError,
    SignedExpGQuant,
    calibrate,
    convert,
    create_model,
    set_time_steps,
)
from ge2mst.analysis.verification import verify
from ge2mst.conversion.converter import ConversionOptions
from ge2mst.conversion.mapping import (
    DEFAULT_SPIKING_MAPPING,
    builder_for,
    expg_neuron,
    refuse_batchnorm,
    synapse,
    time_distributed,
)
from ge2mst.core.quantizers import ExpIFQuant, QCFSQuant, quantizers
from ge2mst.errors import ConfigError
from ge2mst.nn.attention import SSA
from ge2mst.nn.layers import ConvBN, Synapse, TimeDistributed
from ge2mst.nn.spiking_attention import SpikingGWSSA


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    x = (x - x.mean()) / x.std()
    return x[:400], torch.tensor(d.target[:400])


def _calibrated(x, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, **kwargs)
    calibrate(model, [x[:200]])
    return model.eval()


def _codes(model, x):
    store = {}
    hooks = [q.register_forward_hook(lambda m, a, o, n=n: store.__setitem__(n, m.codes(a[0])))
             for n, q in quantizers(model)]
    model(x)
    for h in hooks:
        h.remove()
    return store


@pytest.mark.parametrize("T,G", [(4, 2), (4, 1), (4, 4), (8, 2), (6, 3), (1, 1)])
@pytest.mark.parametrize("form", ["search", "sequential"])
def test_event_snn_reproduces_every_code_and_logit(digits, T, G, form):
    x, _ = digits
    model = _calibrated(x, T=T, G=G).double()
    xd = x.double()
    ann_logits = model(xd)
    ann_codes = _codes(model, xd)
    snn = convert(model, form=form).double()
    snn_logits = snn(xd, record=True)
    spikes = snn.spike_trains()
    assert set(spikes) == set(ann_codes)
    for name, s in spikes.items():
        neuron = dict(snn.neurons())[name]
        assert s.shape == (T, *ann_codes[name].shape)
        assert torch.equal(neuron.book.code_of(s), ann_codes[name]), name
        assert int(s.sum(0).max()) <= G
    torch.testing.assert_close(snn_logits, ann_logits, rtol=1e-12, atol=1e-12)
    assert torch.equal(snn_logits.argmax(1), ann_logits.argmax(1))


def test_collapsed_float32_is_bit_identical_when_bn_is_folded_in_both(digits):
    x, _ = digits
    model = _calibrated(x)
    snn = convert(model, step_mode="collapsed")
    # the ANN with the same folded weights: the collapsed SNN calls the same kernels on the
    # same values, so the logits are equal to the last bit
    folded = convert(model, step_mode="collapsed").body
    for _, n in convert(model).neurons():
        assert isinstance(n, ExpGIF)
    ref = nn.Sequential(*[m.layer if isinstance(m, Synapse) else m.module
                          if isinstance(m, TimeDistributed) else m for m in folded])
    assert torch.equal(snn(x), ref(x))


def test_float32_event_snn_agrees_with_ann(digits):
    x, y = digits
    model = _calibrated(x)
    report = verify(model, [(x[i:i + 100], y[i:i + 100]) for i in range(0, 400, 100)],
                    dtype="float32")
    assert report["prediction_agreement"] == 1.0
    assert report["max_rel_diff"] <= 1e-5
    assert report["illegal_patterns"] == 0
    assert report["ann_accuracy"] == report["snn_accuracy"]
    # 16 x 8 x 8 + 32 x 4 x 4 + 32 x 4 x 4 + 64 x 2 x 2 neurons per digit image, any batching
    assert report["neurons_per_image"] == 1024 + 512 + 512 + 256
    single = verify(model, [(x[:7], y[:7])], dtype="float32")
    assert single["neurons_per_image"] == report["neurons_per_image"]
    assert single["codes_compared"] == 7 * report["neurons_per_image"]


def test_batchnorm_is_folded_and_swaps_are_complete(digits):
    x, _ = digits
    model = _calibrated(x)
    snn = convert(model)
    kinds = {type(m) for m in snn.modules()}
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert not any(issubclass(k, ExpGQuant) for k in kinds)
    assert sum(isinstance(m, Synapse) for m in snn.modules()) == 5
    # the original model is untouched
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4


def test_signed_quantizer_converts_to_ternary_neuron(digits):
    x, _ = digits
    model = nn.Sequential(ConvBN(1, 8, 3), SignedExpGQuant(4, 2), nn.Flatten(1),
                          nn.Linear(8 * 64, 10)).double()
    calibrate(model, [x[:200].double()])
    model.eval()
    snn = convert(model).double()
    out = snn(x.double(), record=True)
    torch.testing.assert_close(out, model(x.double()), rtol=1e-12, atol=1e-12)
    spikes = next(iter(snn.spike_trains().values()))
    assert set(spikes.unique().tolist()) == {-1, 0, 1}


def test_vanilla_if_conversion_error_shrinks_with_T(digits):
    """QCFS conversion with online IF neurons: nonzero error at T = 4, shrinking as T grows."""
    x, _ = digits
    base = _calibrated(x, T=4, G=1, quantizer="qcfs")
    errors = {}
    for T in (4, 8, 16, 32, 64):
        model = create_model("ge2mst_cnn_tiny", in_chans=1, T=4, G=1, quantizer="qcfs")
        model.load_state_dict(base.state_dict())
        set_time_steps(model, T, 1)  # QCFS with L = T
        model.eval().double()
        a = model(x.double())
        s = convert(model, encoding="repeat").double()(x.double())
        errors[T] = float(((s - a).abs().amax(1) / a.abs().amax(1)).mean().detach())
    assert errors[4] > 0.05, errors
    assert errors[4] > errors[8] > errors[16] > errors[32] > errors[64], errors
    assert errors[64] < errors[4] / 4, errors
    # the same model with ExpG-IF at T = 4 is exact
    expg = _calibrated(x, T=4, G=2).double()
    torch.testing.assert_close(convert(expg).double()(x.double()), expg(x.double()),
                               rtol=1e-12, atol=1e-12)


def test_if_neurons_come_from_qcfs(digits):
    x, _ = digits
    snn = convert(_calibrated(x, T=8, G=1, quantizer="qcfs"), encoding="repeat")
    assert all(isinstance(n, IFNeuron) and n.T == 8 for _, n in snn.neurons())


# ---- what cannot be converted ----------------------------------------------------------------
def test_partially_mixed_model_is_refused(digits):
    x, _ = digits
    model = _calibrated(x)
    next(m for m in model.modules() if isinstance(m, ExpGQuant)).p = 0.5
    with pytest.raises(ConversionError, match="p = 0.5"):
        convert(model)


@pytest.mark.parametrize("bad", [nn.ReLU(), nn.LayerNorm(4), nn.GELU()])
def test_non_spiking_modules_are_refused_with_their_name(bad):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), ExpGQuant(), bad, nn.Flatten(1))
    with pytest.raises(ConversionError, match=r"'2'"):
        convert(model)


def test_max_pooling_of_spikes_converts_exactly_and_of_currents_is_refused(digits):
    x, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), ExpGQuant(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), ExpGQuant(), nn.MaxPool2d(2, padding=1),
                          nn.Flatten(), nn.Linear(8 * 3 * 3, 10))
    calibrate(model, [x[:128]])
    report = verify(model.eval(), [(x[:64], None)], oracle_sample=None)
    assert report["exact"] is True and report["codes_compared"] > 0
    with pytest.raises(ConversionError, match=r"max pooling '1' takes the output of Synapse"):
        convert(nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), ExpGQuant()))


def test_unfoldable_batchnorm_and_empty_model_are_refused():
    with pytest.raises(ConversionError, match="BatchNorm"):
        convert(nn.Sequential(ExpGQuant(), nn.BatchNorm2d(3)))
    with pytest.raises(ConversionError, match="no quantizer"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_spiking_network_rejects_bad_images(digits):
    x, _ = digits
    snn = convert(_calibrated(x))
    with pytest.raises(InputError, match="rank 4"):
        snn(x[0])
    with pytest.raises(InputError, match="1 input channels"):
        snn(torch.zeros(2, 3, 8, 8))
    with pytest.raises(InputError, match="NaN"):
        snn(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(InputError, match="floating-point"):
        snn(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


# ---- conversion rules as data ----------------------------------------------------------------
class _Halve(nn.Module):
    """A stateless linear module that no default rule knows."""

    def forward(self, x):
        return x / 2


class _HalveAgain(_Halve):
    pass


def test_default_rules_resolve_subclasses_through_the_mro():
    assert builder_for(SSA(8, 2), DEFAULT_SPIKING_MAPPING) == SpikingGWSSA.from_ann
    assert builder_for(SignedExpGQuant(), DEFAULT_SPIKING_MAPPING) is expg_neuron
    assert builder_for(ExpIFQuant(), DEFAULT_SPIKING_MAPPING) is expg_neuron
    assert builder_for(nn.BatchNorm1d(3), DEFAULT_SPIKING_MAPPING) is refuse_batchnorm
    assert builder_for(nn.Linear(2, 2), DEFAULT_SPIKING_MAPPING) is synapse
    assert builder_for(nn.ReLU(), DEFAULT_SPIKING_MAPPING) is None
    assert builder_for(nn.Sequential(), DEFAULT_SPIKING_MAPPING) is None


def test_a_user_mapping_extends_and_overrides_the_default_rules(digits):
    x, _ = digits
    torch.manual_seed(3)
    model = nn.Sequential(ConvBN(1, 8, 3), ExpGQuant(4, 2), _Halve(), ConvBN(8, 8, 3),
                          ExpIFQuant(4), _HalveAgain(), nn.AvgPool2d(2), nn.Flatten(1),
                          nn.Linear(8 * 16, 10)).double()
    calibrate(model, [x[:200].double()])
    model.eval()
    with pytest.raises(ConversionError, match=r"'2' \(_Halve\)"):
        convert(model)  # no rule for _Halve by default
    seen = []

    def halve(module, options, name):  # extends: a new class (and its subclass, by the MRO)
        seen.append((type(module).__name__, name, options.form))
        return time_distributed(module, options, name)

    def sequential_neuron(q, options, name):  # overrides: ExpGQuant and its subclass ExpIFQuant
        return ExpGIF.from_quantizer(q, form="sequential", name=name)

    mapping = {_Halve: halve, ExpGQuant: sequential_neuron}
    snn = convert(model, mapping=mapping).double()
    assert seen == [("_Halve", "2", "search"), ("_HalveAgain", "5", "search")]
    assert [(name, n.form, n.G) for name, n in snn.neurons()] == [("1", "sequential", 2),
                                                                 ("4", "sequential", 1)]
    assert isinstance(snn.body[2], TimeDistributed) and isinstance(snn.body[5], TimeDistributed)
    out = snn(x.double())
    torch.testing.assert_close(out, model(x.double()), rtol=1e-12, atol=1e-12)
    # the default rules are untouched, and a module's own to_spiking still comes first
    assert DEFAULT_SPIKING_MAPPING[ExpGQuant] is expg_neuron and _Halve not in DEFAULT_SPIKING_MAPPING
    assert all(n.form == "search" for _, n in convert(model, mapping={_Halve: halve}).neurons())

    class _Own(_Halve):
        def to_spiking(self, options, name=""):
            return nn.Identity()

    own = convert(nn.Sequential(ExpGQuant(), _Own()), mapping={_Halve: halve, _Own: halve})
    assert isinstance(own.body[1], nn.Identity)


@pytest.mark.parametrize("mapping", [[(nn.ReLU, synapse)], {"ReLU": synapse}, {int: synapse},
                                     {nn.ReLU: "synapse"}])
def test_a_malformed_mapping_is_refused(mapping):
    with pytest.raises(ConfigError, match="mapping"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), ExpGQuant()), mapping=mapping)


@pytest.mark.parametrize("kwargs,match", [
    (dict(form="magic"), "form must be one of"), (dict(step_mode="lazy"), "step_mode must be"),
    (dict(encoding="twice"), "encoding must be"), (dict(attention_products="floats"),
                                                   "attention_products must be"),
    (dict(T=0), "T must be a whole number >= 1"), (dict(T=2.0), "T must be a whole number"),
    (dict(T=True), "T must be a whole number"),
])
def test_conversion_options_refuse_bad_values_themselves(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ConversionOptions(**kwargs)
    with pytest.raises(ConfigError, match=match):  # and convert, with the same words
        convert(nn.Sequential(nn.Conv2d(1, 2, 3), ExpGQuant()), **kwargs)


def test_conversion_options_keep_good_values():
    assert ConversionOptions() == ConversionOptions("search", "event", "once", False, None, "codes")
    options = ConversionOptions(form="sequential", step_mode="collapsed", encoding="repeat", T=8,
                                attention_products="spikes")
    assert (options.form, options.T, type(options.T)) == ("sequential", 8, int)


def test_neurons_build_themselves_from_quantizers_and_refuse_what_they_cannot_reproduce():
    q = SignedExpGQuant(8, 4, lam=0.75)
    n = ExpGIF.from_quantizer(q, form="sequential", name="q")
    assert (n.T, n.G, n.signed, n.form, n.online, float(n.lam)) == (8, 4, True, "sequential",
                                                                   False, 0.75)
    v = IFNeuron.from_quantizer(QCFSQuant(6, lam=2.0))
    assert (v.T, float(v.lam)) == (6, 2.0)
    assert IFNeuron.from_quantizer(QCFSQuant(6, lam=2.0), T=16).T == 16
    mixed = ExpGQuant(4, 2, p=0.5)
    with pytest.raises(ConversionError, match=r"'a.b' still mixes .* \(p = 0.5\)"):
        ExpGIF.from_quantizer(mixed, name="a.b")
    for bad in (0.0, float("nan"), -1.0):
        q = QCFSQuant(4)
        q.lam.data.fill_(bad)
        with pytest.raises(ConversionError, match=r"'x' has lambda = .*: it must be positive"):
            IFNeuron.from_quantizer(q, name="x")
    with pytest.raises(ConversionError, match="cannot reproduce quantizer QCFSQuant"):
        ExpGIF.from_quantizer(QCFSQuant(4), name="y")
    with pytest.raises(ConversionError, match="cannot reproduce quantizer ExpGQuant"):
        IFNeuron.from_quantizer(ExpGQuant(4, 2), name="z")
