"""Device-correct, sync-free training, checked on the CPU with the ``meta`` device.

A meta tensor has a shape and a dtype but no data: it obeys CUDA's device-mixing rule (a CPU
tensor of more than 0 dimensions cannot meet it) and refuses every host synchronisation
(``.item()``, ``float(t)``, ``bool(t)``), so a training step that runs on meta moves no table from
the CPU per call and never waits for the device.
"""

import json
import math

import pytest
import torch
from conftest import CIFAR, CIFAR_MISSING
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import ge2mst.core.quantizers as quant
from ge2mst import ExpGQuant, SignedExpGQuant
from ge2mst.cli import main
from ge2mst.core.coding import ExpGCodeBook, expg_codebook
from ge2mst.core.quantizers import QCFSQuant, quantizers, set_mixing
from ge2mst.models import create_model, list_models
from ge2mst.training.trainer import TrainConfig, Trainer

META = torch.device("meta")


def _image_side(name: str) -> int:
    return 32 if ("cifar" in name or "tiny" in name or "spikformer" in name) else 224


def _train_step_on_meta(model: nn.Module, side: int, classes: int) -> torch.Tensor:
    model.train()
    x = torch.randn(2, 3, side, side, device=META)
    out = model(x)
    assert out.device == META and out.shape == (2, classes)
    loss = nn.functional.cross_entropy(out, torch.zeros(2, dtype=torch.long, device=META))
    loss.backward()
    return loss


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_every_registered_model_trains_on_meta(name, p):
    with torch.device("meta"):  # built there: code books must stay on the host all the same
        model = create_model(name)
    assert all(t.device == META for t in model.parameters())
    set_mixing(model, p)
    _train_step_on_meta(model, _image_side(name), 10 if _image_side(name) == 32 else 1000)
    params = [(n, t) for n, t in model.named_parameters() if t.requires_grad]
    assert params and all(t.grad is not None and t.grad.device == META for _, t in params), [
        n for n, t in params if t.grad is None]
    lams = [q.lam for _, q in quantizers(model)]
    assert all(lam.grad is not None for lam in lams)


@pytest.mark.parametrize("search_levels", [0, 10_000])
@pytest.mark.parametrize("quantizer,T,G", [("expg", 2, 1), ("expg", 4, 2), ("expg", 8, 4),
                                           ("qcfs", 8, 1)])
def test_both_float32_quantizer_paths_train_on_meta(monkeypatch, quantizer, T, G, search_levels):
    """The grid (default) and the binary search over the boundaries (``SEARCH_LEVELS``)."""
    monkeypatch.setattr(quant, "SEARCH_LEVELS", search_levels)
    model = create_model("ge2mst_cnn_tiny", T=T, G=G, quantizer=quantizer).to(META)
    assert any(isinstance(q, QCFSQuant) for _, q in quantizers(model)) == (quantizer == "qcfs")
    _train_step_on_meta(model, 32, 10)


def test_a_cpu_model_moved_to_meta_trains_and_its_code_book_is_copied_once():
    model = create_model("ge2mst_cifar_tiny").to(META)
    book = next(q.book for _, q in quantizers(model))
    _train_step_on_meta(model, 32, 10)
    first = book.on("grid_codes", META)
    _train_step_on_meta(model, 32, 10)
    assert book.on("grid_codes", META) is first  # cached per device, not uploaded per call
    assert book.on("codes", "cpu") is book.codes  # the host needs no copy


def test_code_books_stay_on_the_host_under_a_default_device():
    with torch.device("meta"):
        book = ExpGCodeBook(6, 3)
    for table in (book.codes, book.mids, book.beta, book.patterns, book.pre, book.grid_codes):
        assert table.device == torch.device("cpu")
    assert book.codes.tolist()[:4] == [0, 1, 2, 4]


def test_a_replaced_table_is_copied_again():
    book = ExpGCodeBook(4, 2)
    before = book.on("mids", META)
    book.mids = book.mids + 0.0
    after = book.on("mids", META)
    assert after is not before and after.device == META


def test_amp_autocast_keeps_the_quantizer_in_float32_on_meta():
    q = SignedExpGQuant(4, 2, lam=1.0).to(META)
    x = torch.randn(3, 5, device=META, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(x)
    assert out.dtype == torch.float32 and out.device == META
    out.sum().backward()
    assert x.grad is not None and q.lam.grad is not None


def test_a_nan_loss_stops_training_with_a_clear_error():
    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", num_classes=3)
    images = torch.randn(8, 3, 32, 32)
    images[3] = math.nan
    trainer = Trainer(model, images, torch.arange(8) % 3, TrainConfig(epochs=1, batch_size=4))
    with pytest.raises(FloatingPointError, match="non-finite"):
        trainer.run_epoch()


# ---- torch.compile ------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=4,
                       max_size=64))
def test_compiled_quantizer_is_bit_identical_to_eager(compiled_quantizers, values):
    x = torch.tensor(values, dtype=torch.float32)
    for q, compiled in compiled_quantizers:
        book = q.book
        bounds = (quant.level_spacing(q.lam, book.n_max) * book.mids).to(torch.float32)
        xs = torch.cat([x, bounds, torch.nextafter(bounds, torch.full_like(bounds, math.inf)),
                        torch.nextafter(bounds, torch.full_like(bounds, -math.inf))])
        eager, got = q(xs), compiled(xs)
        same = (eager.view(torch.int32) == got.view(torch.int32)) | (eager.isnan() & got.isnan())
        assert bool(same.all())


@pytest.fixture(scope="module")
def compiled_quantizers():
    pairs = []
    for q in (ExpGQuant(4, 2, lam=1.3), SignedExpGQuant(8, 2, lam=0.7), ExpGQuant(2, 2, lam=2.0)):
        pairs.append((q, torch.compile(q, dynamic=True)))
    return pairs


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
@pytest.mark.cifar
def test_train_compile_on_the_cpu(capsys, tmp_path, cache_dir):
    """``ge2mst train --compile`` of ge2mst_cifar_tiny: it trains, converts and stays exact."""
    code = main(["train", "--model", "ge2mst_cifar_tiny", "--data", str(CIFAR), "--data-dir",
                 cache_dir, "--train-limit", "64", "--limit", "32", "--epochs", "1",
                 "--batch-size", "32", "--compile", "--json", "--no-tensorboard", "--out",
                 str(tmp_path / "run")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["exact"] is True
    assert report["last_epoch"]["epoch"] == 1 and math.isfinite(report["last_epoch"]["loss"])


def test_shared_code_books_are_not_rebuilt_per_device():
    book = expg_codebook(4, 2)
    a = book.on("patterns", META)
    b = expg_codebook(4, 2).on("patterns", META)
    assert a is b


@pytest.mark.skipif(not CIFAR.is_file(), reason=CIFAR_MISSING)
@pytest.mark.cifar
def test_gpu_check_script_runs_its_whole_path_on_the_cpu(tmp_path):
    """The GPU session runs benchmarks/gpu_check.sh blind: its code path has run here first."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DATA=str(CIFAR), TMPDIR=str(tmp_path), OUT=str(tmp_path))
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--model",
                           "ge2mst_cifar_tiny", "--train-images", "64", "--batch-size", "32",
                           "--train-seconds", "0.1", "--verify-images", "8", "--repeats", "1"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["exact"] is True and report["oracle_checked"] == report["codes_compared"] > 0
    assert report["train_images_per_second"] > 0 and report["snn_event_float32_images_per_second"] > 0
    missing = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=root, capture_output=True,
                             text=True, env=dict(env, DATA=str(tmp_path / "absent.tar.gz")))
    assert missing.returncode == 2 and "copy ../shared/data" in missing.stderr
