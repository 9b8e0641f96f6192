"""One test per counter of the `verify` report: each is fed a crafted discrepancy and must count
exactly it (a counter that compares codes without their sign, or spikes without their step,
fails here), and the settings are read from the converted network, not echoed."""

import math

import pytest
import torch
from torch import nn

import ge2mst.core.quantizers as quant
from ge2mst import ExpGIF, ExpGQuant, SignedExpGQuant, convert
from ge2mst.analysis import faults, references
from ge2mst.analysis.evidence import NeuronEvidence
from ge2mst.analysis.references import Agreement, Float32Path, TrainedFunction
from ge2mst.analysis.verification import verify
from ge2mst.conversion.calibration import calibrate
from ge2mst.core.quantizers import quantizers
from ge2mst.nn.attention import GWSSA, float_attention
from ge2mst.nn.layers import ConvBN

LAM = 1.25  # delta = 1.25 / 10 = 0.125 exactly (T = 4, G = 2)
CODES = [0, 1, 2, 4, 5, 6, 8, 9, 10]
PATTERN = {c: [(c >> (3 - t)) & 1 for t in range(4)] for c in range(16)}


def _evidence(codes, spikes=None, ann_codes=None, signed=False, neuron_lam=LAM, membrane=None):
    """NeuronEvidence of one layer whose neurons had the whole-window membranes 0.125 * codes (or
    ``membrane``), emitted ``spikes`` (default: the right patterns) while the ANN quantizer chose
    ``ann_codes`` (default: ``codes``)."""
    codes_t = torch.tensor([codes], dtype=torch.int64)
    v = codes_t.to(torch.float64) * 0.125 if membrane is None else torch.tensor([membrane],
                                                                                  dtype=torch.float64)
    neuron = ExpGIF(4, 2, neuron_lam, signed=signed)
    if spikes is None:
        spikes = neuron.fire(v)
    neuron.last_membrane, neuron.last_spikes = v, torch.as_tensor(spikes, dtype=torch.int8)
    q = (SignedExpGQuant if signed else ExpGQuant)(4, 2, lam=LAM).double()
    q.last_codes = codes_t if ann_codes is None else torch.tensor([ann_codes])
    evidence = NeuronEvidence(tol=1e-12, sample=None)
    evidence.update_neuron("layer", neuron, q)
    evidence.end_batch(1)
    return evidence.result()


def _spikes(codes, signs=None):
    """T x 1 x N spikes of ``codes`` (patterns from PATTERN, times ``signs``)."""
    signs = signs or [1] * len(codes)
    return torch.tensor([[[PATTERN[abs(c)][t] * s for c, s in zip(codes, signs, strict=True)]]
                         for t in range(4)], dtype=torch.int8)


ZERO = ("code_mismatches", "oracle_mismatches", "form_mismatches", "lambda_mismatches",
        "illegal_patterns", "spikes_over_cap", "near_boundary")


def test_clean_layer_counts_nothing_and_counts_spikes():
    r = _evidence(CODES)
    assert all(r[key] == 0 for key in ZERO), r
    assert r["codes_compared"] == r["oracle_checked"] == r["form_checked"] == 9
    assert r["max_spikes_per_neuron"] == 2
    assert r["mean_spikes_per_neuron"] == pytest.approx(12 / 9)
    assert r["mismatched_layers"] == {}


def test_code_mismatches_count_a_sign_alone():
    codes = [-10, -6, 5, 9, 0]
    flipped = [10, -6, -5, 9, 0]  # two codes differ only in their sign
    r = _evidence(codes, ann_codes=flipped, signed=True)
    assert r["code_mismatches"] == 2 and r["codes_compared"] == 5
    assert r["oracle_mismatches"] == 0 and r["mismatched_layers"] == {"layer": {"code": 2}}


def test_oracle_mismatches_count_a_wrong_pattern_the_codes_agree_with():
    emitted = [0, 1, 2, 4, 5, 5, 8, 9, 10]  # the membrane of code 6 fired the pattern of 5
    r = _evidence(CODES, spikes=_spikes(emitted), ann_codes=emitted)
    assert r["code_mismatches"] == 0
    assert r["oracle_mismatches"] == 1 and r["form_mismatches"] == 1
    assert r["mismatched_layers"]["layer"] == {"oracle": 1, "form": 1}


def test_oracle_sees_a_spike_moved_to_another_step_with_the_same_count():
    spikes = _spikes(CODES)
    spikes[:, 0, 8] = torch.tensor([0, 1, 0, 1], dtype=torch.int8)  # code 10 sent as 0101
    r = _evidence(CODES, spikes=spikes, ann_codes=[0, 1, 2, 4, 5, 6, 8, 9, 5])
    assert r["oracle_mismatches"] == 1  # the codes agree: 0101 reads as 5 through the book
    assert r["code_mismatches"] == 0
    assert r["max_spikes_per_neuron"] == 2 and r["illegal_patterns"] == 0


def test_oracle_sees_the_sign_of_a_ternary_spike():
    codes = [-6, 6, -9]
    r = _evidence(codes, spikes=_spikes(codes, signs=[1, 1, -1]), ann_codes=codes, signed=True)
    assert r["oracle_mismatches"] == 1  # -6 sent with positive spikes
    assert r["code_mismatches"] == 1


def test_lambda_mismatches_count_a_neuron_with_another_lambda():
    r = _evidence(CODES, neuron_lam=LAM * (1 + 1e-7))
    assert r["lambda_mismatches"] == 1 and r["code_mismatches"] == r["oracle_mismatches"] == 0
    assert r["mismatched_layers"] == {"layer": {"lambda": 1}}


def test_illegal_patterns_and_spikes_over_cap_are_told_apart():
    emitted = [0, 1, 2, 4, 5, 6, 8, 12, 15]  # 1100: illegal, 2 spikes; 1111: illegal, 4 spikes
    r = _evidence(CODES, spikes=_spikes(emitted), ann_codes=emitted)
    assert r["illegal_patterns"] == 2 and r["spikes_over_cap"] == 1
    assert r["max_spikes_per_neuron"] == 4
    assert r["oracle_mismatches"] == 2


def test_near_boundary_and_the_margin():
    membrane = [0.125 * 5.5, 0.125 * 6, 0.125 * 9.5 + 1e-15]  # on a boundary, a level, just past
    r = _evidence([6, 6, 10], membrane=membrane)
    assert r["near_boundary"] == 2 and r["min_boundary_margin"] == 0.0
    assert r["code_mismatches"] == r["oracle_mismatches"] == 0  # a tie goes up: code 6


def test_agreement_counts_differences_relative_to_the_reference():
    agreement = Agreement()
    ref = torch.tensor([[1.0, 2.0, 4.0], [3.0, -6.0, 0.0]], dtype=torch.float64)
    cand = torch.tensor([[1.0, 2.5, 4.0], [3.0, -6.0, 3.5]], dtype=torch.float64)
    agreement.update(ref, cand, torch.tensor([2, 2]))
    out = agreement.result("x_")
    assert out["x_max_abs_diff"] == 3.5
    assert out["x_max_rel_diff"] == pytest.approx(3.5 / 6)  # per image: over its own max |ref|
    assert out["x_prediction_agreement"] == 0.5  # image 2: 0 against 2
    assert agreement.reference_correct == 1 and agreement.candidate_correct == 2
    agreement.update(ref[:1], torch.full((1, 3), math.nan, dtype=torch.float64), None)
    out = agreement.result()
    assert math.isnan(out["max_rel_diff"]) and math.isnan(out["max_abs_diff"])  # NaN is not hidden


def _attention_model():
    torch.manual_seed(0)
    model = nn.Sequential(ConvBN(3, 16, 3), ExpGQuant(), GWSSA(16, 4, k=2), ExpGQuant(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    calibrate(model, [x])
    return model.eval(), x


def test_trained_function_counts_each_quantizer_code_that_differs():
    model, x = _attention_model()
    ann = float_attention(nn.Sequential(*model), on=False)  # the same modules, exact path
    quants = dict(quantizers(ann))
    for q in quants.values():
        q.record = True
    logits = ann(x)
    reference = TrainedFunction(model)
    reference.compare(x, logits, quants, None)
    assert reference.code_mismatches == 0 and reference.codes_compared > 1000
    assert reference.logits.max_rel == 0.0  # the two evaluation paths agree on this network
    attn = quants["2.attn_act"]
    attn.last_codes = attn.last_codes.clone()
    attn.last_codes.view(-1)[:3] += 1
    reference.compare(x, logits, quants, None)
    assert reference.code_mismatches == 3 and reference.layers == {"2.attn_act": 3}


def test_float32_path_checks_every_kernel_output_against_the_oracle(monkeypatch):
    model, x = _attention_model()
    clean = Float32Path(model)
    clean.compare(x, None)
    clean.close()
    assert clean.mismatches == 0 and clean.checked > 0 and clean.logits.max_abs == 0.0
    # the float32-kernel fault's table: each cell reads the level one up
    monkeypatch.setattr(quant, "_grid_values", faults._shifted_grid(quant._grid_values))
    faulty = Float32Path(model)
    faulty.compare(x, None)
    assert faulty.mismatches > 0 and faulty.logits.max_abs == 0.0  # shared: only the oracle sees it
    assert set(faulty.layers) >= {"ann.1", "snn.1"}


def test_settings_are_read_from_the_converted_network():
    model, x = _attention_model()
    snn = convert(model, form="sequential", attention_products="spikes")
    assert references.settings_of(snn)["attention_products"] is None  # not run yet
    snn(x)
    ran = references.settings_of(snn)
    assert ran == {"form": "sequential", "step_mode": "event", "encoding": "once",
                   "attention_products": "spikes"}
    snn.body[2].products = "codes"  # a converter that ignored the option
    snn.body[1].form = "search"
    snn(x)
    ran = references.settings_of(snn)
    assert ran["attention_products"] == "codes" and ran["form"] == ["search", "sequential"]
    asked = {"form": "sequential", "attention_products": "spikes", "step_mode": "event"}
    lines = references.settings_mismatches(asked, ran)
    assert len(lines) == 2 and "attention_products" in lines[1]


def test_verify_report_says_what_it_ran_and_holds_the_settings():
    model, x = _attention_model()
    report = verify(model, [(x, None)], attention_products="spikes", oracle_sample=None,
                    float32_path=True)
    assert report["exact"] is True and report["attention_products"] == "spikes"
    assert set(report["checks"]) == {"ann", "snn", "oracle", "forms", "trained_function",
                                     "unrecorded", "float32"}
    assert "not run" not in " ".join(report["checks"].values())
    assert {"trained_max_rel_diff", "unrecorded_max_rel_diff",
            "float32_max_abs_diff"} <= set(report["exact_tolerance"])
    quick = verify(model, [(x, None)], dtype="float32", trained_function=True, unrecorded=False)
    assert "not run" in quick["checks"]["trained_function"]
    assert "trained_max_rel_diff" not in quick and "unrecorded_max_abs_diff" not in quick
