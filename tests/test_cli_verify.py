"""The ``ge2mst verify`` command: exactness on 512 real CIFAR-10 images, and clear errors."""

import json
from pathlib import Path

import pytest
from conftest import CIFAR, CIFAR_MISSING

from ge2mst.cli import main

needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("T,G", [(4, 2), (4, 1), (4, 4), (8, 2)])
def test_verify_cnn_tiny_on_512_cifar_images_is_exact(capsys, cache_dir, T, G):
    code, out, _ = run(capsys, "verify", "--model", "ge2mst_cnn_tiny", "--data", str(CIFAR),
                       "--data-dir", cache_dir, "--limit", "512", "--T", str(T), "--groups", str(G),
                       "--json", "--strict")
    report = json.loads(out)
    assert code == 0
    assert report["images"] == 512 and report["T"] == T and report["groups"] == G
    assert report["prediction_agreement"] == 1.0
    assert report["max_rel_diff"] <= 1e-5
    assert report["max_spikes_per_neuron"] <= G
    assert report["illegal_patterns"] == 0
    assert report["code_mismatches"] == 0 and report["codes_compared"] > 10_000_000
    assert report["exact"] is True
    # the check is not vacuous: neurons fire, and some fire at the cap G
    assert 0.05 < report["mean_spikes_per_neuron"] < G
    assert report["max_spikes_per_neuron"] == G


@needs_cifar
@pytest.mark.cifar
def test_verify_sequential_form_and_collapsed_mode(capsys, cache_dir):
    for extra in (["--form", "sequential"], ["--step-mode", "collapsed"]):
        code, out, _ = run(capsys, "verify", "--data", str(CIFAR), "--data-dir", cache_dir,
                           "--limit", "512", "--json", "--strict", *extra)
        report = json.loads(out)
        assert code == 0, extra
        assert report["prediction_agreement"] == 1.0 and report["code_mismatches"] == 0, extra
        assert report["max_rel_diff"] <= 1e-5, extra


@needs_cifar
@pytest.mark.cifar
def test_float32_collapsed_is_bit_identical_to_the_folded_ann(capsys, cache_dir):
    code, out, _ = run(capsys, "verify", "--data", str(CIFAR), "--data-dir", cache_dir,
                       "--limit", "512", "--json", "--dtype", "float32", "--step-mode", "collapsed",
                       "--reference", "folded", "--strict")
    report = json.loads(out)
    assert code == 0
    assert report["max_abs_diff"] == 0.0 and report["code_mismatches"] == 0


@needs_cifar
@pytest.mark.cifar
def test_float32_event_mode_differs_only_by_float_rounding(capsys, cache_dir):
    """Per-step float32 sums round differently from one float32 sum: codes whose membrane lies
    within rounding of a boundary can flip (and flips propagate). That is float noise, not a
    conversion error: the float64 check of the same weights is exact (tests above)."""
    code, out, _ = run(capsys, "verify", "--data", str(CIFAR), "--data-dir", cache_dir,
                       "--limit", "512", "--json", "--dtype", "float32")
    report = json.loads(out)
    assert code == 0
    assert report["prediction_agreement"] == 1.0
    assert report["code_mismatches"] <= 1e-4 * report["codes_compared"]


def test_verify_on_the_embedded_digits_with_a_checkpoint(capsys, tmp_path):
    import torch

    from ge2mst import calibrate, create_model
    from ge2mst.data import load_dataset, normalize
    from ge2mst.io.checkpoint import save_checkpoint

    data = load_dataset("digits", split="train")
    mean, std = data.channel_stats()
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, T=4, G=2, width=8)
    calibrate(model, [normalize(data.images[:256], mean, std)])
    ckpt = save_checkpoint(tmp_path / "tiny.safetensors", model, mean=mean.tolist(),
                           std=std.tolist())
    code, out, _ = run(capsys, "verify", "--checkpoint", str(ckpt), "--data", "digits",
                       "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["calibrated"] is False
    assert report["images"] == 360 and report["exact"] is True
    # the T, G override re-codes the checkpoint's quantizers
    code, out, _ = run(capsys, "verify", "--checkpoint", str(ckpt), "--data", "digits",
                       "--T", "8", "--groups", "4", "--limit", "64", "--json")
    report = json.loads(out)
    assert (report["T"], report["groups"], report["exact"]) == (8, 4, True)


@pytest.mark.parametrize("argv,message", [
    (["--T", "4", "--groups", "3"], "must divide T"),
    (["--model", "ge2mst_cnn_tinny"], "did you mean ge2mst_cnn_tiny"),
    (["--data", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--checkpoint", "/nonexistent/model.safetensors"], "does not exist"),
])
def test_verify_errors_are_one_line(capsys, argv, message):
    code, out, err = run(capsys, "verify", "--limit", "16", *argv)
    assert code == 2
    assert message in err
    assert err.startswith("ge2mst: error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv", [["--T", "0"], ["--limit", "-3"], ["--T", "four"],
                                  ["--percentile", "150"]])
def test_verify_rejects_bad_numbers_at_parse_time(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["verify", *argv])
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_truncated_checkpoint_is_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    code, _, err = run(capsys, "verify", "--checkpoint", str(bad), "--limit", "8")
    assert code == 2 and "truncated or corrupt" in err


def test_list_models(capsys):
    code, out, _ = run(capsys, "list-models")
    assert code == 0 and "ge2mst_cnn_tiny" in out.split()


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("model,limit,mode", [
    ("ge2mst_cifar_tiny", 512, "event"),
    ("ge2mst_cifar_small", 32, "collapsed"),
    ("ge2mst_cifar_base", 16, "collapsed"),
    ("ge2mst_cifar_large", 16, "collapsed"),
])
def test_verify_ge2mst_cifar_variants_on_real_images(capsys, cache_dir, model, limit, mode):
    """All 512 images for every variant, event mode: benchmarks/verify_models.py (RESULTS.md)."""
    code, out, _ = run(capsys, "verify", "--model", model, "--data", str(CIFAR), "--data-dir",
                       cache_dir, "--limit", str(limit), "--step-mode", mode, "--batch-size", "16",
                       "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["images"] == limit
    assert report["prediction_agreement"] == 1.0 and report["code_mismatches"] == 0
    assert report["max_rel_diff"] <= 1e-5 and report["illegal_patterns"] == 0
    assert report["max_spikes_per_neuron"] == 2


SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "ge2mst_cifar_tiny_effdim.safetensors"


@needs_cifar
@pytest.mark.cifar
def test_the_shipped_trained_checkpoint_is_exact_on_real_images(capsys, cache_dir):
    """A trained Ge2mS-T (weights in the repository), not only calibrated ones."""
    code, out, _ = run(capsys, "verify", "--checkpoint", str(SHIPPED), "--data", str(CIFAR),
                       "--data-dir", cache_dir, "--limit", "256", "--json", "--strict")
    report = json.loads(out)
    assert code == 0 and report["calibrated"] is False
    assert report["model"] == "ge2mst_cifar_tiny"  # taken from the checkpoint
    assert report["snn_accuracy"] == report["ann_accuracy"] > 0.5  # it learned, and SNN = ANN
    assert report["code_mismatches"] == 0 and report["max_rel_diff"] <= 1e-5
