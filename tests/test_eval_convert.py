"""``ge2mst eval`` and ``ge2mst convert`` / `ge2mst.io.spiking.load_spiking`: accuracy of both modes,
a spiking network saved and rebuilt bit for bit, and one-line errors for bad files."""

import json
from pathlib import Path

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING

from ge2mst.cli import main
from ge2mst.conversion.converter import convert
from ge2mst.errors import CheckpointError
from ge2mst.io.checkpoint import load_checkpoint

needs_cifar = pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
ROOT = Path(__file__).resolve().parents[1]
EXPG = ROOT / "checkpoints" / "ge2mst_cnn_tiny_cifar.safetensors"
QCFS = ROOT / "checkpoints" / "ge2mst_cnn_tiny_qcfs_cifar.safetensors"
LIMIT = "64"
REPORT_KEYS = {"model", "checkpoint", "data", "split", "method", "mode", "dtype", "images",
               "num_classes", "T", "groups", "ann", "snn", "agreement", "max_abs_diff"}
ENERGY_KEYS = {"preset", "sops", "macs", "energy_mj", "ann_energy_mj", "energy_ratio",
               "spikes_per_image", "spikes_per_neuron", "max_spikes_per_neuron"}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, message):
    assert code == 2, err
    assert err.startswith("ge2mst: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    """A small calibrated ExpG network for the 8x8 digits (no CIFAR needed)."""
    from ge2mst import calibrate, create_model
    from ge2mst.data import load_dataset, normalize
    from ge2mst.io.checkpoint import save_checkpoint

    data = load_dataset("digits", split="train")
    mean, std = data.channel_stats()
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, T=4, G=2, width=8)
    calibrate(model, [normalize(data.images[:256], mean, std)])
    return save_checkpoint(tmp_path_factory.mktemp("digits") / "tiny.safetensors", model,
                           mean=mean.tolist(), std=std.tolist())


def cifar_images(cache_dir, n=64):
    from ge2mst.data import load_dataset, normalize

    data = load_dataset(str(CIFAR), split="test", limit=n, cache_dir=cache_dir, progress=False)
    _, config = load_checkpoint(EXPG)
    return normalize(data.images, config["mean"], config["std"])


# ---- ge2mst eval ------------------------------------------------------------------------------

@needs_cifar
@pytest.mark.cifar
def test_eval_shipped_expg_checkpoint_snn_equals_ann(capsys, cache_dir, tmp_path):
    out_file = tmp_path / "eval.json"
    code, out, _ = run(capsys, "eval", "--checkpoint", EXPG, "--data", CIFAR, "--data-dir",
                       cache_dir, "--limit", LIMIT, "--json", "--out", out_file)
    assert code == 0
    report = json.loads(out)
    assert REPORT_KEYS <= set(report)
    assert json.loads(out_file.read_text()) == report
    assert report["method"] == "expg" and report["mode"] == "both"
    assert report["images"] == 64 and report["num_classes"] == 10
    assert (report["T"], report["groups"]) == (4, 2)
    ann, snn = report["ann"], report["snn"]
    assert snn["top1"] == ann["top1"] > 0.3  # a trained network, and SNN = ANN
    assert snn["top5"] == ann["top5"] >= ann["top1"]
    assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-9
    assert ann["images_per_s"] > 0 and snn["images_per_s"] > 0
    energy = snn["energy"]
    assert ENERGY_KEYS <= set(energy)
    assert energy["sops"] > 0 and energy["energy_mj"] > 0
    assert 0 < energy["spikes_per_neuron"] < 2 and energy["max_spikes_per_neuron"] <= 2


@needs_cifar
@pytest.mark.cifar
def test_eval_table_and_single_modes(capsys, cache_dir):
    base = ["eval", "--checkpoint", EXPG, "--data", CIFAR, "--data-dir", cache_dir,
            "--limit", "32"]
    code, out, _ = run(capsys, *base)
    assert code == 0
    lines = out.splitlines()
    assert any(line.startswith("ANN ") for line in lines)
    assert any(line.startswith("SNN ") for line in lines)
    assert "top-5" in out and "agreement   1.0000" in out and "uJ per image" in out
    code, out, _ = run(capsys, *base, "--mode", "ann", "--json")
    report = json.loads(out)
    assert code == 0 and "snn" not in report and "agreement" not in report
    code, out, _ = run(capsys, *base, "--mode", "snn", "--no-energy", "--json")
    report = json.loads(out)
    assert code == 0 and "ann" not in report and "energy" not in report["snn"]


@needs_cifar
@pytest.mark.cifar
def test_eval_collapsed_step_mode_gives_the_event_mode_results(capsys, cache_dir):
    base = ["eval", "--checkpoint", EXPG, "--data", CIFAR, "--data-dir", cache_dir, "--limit", "32",
            "--json", "--dtype", "float32"]
    reports = {}
    for mode in ("event", "collapsed"):
        code, out, _ = run(capsys, *base, "--step-mode", mode)
        assert code == 0
        reports[mode] = json.loads(out)
        assert reports[mode]["step_mode"] == mode
    event, collapsed = reports["event"], reports["collapsed"]
    assert collapsed["snn"]["top1"] == collapsed["ann"]["top1"] == event["snn"]["top1"]
    assert collapsed["agreement"] == 1.0
    assert collapsed["snn"]["energy"]["sops"] == event["snn"]["energy"]["sops"] > 0  # same spikes
    code, out, err = run(capsys, "eval", "--checkpoint", QCFS, "--data", CIFAR, "--data-dir",
                         cache_dir, "--limit", "8", "--step-mode", "collapsed")
    assert_one_line_error(code, out, err, "event step mode")


@needs_cifar
@pytest.mark.cifar
def test_eval_qcfs_checkpoint_runs_vanilla_if(capsys, cache_dir):
    code, out, _ = run(capsys, "eval", "--checkpoint", QCFS, "--data", CIFAR, "--data-dir",
                       cache_dir, "--limit", "32", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["method"] == "qcfs" and report["snn"]["neuron"] == "IFNeuron"
    assert report["encoding"] == "repeat" and report["T"] == 8
    assert 0 <= report["agreement"] <= 1 and report["snn"]["top5"] >= report["snn"]["top1"]


def test_eval_on_digits(capsys, digits_ckpt):
    code, out, _ = run(capsys, "eval", "--checkpoint", digits_ckpt, "--data", "digits",
                       "--limit", LIMIT, "--json")
    report = json.loads(out)
    assert code == 0 and REPORT_KEYS <= set(report)
    assert report["images"] == 64 and report["num_classes"] == 10
    assert report["snn"]["top1"] == report["ann"]["top1"]
    assert report["ann"]["top5"] >= report["ann"]["top1"]
    assert report["agreement"] == 1.0 and report["max_abs_diff"] <= 1e-9


def test_eval_top5_only_with_more_than_five_classes():
    from ge2mst import calibrate, create_model
    from ge2mst.analysis.evaluation import evaluate

    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", in_chans=1, num_classes=5, width=4)
    x = torch.randn(16, 1, 8, 8)
    calibrate(model, [x])
    report = evaluate(model, [(x, torch.arange(16) % 5)], mode="both", energy=False)
    assert "top5" not in report["ann"] and "top5" not in report["snn"]
    assert report["agreement"] == 1.0


@pytest.mark.parametrize("argv,message", [
    (["--checkpoint", "/nonexistent/model.safetensors"], "does not exist"),
    (["--data", "/nonexistent/cifar"], "/nonexistent/cifar"),
    (["--mode", "snn", "--T", "4", "--groups", "3"], "must divide T"),
])
def test_eval_errors_are_one_line(capsys, argv, message):
    assert_one_line_error(*run(capsys, "eval", "--limit", "16", *argv), message)


def test_eval_of_a_truncated_or_foreign_checkpoint(capsys, tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", bad, "--limit", "8"),
                          "truncated or corrupt")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.randn(3, 3)}, str(foreign))
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", foreign, "--limit", "8"),
                          "foreign.safetensors")


# ---- ge2mst convert / load_spiking ----------------------------------------------------------

@needs_cifar
@pytest.mark.cifar
def test_convert_then_load_spiking_is_bit_identical(capsys, cache_dir, tmp_path):
    from ge2mst.io.spiking import load_spiking, sha256_of

    out = tmp_path / "snn" / "tiny_snn.safetensors"
    code, text, _ = run(capsys, "convert", EXPG, "--out", out, "--json")
    assert code == 0
    description = json.loads(text)
    assert json.loads(out.with_suffix(".json").read_text()) == {
        k: v for k, v in description.items() if k != "files"}
    assert description["format"] == "ge2mst-snn/1" and description["model"] == "ge2mst_cnn_tiny"
    assert (description["T"], description["G"]) == (4, 2)
    assert description["source"]["sha256"] == sha256_of(EXPG)
    assert description["conversion"]["form"] == "search" and description["ge2mst_version"]

    loaded = load_spiking(out)
    model, _ = load_checkpoint(EXPG)
    fresh = convert(model.eval())
    x = cifar_images(cache_dir)
    with torch.no_grad():
        assert torch.equal(loaded(x), fresh(x))
        assert torch.equal(loaded.to(torch.float64)(x.double()), fresh.to(torch.float64)(x.double()))

    # eval reads the converted file directly (snn mode) and finds the checkpoint's SNN accuracy
    code, text, _ = run(capsys, "eval", "--checkpoint", out, "--data", CIFAR, "--data-dir",
                        cache_dir, "--limit", "32", "--json", "--no-energy")
    from_file = json.loads(text)
    code2, text, _ = run(capsys, "eval", "--checkpoint", EXPG, "--data", CIFAR, "--data-dir",
                         cache_dir, "--limit", "32", "--json", "--no-energy")
    assert code == code2 == 0 and from_file["mode"] == "snn" and "ann" not in from_file
    assert from_file["snn"]["top1"] == json.loads(text)["snn"]["top1"]


def test_convert_options_round_trip_on_digits(capsys, digits_ckpt, tmp_path):
    from ge2mst.data import load_dataset, normalize
    from ge2mst.io.spiking import load_spiking

    out = tmp_path / "seq.safetensors"
    code, text, _ = run(capsys, "convert", digits_ckpt, "--out", out, "--T", "8", "--groups", "4",
                        "--form", "sequential", "--step-mode", "collapsed")
    assert code == 0 and "wrote" in text
    loaded = load_spiking(out)
    assert loaded.T == 8 and loaded.step_mode == "collapsed"
    assert {n.G for _, n in loaded.neurons()} == {4} and {n.form for _, n in loaded.neurons()} == {
        "sequential"}
    model, config = load_checkpoint(digits_ckpt, T=8, G=4)
    fresh = convert(model.eval(), form="sequential", step_mode="collapsed")
    data = load_dataset("digits", limit=64)
    x = normalize(data.images, config["mean"], config["std"])
    with torch.no_grad():
        assert torch.equal(loaded(x), fresh(x))


def test_convert_errors_are_one_line(capsys, digits_ckpt, tmp_path):
    from safetensors.torch import save_file

    out = tmp_path / "out.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(Path(digits_ckpt).read_bytes()[:200])
    assert_one_line_error(*run(capsys, "convert", truncated, "--out", out), "truncated or corrupt")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.randn(3, 3)}, str(foreign))
    assert_one_line_error(*run(capsys, "convert", foreign, "--out", out), "foreign.safetensors")
    assert_one_line_error(*run(capsys, "convert", tmp_path / "none.safetensors", "--out", out),
                          "does not exist")
    assert_one_line_error(*run(capsys, "convert", digits_ckpt, "--out", tmp_path / "x.pt"),
                          "must end in .safetensors")
    assert_one_line_error(*run(capsys, "convert", digits_ckpt, "--out", digits_ckpt),
                          "would overwrite")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_failed_conversion_leaves_the_existing_output_untouched(capsys, digits_ckpt, tmp_path):
    out = tmp_path / "snn.safetensors"
    assert run(capsys, "convert", digits_ckpt, "--out", out)[0] == 0
    before = out.read_bytes(), out.with_suffix(".json").read_bytes()
    assert_one_line_error(*run(capsys, "convert", digits_ckpt, "--out", out), "--overwrite")
    assert_one_line_error(*run(capsys, "convert", digits_ckpt, "--out", out, "--T", "4",
                               "--groups", "3", "--overwrite"), "must divide T")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    assert_one_line_error(*run(capsys, "convert", bad, "--out", out, "--overwrite"),
                          "truncated or corrupt")
    assert (out.read_bytes(), out.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "snn.json",
                                                         "snn.safetensors"]  # no temporary left


def test_load_spiking_rejects_bad_files(capsys, digits_ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    from ge2mst.io.spiking import load_spiking

    good = tmp_path / "good.safetensors"
    assert run(capsys, "convert", digits_ckpt, "--out", good)[0] == 0
    text = good.with_suffix(".json").read_text()

    def fails(path, message):
        with pytest.raises(CheckpointError) as exc:
            load_spiking(path)
        assert message in str(exc.value) and "\n" not in str(exc.value)

    fails(digits_ckpt, "trained (ANN) checkpoint")  # the JSON of an ANN checkpoint
    fails(tmp_path / "missing.safetensors", "does not exist")

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    truncated.with_suffix(".json").write_text(text)
    fails(truncated, "truncated or corrupt")
    # ... and through the command line
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", truncated, "--data", "digits",
                               "--limit", "8"), "truncated or corrupt")

    no_json = tmp_path / "no_json.safetensors"
    no_json.write_bytes(good.read_bytes())
    fails(no_json, "does not exist")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", no_json, "--limit", "8"),
                          "no_json.json")

    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.randn(3, 3)}, str(foreign))
    foreign.with_suffix(".json").write_text(text)
    fails(foreign, "not a spiking network written by ge2mst")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", foreign, "--limit", "8"),
                          "not a spiking network written by ge2mst")

    # right description, mismatched tensors
    tensors = load_file(str(good))
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(tensors, str(mismatched), metadata={"ge2mst_snn": text.strip()})
    mismatched.with_suffix(".json").write_text(text)
    fails(mismatched, key)
    del tensors[key]
    save_file(tensors, str(mismatched), metadata={"ge2mst_snn": text.strip()})
    fails(mismatched, "missing")

    # a torn pair (new weights, old description) is refused
    other = tmp_path / "other.safetensors"
    assert run(capsys, "convert", digits_ckpt, "--out", other, "--T", "8", "--groups", "4")[0] == 0
    other.with_suffix(".json").write_text(text)
    fails(other, "do not describe the same spiking network")


def test_convert_refuses_stbp_models(capsys, tmp_path):
    from ge2mst import create_model
    from ge2mst.io.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "stbp.safetensors",
                           create_model("spikformer_tiny", in_chans=1, img_size=8, T=2))
    assert_one_line_error(*run(capsys, "convert", ckpt, "--out", tmp_path / "s.safetensors"),
                          "nothing to convert")
    assert_one_line_error(*run(capsys, "eval", "--checkpoint", ckpt, "--mode", "ann",
                               "--limit", "8"), "no ANN mode")
    code, out, _ = run(capsys, "eval", "--checkpoint", ckpt, "--limit", "16", "--json")
    report = json.loads(out)
    assert code == 0 and report["method"] == "stbp" and "ann" not in report
    assert report["snn"]["energy"]["sops"] >= 0


@needs_cifar
@pytest.mark.cifar
@pytest.mark.parametrize("checkpoint", [EXPG, ROOT / "checkpoints" / "ge2mst_cifar_tiny_effdim.safetensors"])
def test_unrecorded_fast_paths_are_bit_identical_on_real_images(cache_dir, checkpoint):
    """On 64 real CIFAR-10 images, element by element: the collapsed float32 spiking network run
    without recording (each neuron decodes Q(V) with the quantizer's kernel) equals the
    BatchNorm-folded ANN bit for bit, and the event-mode network gives the same logits with and
    without recording its spike trains."""
    from ge2mst.conversion.converter import fuse_batchnorm

    model, _ = load_checkpoint(checkpoint)
    model.eval()
    x = cifar_images(cache_dir)
    with torch.no_grad():
        folded = fuse_batchnorm(model)(x)
        collapsed = convert(model, step_mode="collapsed")
        assert torch.equal(collapsed(x), folded)
        event = convert(model.double())
        quiet = event(x.double())
        assert torch.equal(event(x.double(), record=True), quiet)
        assert all(s is not None for s in event.spike_trains().values())
