"""The independent oracle of `verify`, the one exactness verdict, and the faults it must catch.

Each mutation below is a way a conversion can be subtly wrong that the code comparison alone
(ANN quantizer codes against SNN spike codes, both read through the same code book) cannot see.
Applied by monkeypatching, each must turn `verify` to ``exact: false`` and ``verify --strict`` to
exit status 1; without the mutation the very same run is exact (the control case).
"""

import json
import math

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import ge2mst.analysis.verification as verify_module
import ge2mst.core.quantizers as quant
from ge2mst import ExpGIF, ExpGQuant, SignedExpGQuant
from ge2mst.analysis.faults import FAULTS, inject
from ge2mst.analysis.verification import EXACT_MAX_REL_DIFF, exactness_failures, is_exact, verify
from ge2mst.cli import main
from ge2mst.conversion.calibration import calibrate
from ge2mst.conversion.converter import convert as convert_function
from ge2mst.core.coding import expg_codebook, level_spacing
from ge2mst.core.oracle import ExpGOracle, float32_round, legal_levels
from ge2mst.errors import ConfigError
from ge2mst.nn.attention import GWSSA
from ge2mst.nn.layers import ConvBN

VALID_TG = [(T, G) for T in range(1, 9) for G in range(1, T + 1) if T % G == 0]
needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)


# ---- the oracle itself ------------------------------------------------------------------------
def test_levels_enumerated_from_the_definition():
    # the method note's example: T = 4, G = 2, groups {1, 2}, {3, 4}
    assert legal_levels(4, 2) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert legal_levels(4, 4) == list(range(16))  # G = T: every code, uniform
    assert legal_levels(4, 1) == [0, 1, 2, 4, 8]  # G = 1: Exp-IF, powers of two
    for T, G in VALID_TG:  # two independent constructions of the same level set
        assert legal_levels(T, G) == expg_codebook(T, G).codes.tolist(), (T, G)
        assert len(legal_levels(T, G)) == (T // G + 1) ** G


def test_float32_rounding_without_torch_matches_torch():
    values = torch.randn(2000, dtype=torch.float64) * torch.logspace(-20, 20, 2000, dtype=torch.float64)
    expected = values.to(torch.float32).to(torch.float64).tolist()
    assert [float32_round(v) for v in values.tolist()] == expected


def test_worked_example_codes_and_patterns():
    oracle = ExpGOracle(4, 2, 2.0, signed=False)
    codes = oracle.codes(torch.tensor([1.13, 1.95, -3.0, 7.0], dtype=torch.float64))
    assert codes.tolist() == [6, 10, 0, 10]
    assert oracle.patterns(codes).T.tolist() == [[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0],
                                                 [1, 0, 1, 0]]
    signed = ExpGOracle(4, 2, 2.0, signed=True)
    codes = signed.codes(torch.tensor([-1.13, 1.95, -7.0], dtype=torch.float64))
    assert codes.tolist() == [-6, 10, -10]
    assert signed.patterns(codes).T.tolist() == [[0, -1, -1, 0], [1, 0, 1, 0], [-1, 0, -1, 0]]


def test_oracle_rounds_ties_up_at_every_boundary():
    oracle = ExpGOracle(4, 2, 1.25, signed=False)  # delta = 0.125 exactly
    levels = legal_levels(4, 2)
    mids = torch.tensor([(a + b) / 2 for a, b in zip(levels[:-1], levels[1:], strict=True)],
                        dtype=torch.float64) * 0.125
    assert oracle.codes(mids).tolist() == levels[1:]  # a tie takes the upper level
    below = torch.nextafter(mids, torch.zeros_like(mids))
    assert oracle.codes(below).tolist() == levels[:-1]


def test_oracle_counts_a_single_wrong_spike():
    torch.manual_seed(0)
    neuron = ExpGIF(4, 2, 1.7)
    v = torch.randn(500, dtype=torch.float64) * 2
    spikes = neuron.fire(v)
    oracle = ExpGOracle(4, 2, 1.7, signed=False)
    assert oracle.check(v, spikes) == (500, 0)
    spikes[3, 17] = 1 - spikes[3, 17]
    assert oracle.check(v, spikes) == (500, 1)


def _values(draw_floats, book, lam, signed, dtype):
    delta = level_spacing(torch.tensor(lam), book.n_max)
    bounds = (delta * book.mids).to(dtype)
    x = torch.cat([torch.tensor(draw_floats, dtype=dtype), bounds,
                   torch.nextafter(bounds, torch.full_like(bounds, -math.inf)),
                   torch.nextafter(bounds, torch.full_like(bounds, math.inf))])
    return torch.cat([x, -x]) if signed else x


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG), signed=st.booleans(),
       lam=st.floats(min_value=0.0009765625, max_value=1024.0, allow_nan=False, allow_infinity=False,
                     width=32),
       values=st.lists(st.floats(allow_nan=False, allow_infinity=True, width=64), max_size=32))
def test_oracle_agrees_with_quantizer_and_both_neuron_forms(tg, signed, lam, values):
    """On random values, every boundary and one ulp either side (infinities drawn, NaN not)."""
    T, G = tg
    book = expg_codebook(T, G)
    x = _values(values, book, lam, signed, torch.float64)
    oracle = ExpGOracle(T, G, lam, signed)
    assert torch.equal(oracle.codes(x), quant.quantize_codes(x, torch.tensor(lam), book, signed))
    for form in ("search", "sequential"):
        spikes = ExpGIF(T, G, lam, signed=signed, form=form).fire(x)
        assert oracle.check(x, spikes) == (x.numel(), 0), form


# ---- +-inf in every quantizer path --------------------------------------------------------------
PATHS = {"float32 search": 10_000, "float32 grid": 0}


def _quantize(x, lam, book, signed, path):
    lam_t = torch.tensor(lam)
    if path == "float64":
        codes = quant.quantize_codes(x.double(), lam_t, book, signed)
        return quant.codes_to_values(codes, lam_t, book.n_max, torch.float32)
    old, quant.SEARCH_LEVELS = quant.SEARCH_LEVELS, PATHS[path]
    try:
        return quant._quantize_float32(x, lam_t, book, signed)
    finally:
        quant.SEARCH_LEVELS = old


@pytest.mark.parametrize("path", ["float32 search", "float32 grid", "float64"])
@pytest.mark.parametrize("T,G", VALID_TG)
def test_infinities_give_the_clip_in_every_path(T, G, path):
    book = expg_codebook(T, G)
    lam = 1.7
    top = quant.codes_to_values(torch.tensor(book.n_max), torch.tensor(lam), book.n_max, torch.float32)
    assert abs(float(top) - lam) <= 1e-6 * lam  # the top level is lambda (to float32 rounding)
    x = torch.tensor([math.inf, -math.inf, 0.5, math.inf])
    unsigned = _quantize(x, lam, book, False, path)
    assert unsigned[0] == top and unsigned[3] == top and unsigned[1] == 0
    signed = _quantize(x, lam, book, True, path)
    assert signed[0] == top and signed[1] == -top and signed[3] == top


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tg=st.sampled_from(VALID_TG), signed=st.booleans(),
       lam=st.floats(min_value=0.0009765625, max_value=1024.0, allow_nan=False,
                     allow_infinity=False, width=32),
       values=st.lists(st.floats(allow_nan=False, allow_infinity=True, width=32), min_size=1,
                       max_size=48).filter(lambda v: any(math.isinf(a) for a in v)),
       path=st.sampled_from(sorted(PATHS)))
def test_float32_paths_with_infinities_and_no_nan(tg, signed, lam, values, path):
    """Every example holds an infinity and no NaN, so the non-NaN branch meets it."""
    T, G = tg
    book = expg_codebook(T, G)
    x = _values(values, book, lam, signed, torch.float32)
    got = _quantize(x, lam, book, signed, path)
    expected = _quantize(x, lam, book, signed, "float64")
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))
    codes = ExpGOracle(T, G, lam, signed).codes(x.double())
    assert torch.equal(quant.codes_to_values(codes, torch.tensor(lam), book.n_max, torch.float32)
                       .view(torch.int32), got.view(torch.int32))


# ---- the verdict ------------------------------------------------------------------------------
def _clean_report(**changes):
    report = {"images": 8, "neuron_types": ["ExpGIF"], "code_mismatches": 0, "oracle_checked": 100,
              "oracle_mismatches": 0, "form_mismatches": 0, "lambda_mismatches": 0,
              "illegal_patterns": 0, "spikes_over_cap": 0, "prediction_agreement": 1.0,
              "max_rel_diff": 5e-16, "max_abs_diff": 1e-15,
              "exact_tolerance": {"max_rel_diff": EXACT_MAX_REL_DIFF}}
    report.update(changes)
    return report


@pytest.mark.parametrize("change", [
    {"code_mismatches": 1}, {"oracle_mismatches": 1}, {"form_mismatches": 2},
    {"lambda_mismatches": 1}, {"illegal_patterns": 1}, {"spikes_over_cap": 1},
    {"prediction_agreement": 0.999}, {"max_rel_diff": 9e-8}, {"max_rel_diff": math.nan},
    {"oracle_checked": 0}, {"images": 0}, {"neuron_types": ["ExpGIF", "IFNeuron"]},
    {"exact_tolerance": {"max_abs_diff": 0.0}}, {"exact_tolerance": {}}, {"oracle_mismatches": None},
    # the references beyond the recorded run, where they ran
    {"trained_code_mismatches": 3}, {"trained_prediction_agreement": 0.5},
    {"trained_max_rel_diff": 0.1, "exact_tolerance": {"max_rel_diff": 1e-12,
                                                      "trained_max_rel_diff": 1e-12}},
    {"exact_tolerance": {"max_rel_diff": 1e-12, "unrecorded_max_rel_diff": 1e-12}},
    {"unrecorded_prediction_agreement": 0.9}, {"float32_kernel_mismatches": 1},
    {"float32_kernel_checked": 0}, {"float32_prediction_agreement": 0.99},
    {"float32_max_abs_diff": 1e-7, "exact_tolerance": {"max_rel_diff": 1e-12,
                                                       "float32_max_abs_diff": 0.0}},
    {"settings_mismatches": ["form: 'sequential' was asked, the converted network ran 'search'"]},
])
def test_every_check_of_the_verdict_can_fail(change):
    assert is_exact(_clean_report())
    report = _clean_report(**change)
    assert not is_exact(report)
    assert exactness_failures(report)


# ---- mutations on real images -----------------------------------------------------------------
@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("fault", [None, "floor", "reversed-weights", "lambda-drift",
                                   "no-refractoriness"])
def test_verify_strict_catches_each_fault_on_real_images(capsys, cache_dir, fault):
    form = "sequential" if fault == "no-refractoriness" else "search"
    argv = ["verify", "--model", "ge2mst_cnn_tiny", "--data", str(CIFAR), "--data-dir", cache_dir,
            "--limit", "32", "--T", "4", "--groups", "2", "--form", form, "--json", "--strict"]
    code = main([*argv, "--inject-fault", fault] if fault else argv)
    report = json.loads(capsys.readouterr().out)
    assert report["oracle_checked"] == report["codes_compared"] > 100_000  # every neuron, --strict
    if fault is None:  # the control: the same run, unmutated, is exact
        assert code == 0 and report["exact"] is True and report["exactness_failures"] == []
        return
    assert report["injected_fault"] == fault
    assert code == 1 and report["exact"] is False, fault
    failures = " ".join(report["exactness_failures"])
    if fault in ("floor", "reversed-weights"):
        # the shared code book moves both sides together: only the oracle (and form B) see it
        assert report["code_mismatches"] == 0 and report["prediction_agreement"] == 1.0
        assert report["oracle_mismatches"] > 0 and "oracle_mismatches" in failures
        assert report["form_mismatches"] > 0 and report["mismatched_layers"]
    if fault == "reversed-weights":  # the logits cannot tell: with reversed weights 0101 is 10
        assert report["max_rel_diff"] <= EXACT_MAX_REL_DIFF
    if fault == "lambda-drift":
        assert report["max_rel_diff"] > EXACT_MAX_REL_DIFF and "max_rel_diff" in failures
        assert report["lambda_mismatches"] == 1
    if fault == "no-refractoriness":
        assert report["illegal_patterns"] > 0 and report["spikes_over_cap"] > 0
        assert report["oracle_mismatches"] > 0


def test_faults_are_undone_and_checked(capsys):
    import ge2mst.nn.attention as attention
    import ge2mst.nn.spiking_attention as spiking_attention

    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(), GWSSA(16, 4, k=2))
    book = expg_codebook(4, 2)
    before = (book.mids.clone(), book.beta.clone(), book.patterns.clone())
    originals = [(torch, "searchsorted"), (ExpGIF, "_fire_sequential"), (ExpGIF, "membrane_codes"),
                 (quant, "_grid_values"), (attention, "attention_spacings"),
                 (spiking_attention, "attention_spacings"), (verify_module, "convert")]
    kept = [getattr(owner, name) for owner, name in originals]
    for name in FAULTS:
        with inject(name, model):
            pass
    assert torch.equal(book.mids, before[0]) and torch.equal(book.beta, before[1])
    assert torch.equal(book.patterns, before[2])
    assert [getattr(owner, name) for owner, name in originals] == kept
    assert verify_module.convert is convert_function
    with pytest.raises(ConfigError, match="unknown conversion fault"):
        with inject("nonsense", model):
            pass
    for name in ("attention-scale", "ignored-attention-products", "unrecorded-magnitude"):
        with pytest.raises(ConfigError, match="acts on attention"):
            with inject(name, nn.Sequential(nn.Linear(4, 4), ExpGQuant(4, 2))):
                pass
    for fault, needs in (("no-refractoriness", "--form sequential"),
                         ("ignored-attention-products", "--attention-products spikes"),
                         ("float32-kernel", "--strict")):
        assert main(["verify", "--data", "digits", "--limit", "8", "--inject-fault", fault]) == 2
        assert needs in capsys.readouterr().err


def _tie_network():
    """Linear identity -> ExpG (T = 4, G = 2, delta = 1/8) -> linear read-out, fed with
    pre-activations that lie exactly on every decision boundary (ties), and just below them."""
    torch.manual_seed(0)
    levels = legal_levels(4, 2)
    mids = [(a + b) / 16 for a, b in zip(levels[:-1], levels[1:], strict=True)]  # delta = 1/8
    x = torch.tensor([mids, [math.nextafter(m, 0) for m in mids]], dtype=torch.float64)
    first = nn.Linear(len(mids), len(mids))
    with torch.no_grad():
        first.weight.copy_(torch.eye(len(mids)))
        first.bias.zero_()
    model = nn.Sequential(first, ExpGQuant(4, 2, lam=1.25), nn.Linear(len(mids), 3)).double()
    return model, [(x, None)]


def test_verify_catches_ties_rounded_down():
    """Ties need membranes exactly on a boundary, which real images almost never give: this
    network is built to put one on every boundary."""
    model, batches = _tie_network()
    clean = verify(model, batches, oracle_sample=None)
    assert clean["exact"] is True and clean["oracle_checked"] == 16
    with inject("ties-down", model):  # quantizer and binary-search neuron alike
        report = verify(model, batches, oracle_sample=None)
    assert report["code_mismatches"] == 0  # both sides round the ties down together
    assert report["oracle_mismatches"] == 8 and report["form_mismatches"] == 8
    assert report["exact"] is False and not is_exact(report)


#: the faults that only the references beyond the recorded run see, and the check that must fire
REFERENCE_FAULTS = {
    "attention-scale": "trained_code_mismatches",
    "ignored-attention-products": "settings_mismatches",
    "unrecorded-magnitude": "unrecorded_max_rel_diff",
    "float32-kernel": "float32_kernel_mismatches",
}


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("fault", [None, *REFERENCE_FAULTS])
def test_faults_in_shared_code_are_caught_by_the_references(capsys, cache_dir, fault):
    """Each fault leaves the recorded comparison clean (codes, oracle, forms and logits all agree:
    the checks before the references were blind to it) and is caught by one reference."""
    argv = ["verify", "--model", "ge2mst_cifar_tiny", "--pretrained", "--data", str(CIFAR),
            "--data-dir", cache_dir, "--limit", "16", "--json", "--strict"]
    if fault == "ignored-attention-products":
        argv += ["--attention-products", "spikes"]
    code = main([*argv, "--inject-fault", fault] if fault else argv)
    report = json.loads(capsys.readouterr().out)
    recorded_clean = (report["code_mismatches"] == report["oracle_mismatches"]
                      == report["form_mismatches"] == 0
                      and report["max_rel_diff"] <= EXACT_MAX_REL_DIFF
                      and report["prediction_agreement"] == 1.0)
    assert recorded_clean, fault
    assert report["float32_kernel_checked"] > 1_000_000 and report["trained_codes_compared"] > 0
    if fault is None:  # the control: every reference ran and agrees
        assert code == 0 and report["exact"] is True
        assert report["trained_code_mismatches"] == report["float32_kernel_mismatches"] == 0
        assert report["trained_max_rel_diff"] <= EXACT_MAX_REL_DIFF
        assert report["unrecorded_max_rel_diff"] <= EXACT_MAX_REL_DIFF
        assert report["float32_max_abs_diff"] == 0.0 and report["settings_mismatches"] == []
        return
    assert code == 1 and report["exact"] is False
    check = REFERENCE_FAULTS[fault]
    assert report[check], (fault, check)
    assert any(check in line or "settings" in line for line in report["exactness_failures"])
    if fault == "attention-scale":  # both ANN paths of evaluation moved: the trained one did not
        assert report["trained_prediction_agreement"] < 1.0
    if fault == "ignored-attention-products":
        assert report["attention_products"] == "codes"
    if fault == "float32-kernel":  # ANN and collapsed SNN share the kernel: only the oracle sees it
        assert report["float32_max_abs_diff"] == 0.0


# ---- the event-level attention and the sample ---------------------------------------------------
@needs_cifar
@pytest.mark.cifar
def test_verify_event_level_attention_on_real_images(capsys, cache_dir):
    code = main(["verify", "--model", "ge2mst_cifar_tiny", "--data", str(CIFAR), "--data-dir",
                 cache_dir, "--limit", "16", "--attention-products", "spikes", "--json", "--strict"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["exact"] is True
    assert report["attention_products"] == "spikes" and report["oracle_sample_per_layer"] == "all"
    assert report["oracle_checked"] == report["codes_compared"] == report["form_checked"]
    assert report["oracle_mismatches"] == report["form_mismatches"] == 0
    assert report["max_rel_diff"] <= EXACT_MAX_REL_DIFF


@needs_cifar
@pytest.mark.cifar
def test_oracle_samples_large_layers_unless_strict(capsys, cache_dir):
    from ge2mst.models import create_model

    layers = len(list(quant.quantizers(create_model("ge2mst_cnn_tiny"))))
    args = ["verify", "--model", "ge2mst_cnn_tiny", "--data", str(CIFAR), "--data-dir", cache_dir,
            "--limit", "16", "--batch-size", "16", "--json", "--oracle-sample", "100"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["oracle_sample_per_layer"] == 100 and report["exact"] is True
    # one batch, every layer larger than the sample: exactly 100 neurons of each layer
    assert report["oracle_checked"] == report["form_checked"] == 100 * layers
    assert report["codes_compared"] > 100 * report["oracle_checked"]
    assert main([*args, "--strict"]) == 2  # --strict checks every neuron: a sample contradicts it
    assert "--strict" in capsys.readouterr().err


# ---- evaluation honours the mixing fraction --------------------------------------------------------
def test_attention_in_eval_mode_honours_p():
    torch.manual_seed(0)
    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(), GWSSA(16, 4, k=2)).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    calibrate(model, [x])
    model.eval()
    attn = model[2]
    quantized = model(x)
    for _, q in quant.quantizers(model):
        q.p = 0.5
    hybrid = model(x)
    attn.training = True  # the float path that training takes (its BatchNorms stay in eval)
    float_path = model(x)
    attn.training = False
    assert torch.equal(hybrid, float_path)
    assert not torch.allclose(hybrid, quantized)


def test_signed_quantizer_codes_match_oracle_on_activations():
    torch.manual_seed(1)
    q = SignedExpGQuant(8, 4, lam=0.9).double()
    x = torch.randn(10_000, dtype=torch.float64)
    assert torch.equal(q.codes(x), ExpGOracle(8, 4, 0.9, signed=True).codes(x))
