"""Bring your own network: float-trained ResNet-20 and a max-pooling VGG, made exact spiking networks
by ge2mst (prepare + calibrate, then a short progressive fine-tune), beside SpikingJelly 2.0's own
converter on the same float weights at T = 4 ... 128.

    python benchmarks/bring_your_own.py float --net resnet20 --epochs 15      # resumable
    python benchmarks/bring_your_own.py ge2mst --net resnet20 --finetune-epochs 3
    python benchmarks/bring_your_own.py spikingjelly --net resnet20           # pip install requests
    python benchmarks/bring_your_own.py report --plot bring_your_own.png

Every stage reads and writes ``--out`` (default ``runs/byo``): ``float_<net>.pth`` and
``float_<net>.json`` (resumable after each epoch: weights, optimizer, generator, per-epoch test
accuracy and seconds), ``results.json`` (one entry per stage and network, with device, commit,
command, data hash and seconds), and ``report`` prints them as one table (``--plot``: and a
figure). The measured records and the weights behind them are kept in
``benchmarks/bring_your_own/`` (``report --out benchmarks/bring_your_own``). The networks are
those of ``tests/user_nets/torchvision_style.py``, written the way people write them, not with
ge2mst's blocks. Data: ``--data`` (the CIFAR-10 JPEG archive beside the checkout on the project's
machines; any CIFAR-10 ImageFolder or ``cifar10``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from user_nets.torchvision_style import CifarVGG, ResNet  # noqa: E402

NETS = {"resnet20": ResNet, "vgg": CifarVGG}


def _commit() -> str:
    from ge2mst.training.provenance import provenance

    return (provenance(torch.device("cpu"))["commit"] or "unknown")[:7]


def _device_name() -> str:
    from ge2mst.training.provenance import cpu_model

    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


DATA_HASH = {}


def _data(args):
    """Normalised train and test images and labels; their sha256 (pixels and labels as loaded)
    goes into every record."""
    from ge2mst.data import load_dataset, normalize

    train = load_dataset(args.data, split="train", limit=args.train_limit, seed=0)
    test = load_dataset(args.data, split="test", limit=args.limit, seed=0)
    digest = hashlib.sha256()
    for t in (train.images, train.labels, test.images, test.labels):
        digest.update(t.contiguous().numpy().tobytes())
    DATA_HASH["data_sha256"] = digest.hexdigest()[:16]
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
    command = " ".join(Path(a).name if Path(a).is_absolute() else a for a in sys.argv)  # no machine paths
    results[key] = {**entry, **DATA_HASH, "commit": _commit(), "device": _device_name(),
                    "command": command}
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
        counts = count_operations(convert(model), [b for b, _ in batches])
        # the weights behind the figure: load with prepare(NETS[net](), T=4, G=2).load_state_dict
        torch.save(model.state_dict(), out / f"ge2mst_{args.net}_{stage}.pth")
        _record(out, f"ge2mst/{args.net}/{stage}", {
            "float_accuracy": float_accuracy, "snn_accuracy": check["snn_accuracy"],
            "ann_accuracy": check["ann_accuracy"], "exact": check["exact"],
            "spikes_per_neuron": check["mean_spikes_per_neuron"],
            "spikes_per_image": counts["spikes_per_image"], "sops": counts["sops"],
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


class _SynapseCounter:
    """SOPs and MACs of a SpikingJelly network run step by step, with ge2mst's accounting
    (``ge2mst.analysis.energy``): a Conv2d/Linear whose input is spikes at every step (the nonzero
    entries of a step share one magnitude: IF spikes scaled by a VoltageScaler) costs one
    accumulate per synapse each event reaches (``event_sops``, padding edges included); any other
    input (pixels, spike sums after a residual add or an average) costs the layer's dense MACs
    once per inference, as ge2mst is charged for its own real and integer inputs."""

    def __init__(self, net):
        from ge2mst.analysis.energy import dense_macs, event_sops

        self.dense_macs, self.event_sops = dense_macs, event_sops
        self.layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        self.handles = [m.register_forward_hook(self.hook) for m in self.layers]
        self.sops = self.macs = 0.0
        self.begin()

    def begin(self) -> None:
        self.counts = {m: 0 for m in self.layers}
        self.events = {m: True for m in self.layers}
        self.shape = {}

    def hook(self, layer, inputs, output) -> None:
        x = inputs[0].detach()
        self.shape[layer] = output.shape
        nonzero = x[x != 0].abs()
        if nonzero.numel() and bool(nonzero.max() > nonzero.min() * (1 + 1e-5)):
            self.events[layer] = False
        self.counts[layer] = self.counts[layer] + (x != 0).to(torch.float64)

    def end(self) -> None:
        for layer in self.layers:
            if layer not in self.shape:
                continue
            if self.events[layer]:
                self.sops += float(self.event_sops(layer, self.counts[layer]).sum())
            else:
                out = self.shape[layer]
                self.macs += self.dense_macs(layer, out[1:]) * out[0]
        self.begin()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def run_spikingjelly(args) -> None:
    """SpikingJelly 2.0's converter on the same float weights: accuracy, spikes, SOPs and energy
    (45 nm fp32: 0.9 pJ an accumulate, 4.6 pJ a MAC, as ge2mst's count) against T."""
    from spikingjelly.activation_based import ann2snn, functional, neuron

    from ge2mst.analysis.energy import PRESETS

    out = Path(args.out)
    x, y, xt, yt = _data(args)
    net = NETS[args.net]()
    net.load_state_dict(torch.load(out / f"float_{args.net}_weights.pth", weights_only=True))
    net.eval()
    loader = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 1000, 100)]
    start = time.perf_counter()
    recipe = ann2snn.RateCodingRecipe(loader, mode=args.sj_mode)
    snn = ann2snn.Converter(recipe).convert(net)
    pj = PRESETS["45nm-fp32"]
    for T in args.T:
        hits = spikes = 0
        counter = _SynapseCounter(snn)
        with torch.no_grad():
            for i in range(0, len(xt), 100):
                functional.reset_net(snn)
                counts = [0]

                def count(module, inputs, output, counts=counts):
                    counts[0] += int((output != 0).sum())

                handles = [m.register_forward_hook(count) for m in snn.modules()
                           if isinstance(m, neuron.IFNode)]
                logits = sum(snn(xt[i:i + 100]) for _ in range(T))
                counter.end()
                for h in handles:
                    h.remove()
                hits += int((logits.argmax(1) == yt[i:i + 100]).sum())
                spikes += counts[0]
        counter.remove()
        sops, macs = counter.sops / len(xt), counter.macs / len(xt)
        _record(out, f"spikingjelly/{args.net}/T{T}", {
            "T": T, "snn_accuracy": hits / len(xt), "spikes_per_image": spikes / len(xt),
            "sops": sops, "macs": macs, "energy_uj": (sops * pj["ac_pj"] + macs * pj["mac_pj"]) * 1e-6,
            "mode": args.sj_mode, "images": len(xt), "seconds": time.perf_counter() - start})
        print(f"{args.net} SpikingJelly T = {T}: {hits / len(xt):.4f}, {sops:.3g} SOPs", flush=True)


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
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--T", type=int, nargs="*", default=[4, 8, 16, 32, 64, 128])
    parser.add_argument("--sj-mode", default="99.9%")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="report: also draw accuracy against T and energy")
    args = parser.parse_args()
    if args.stage == "float":
        train_float(args)
    elif args.stage == "ge2mst":
        run_ge2mst(args)
    elif args.stage == "spikingjelly":
        run_spikingjelly(args)
    else:
        report(Path(args.out))
        if args.plot:
            plot(Path(args.out), args.plot)


def _cell(value, form: str) -> str:
    return "-" if value is None else format(value, form)


def report(out: Path) -> None:
    """The table of every stage recorded in ``results.json``, one row per network and setting."""
    results = json.loads((out / "results.json").read_text())
    # seconds: ge2mst's fine-tune alone; SpikingJelly's since its conversion began (cumulative)
    print("| network | method | T | float top-1 | SNN top-1 | exact | spikes / neuron | spikes / image "
          "| SOPs / image | energy µJ / image | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in sorted(results.items(), key=lambda kv: (kv[0].split("/")[:2], kv[1].get("T", 0))):
        stage, net, *setting = key.split("/")
        if stage == "float":
            continue
        flt = results.get(f"float/{net}", {}).get("test_accuracy")
        sops = r.get("sops")
        print(f"| {net} | {stage} {' '.join(setting)} | {r['T']} | "
              f"{_cell(None if flt is None else 100 * flt, '.2f')} | {100 * r['snn_accuracy']:.2f} | "
              f"{r.get('exact', False)} | {_cell(r.get('spikes_per_neuron'), '.3g')} | "
              f"{_cell(r.get('spikes_per_image'), '.3g')} | "
              f"{_cell(None if sops is None else sops / 1e6, '.3g')} M | "
              f"{_cell(r.get('energy_uj'), '.3g')} | {r['seconds']:.0f} |")


def plot(out: Path, path: str) -> None:
    """Top-1 against T (left) and against energy per image (right): SpikingJelly's curve, ge2mst's
    points at T = 4 (calibrated only, and fine-tuned), the float ANN as a dashed line."""
    from ge2mst.analysis.plots import figure, label

    results = json.loads((out / "results.json").read_text())
    nets = sorted({key.split("/")[1] for key in results if not key.startswith("float/")})
    with figure(path, 3, (15, 4.8)) as (fig, (by_t, by_energy, key)):
        for colour, net in zip(("C0", "C3", "C2", "C1"), nets, strict=False):
            sj = sorted((r for k, r in results.items() if k.startswith(f"spikingjelly/{net}/")),
                        key=lambda r: r["T"])
            mine = sorted(((k.split("/")[2], r) for k, r in results.items()
                           if k.startswith(f"ge2mst/{net}/")), key=lambda kr: kr[1]["snn_accuracy"])
            flt = results.get(f"float/{net}", {}).get("test_accuracy")
            if flt is not None:
                for ax in (by_t, by_energy):
                    ax.axhline(100 * flt, color=colour, ls="--", lw=1,
                               label=f"{net} float ANN" if ax is by_t else None)
            if sj:
                by_t.plot([r["T"] for r in sj], [100 * r["snn_accuracy"] for r in sj], "o-",
                          color=colour, label=f"{net} SpikingJelly RateCoding ({sj[0]['mode']})")
                with_energy = [r for r in sj if "energy_uj" in r]
                by_energy.plot([r["energy_uj"] for r in with_energy],
                               [100 * r["snn_accuracy"] for r in with_energy], "o-", color=colour)
                for r in with_energy:
                    by_energy.annotate(f"T={r['T']}", (r["energy_uj"], 100 * r["snn_accuracy"]),
                                       textcoords="offset points", fontsize=7,
                                       xytext=(4, -10) if colour == "C0" else (-8, 6))
            for stage, r in mine:
                marker, fill = ("*", colour) if stage.startswith("finetuned") else ("D", "none")
                text = stage.replace("finetuned_", "+ fine-tune, epochs: ").replace("calibrated",
                                                                                 "calibrated only")
                for ax, xv in ((by_t, 4), (by_energy, r["energy_uj"])):
                    ax.plot([xv], [100 * r["snn_accuracy"]], marker, ms=12 if marker == "*" else 7,
                            color=colour, mfc=fill,
                            label=f"{net} ge2mst, {text} (exact: {r['exact']})" if ax is by_t else None)
        by_t.set_xscale("log", base=2)
        steps = sorted({r["T"] for r in results.values() if "T" in r})
        by_t.set_xticks(steps, [str(t) for t in steps])
        by_energy.set_xscale("log")
        by_t.set_ylim(0, 100)
        by_energy.set_ylim(0, 100)
        label(by_t, "time steps T", "top-1 on CIFAR-10 test images (%)",
              "accuracy against T (same float weights)")
        key.axis("off")  # the legend gets a panel of its own
        key.legend(*by_t.get_legend_handles_labels(), loc="center left", fontsize=8, frameon=False)
        label(by_energy, "energy per image (µJ; 45 nm fp32: 0.9 pJ / SOP, 4.6 pJ / MAC)", None,
              "accuracy against energy")


if __name__ == "__main__":
    main()
