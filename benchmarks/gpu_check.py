"""One short check of the GPU path, printed as one JSON line (run by benchmarks/gpu_check.sh).

Training steps of ``--model`` (default ge2mst_cifar_small) with ``--amp`` on the device from the
CIFAR-10 JPEGs, conversion to the spiking network, ``verify`` (float64, event mode, every neuron
examined by the oracle) on ``--verify-images`` test images, and images/s of training, of the ANN
and of the spiking network (float32, event and collapsed). Needs torch, numpy, pillow, safetensors
and tqdm, no package registry: ``PYTHONPATH=src``.

It runs on a CPU as well (``--device cpu``, a test does so with a tiny model), so the GPU session
that runs it blind has run code.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

from ge2mst import calibrate, convert, create_model
from ge2mst.analysis.verification import is_exact, verify
from ge2mst.core.quantizers import set_mixing
from ge2mst.data import load_dataset, normalize
from ge2mst.training.trainer import TrainConfig, Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(fn, x: torch.Tensor, device: torch.device, repeats: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x)
        _sync(device)
    return repeats * x.shape[0] / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=".data/cifar10-jpg.tar.gz")
    parser.add_argument("--data-dir", default=None, help="where the archive is extracted")
    parser.add_argument("--model", default="ge2mst_cifar_small")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-seconds", type=float, default=60.0,
                        help="train whole epochs over --train-images until this much time is spent")
    parser.add_argument("--verify-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "CUDA is not available"}))
        return 2
    report: dict = {"model": args.model, "device": str(device), "torch": torch.__version__,
                    "host": platform.machine(), "compile": args.compile}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    t0 = time.perf_counter()
    train = load_dataset(args.data, split="train", limit=args.train_images, cache_dir=args.data_dir)
    test = load_dataset(args.data, split="test", limit=args.verify_images, cache_dir=args.data_dir)
    mean, std = train.channel_stats()
    x_train, x_test = normalize(train.images, mean, std), normalize(test.images, mean, std)
    report["data_seconds"] = round(time.perf_counter() - t0, 1)

    torch.manual_seed(0)
    model = create_model(args.model, num_classes=train.num_classes)
    calibrate(model, [x_train[:256]])
    model.to(device)
    report["params"] = sum(p.numel() for p in model.parameters())
    # a long nominal schedule, cut by time: the first epoch warms up (and compiles) untimed, the
    # next ones are timed until --train-seconds are spent; p is set to 1 for conversion after
    cfg = TrainConfig(epochs=1000, batch_size=args.batch_size, lr=2e-3, amp=True, hflip=True,
                      crop_padding=4, ramp_end=0.01)
    trainer = Trainer(model, x_train, train.labels, cfg, device=device, compile=args.compile)
    t1 = time.perf_counter()
    trainer.run_epoch()
    _sync(device)
    report["first_epoch_seconds"] = round(time.perf_counter() - t1, 1)
    steps = images = 0
    start = time.perf_counter()
    while steps == 0 or time.perf_counter() - start < args.train_seconds:
        record = trainer.run_epoch()
        steps += trainer.steps_per_epoch
        images += x_train.shape[0]
    _sync(device)
    train_seconds = time.perf_counter() - start
    report.update(train_epochs=trainer.epoch, train_images_per_second=round(images / train_seconds, 1),
                  train_step_ms=round(1000 * train_seconds / steps, 2), last_loss=record["loss"],
                  last_train_accuracy=record["train_accuracy"])
    if device.type == "cuda":
        report["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    set_mixing(model, 1.0)
    model.eval()

    x = x_test.to(device)
    report["ann_images_per_second"] = round(_images_per_second(model, x, device, args.repeats), 1)
    for mode in ("event", "collapsed"):
        snn = convert(model, step_mode=mode)
        report[f"snn_{mode}_float32_images_per_second"] = round(
            _images_per_second(snn, x, device, args.repeats), 1)
    start = time.perf_counter()
    check = verify(model, [(x, test.labels.to(device))], oracle_sample=None)
    report["verify_seconds"] = round(time.perf_counter() - start, 1)
    report.update({key: check[key] for key in (
        "images", "codes_compared", "code_mismatches", "oracle_checked", "oracle_mismatches",
        "form_mismatches", "max_rel_diff", "prediction_agreement", "exactness_failures")})
    report["exact"] = is_exact(check)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report), flush=True)
    return 0 if report["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
