"""Bring your own network: float-trained ResNet-20 and a max-pooling VGG, made exact spiking networks
by ge2mst (prepare + calibrate, then a short progressive fine-tune), beside SpikingJelly 2.0's own
converter on the same float weights at T = 4 ... 128.

    python benchmarks/bring_your_own.py float --net resnet20 --epochs 15      # resumable
    python benchmarks/bring_your_own.py ge2mst --net resnet20 --finetune-epochs 2
    python benchmarks/bring_your_own.py spikingjelly --net resnet20           # pip install requests
    python benchmarks/bring_your_own.py report

Every stage reads and writes ``--out`` (default ``runs/byo``): ``float_<net>.pth`` and
``float_<net>.json`` (resumable after each epoch: weights, optimizer, generator, per-epoch test
accuracy and seconds), ``results.json`` (one entry per stage and network, with device, commit,
command and seconds), and ``report`` prints them as one table (spikes: per neuron for ge2mst,
per image for SpikingJelly). The networks are those of ``tests/user_nets/torchvision_style.py``,
written the way people write them, not with ge2mst's blocks. Data: ``--data`` (the CIFAR-10 JPEG
archive beside the checkout on the project's machines; any CIFAR-10 ImageFolder or ``cifar10``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from user_nets.torchvision_style import VGG, ResNet  # noqa: E402

NETS = {"resnet20": ResNet, "vgg": VGG}


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True)
    return done.stdout.strip() or "unknown"


def _device_name() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, " \
           f"torch {torch.__version__}"


def _data(args):
    from ge2mst.data import load_dataset, normalize

    train = load_dataset(args.data, split="train", limit=args.train_limit, seed=0)
    test = load_dataset(args.data, split="test", limit=args.limit, seed=0)
    mean, std = train.channel_stats()
    return (normalize(train.images, mean, std), train.labels,
            normalize(test.images, mean, std), test.labels)


def _accuracy(net, x, y, batch=500) -> float:
    net.eval()
    with torch.no_grad():
        hits = sum(int((net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(x), batch))
    return hits / len(x)


def _record(out: Path, key: str, entry: dict) -> None:
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = {**entry, "commit": _commit(), "device": _device_name(),
                    "command": " ".join(sys.argv)}
    path.write_text(json.dumps(results, indent=2) + "\n")


def train_float(args) -> None:
    """Float training (SGD + Nesterov, cosine, crops and flips), resumable after every epoch."""
    from ge2mst.data.augment import augment

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = _data(args)
    torch.manual_seed(args.seed)
    net = NETS[args.net]()
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)
    state_path, log_path = out / f"float_{args.net}.pth", out / f"float_{args.net}.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {"epochs": []}
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
    steps = math.ceil(len(x) / args.batch_size)
    for epoch in range(len(log["epochs"]), args.epochs):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i, idx in enumerate(order.split(args.batch_size)):
            step = epoch * steps + i
            for group in opt.param_groups:
                group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / (args.epochs * steps)))
            batch = augment(x[idx], gen, padding=4, hflip=True).contiguous()
            loss = F.cross_entropy(net(batch), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        log["epochs"].append({"epoch": epoch + 1, "test_accuracy": _accuracy(net, xt, yt),
                              "seconds": seconds})
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                    "generator": gen.get_state()}, state_path)
        torch.save(net.state_dict(), out / f"float_{args.net}_weights.pth")
        log_path.write_text(json.dumps(log, indent=2) + "\n")
        print(f"{args.net} epoch {epoch + 1}/{args.epochs}: test {log['epochs'][-1]['test_accuracy']:.4f}"
              f" ({seconds:.0f} s)", flush=True)
    _record(out, f"float/{args.net}", {"test_accuracy": log["epochs"][-1]["test_accuracy"],
                                       "epochs": len(log["epochs"]),
                                       "seconds": sum(e["seconds"] for e in log["epochs"])})


def run_ge2mst(args) -> None:
    """prepare + calibrate, then a progressive fine-tune; each scored and verified."""
    from ge2mst import calibrate, prepare
    from ge2mst.analysis.energy import count_operations
    from ge2mst.analysis.verification import verify
    from ge2mst.conversion.converter import convert
    from ge2mst.training.trainer import TrainConfig, Trainer

    out = Path(args.out)
    x, y, xt, yt = _data(args)
    net = NETS[args.net]()
    net.load_state_dict(torch.load(out / f"float_{args.net}_weights.pth", weights_only=True))
    float_accuracy = _accuracy(net, xt, yt)
    torch.manual_seed(args.seed)
    model = prepare(net, T=4, G=2)
    calibrate(model, [x[:512]], seed=args.seed)
    batches = [(xt[i:i + 100], yt[i:i + 100]) for i in range(0, len(xt), 100)]

    def score(model, stage: str, seconds: float) -> None:
        check = verify(model.eval(), batches, oracle_sample=None, float32_path=True)
        counts = count_operations(convert(model), [b for b, _ in batches[:2]])
        _record(out, f"ge2mst/{args.net}/{stage}", {
            "float_accuracy": float_accuracy, "snn_accuracy": check["snn_accuracy"],
            "ann_accuracy": check["ann_accuracy"], "exact": check["exact"],
            "spikes_per_neuron": check["mean_spikes_per_neuron"], "sops": counts["sops"],
            "macs": counts["macs"], "energy_uj": counts["energy_mj"] * 1e3,
            "images": check["images"], "T": 4, "G": 2, "seconds": seconds})
        print(f"{args.net} {stage}: float {float_accuracy:.4f}, SNN {check['snn_accuracy']:.4f}, "
              f"exact {check['exact']}, {counts['energy_mj'] * 1e3:.2f} uJ", flush=True)

    score(model, "calibrated", 0.0)
    if args.finetune_epochs:
        cfg = TrainConfig(epochs=args.finetune_epochs, batch_size=128, lr=args.finetune_lr,
                          weight_decay=5e-4, warmup_epochs=0.0, ramp_end=0.5, crop_padding=4,
                          hflip=True, label_smoothing=0.1, seed=args.seed)
        start = time.perf_counter()
        trainer = Trainer(model.train(), x, y, cfg)
        trainer.fit(progress=True)
        score(trainer.final_model, f"finetuned_{args.finetune_epochs}", time.perf_counter() - start)


def run_spikingjelly(args) -> None:
    """SpikingJelly 2.0's converter on the same float weights, accuracy and SOPs against T."""
    from spikingjelly.activation_based import ann2snn, functional, monitor, neuron  # noqa: F401

    out = Path(args.out)
    x, y, xt, yt = _data(args)
    net = NETS[args.net]()
    net.load_state_dict(torch.load(out / f"float_{args.net}_weights.pth", weights_only=True))
    net.eval()
    loader = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 1000, 100)]
    start = time.perf_counter()
    recipe = ann2snn.RateCodingRecipe(loader, mode=args.sj_mode)
    snn = ann2snn.Converter(recipe).convert(net)
    for T in args.T:
        hits = spikes = 0
        with torch.no_grad():
            for i in range(0, len(xt), 100):
                functional.reset_net(snn)
                counts = [0]

                def count(module, inputs, output, counts=counts):
                    counts[0] += int((output != 0).sum())

                handles = [m.register_forward_hook(count) for m in snn.modules()
                           if isinstance(m, neuron.IFNode)]
                logits = sum(snn(xt[i:i + 100]) for _ in range(T))
                for h in handles:
                    h.remove()
                hits += int((logits.argmax(1) == yt[i:i + 100]).sum())
                spikes += counts[0]
        _record(out, f"spikingjelly/{args.net}/T{T}", {
            "T": T, "snn_accuracy": hits / len(xt), "spikes_per_image": spikes / len(xt),
            "mode": args.sj_mode, "images": len(xt), "seconds": time.perf_counter() - start})
        print(f"{args.net} SpikingJelly T = {T}: {hits / len(xt):.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=("float", "ge2mst", "spikingjelly", "report"))
    parser.add_argument("--net", choices=sorted(NETS), default="resnet20")
    parser.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    parser.add_argument("--out", default="runs/byo")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--limit", type=int, default=1000, help="test images scored")
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--T", type=int, nargs="*", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--sj-mode", default="99.9%")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.stage == "float":
        train_float(args)
    elif args.stage == "ge2mst":
        run_ge2mst(args)
    elif args.stage == "spikingjelly":
        run_spikingjelly(args)
    else:
        report(Path(args.out))


def report(out: Path) -> None:
    """The table of every stage recorded in ``results.json``, one row per network and setting."""
    results = json.loads((out / "results.json").read_text())
    # seconds: ge2mst's fine-tune alone; SpikingJelly's since its conversion began (cumulative)
    print("| network | method | T | float top-1 | SNN top-1 | exact | spikes | energy µJ | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in sorted(results.items(), key=lambda kv: (kv[0].split("/")[:2], kv[1].get("T", 0))):
        stage, net, *setting = key.split("/")
        if stage == "float":
            continue
        flt = results.get(f"float/{net}", {}).get("test_accuracy")
        spikes = r.get("spikes_per_neuron", r.get("spikes_per_image"))
        energy = r.get("energy_uj")
        print(f"| {net} | {stage} {' '.join(setting)} | {r['T']} | "
              f"{'-' if flt is None else f'{100 * flt:.2f}'} | {100 * r['snn_accuracy']:.2f} | "
              f"{r.get('exact', False)} | {'-' if spikes is None else f'{spikes:.3g}'} | "
              f"{'-' if energy is None else f'{energy:.3g}'} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
