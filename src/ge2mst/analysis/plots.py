"""Figures and tables of the analysis reports; figures drawn with matplotlib's Agg backend (no
display needed).

`figure` holds the one matplotlib preamble (select Agg, import pyplot, lay out, save, close) for
any PNG of a report; `plot_report` draws the energy report of `ge2mst.analysis.energy` and
`to_markdown` writes it as a table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def figure(path, ncols: int = 1, figsize: tuple[float, float] = (6.5, 4.5),
           dpi: int = 110) -> Iterator[tuple]:
    """``with figure(path, 2, (13, 4.5)) as (fig, axes):`` a figure of ``ncols`` axes side by
    side (``axes`` an array when ``ncols`` > 1), laid out tight and saved to ``path`` (its format
    from its suffix, raster ones at ``dpi``; missing folders created) when the block ends without
    error; closed in every case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def label(ax, xlabel: str, ylabel: str | None, title: str, legend: float | None = None) -> None:
    """Axis labels, a title and (with a font size) the legend of one panel."""
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend is not None:
        ax.legend(fontsize=legend)


def stage_of(name: str) -> str:
    """Coarse stage of a layer name: ``stages.N...`` -> ``stage N+1``, else the first component."""
    parts = name.split(".")
    if parts[0] == "stages" and len(parts) > 1:
        return f"stage {int(parts[1]) + 1}"
    return parts[0] if not parts[0].isdigit() else "body"


def readable_layers(names: list[str]) -> list[str]:
    """Figure labels for layer names in network order: ``stages.1.0.fn.attn.q`` -> ``stage 2
    block 1 q``; the numbered layers of a plain Sequential (``0.conv``, ``10``) -> ``layer 1``,
    ``layer 2``, ... in order; other names without their ``conv`` / numeric parts."""
    out = []
    for i, name in enumerate(names, 1):
        parts = [p for p in name.split(".") if p not in ("fn", "body")]
        if len(parts) > 1 and parts[0] == "stages" and parts[1].isdigit():
            label = f"stage {int(parts[1]) + 1}"
            if len(parts) > 2 and parts[2].isdigit():
                label += f" block {int(parts[2]) + 1}"
            rest = [p for p in parts[3:] if not p.isdigit() and p != "conv"]
            out.append(f"{label} {rest[-1]}" if rest else label)
        elif parts and parts[0].isdigit():
            out.append(f"layer {i}")
        else:
            out.append(" ".join(p for p in parts if not p.isdigit() and p != "conv") or f"layer {i}")
    return out


def plot_report(report: dict, path, title: str = "") -> None:
    """Cumulative SOPs and upper bound along the network, and firing per neuron layer (PNG)."""
    with figure(path, 2, (13, 4.5)) as (fig, axes):
        _cumulative_operations(axes[0], report["per_layer"])
        _firing(axes[1], report)
        fig.suptitle(title or f"{report['sops']:,.0f} SOPs + {report['macs']:,.0f} MACs per "
                     f"image: {report['energy_mj'] * 1e3:.3g} uJ ({report['preset']})")


def _cumulative_operations(ax, rows: list[dict]) -> None:
    """Operations emitted and their upper bound, summed along the weight layers and attention
    products of ``rows`` in network order, with the stage boundaries marked."""
    cum, cum_ub, total, total_ub = [], [], 0.0, 0.0
    for r in rows:
        total += r["sops"] + r["macs"]
        total_ub += r["sops_upper_bound"] + r["macs"]
        cum.append(total)
        cum_ub.append(total_ub)
    xs = range(len(rows))
    ax.plot(xs, cum_ub, "k--", label="upper bound (every neuron at its cap)")
    ax.plot(xs, cum, "C0-", label="emitted: SOPs + MACs")
    attn = [i for i, r in enumerate(rows) if r["input"] == "spike pairs"]
    if attn:
        ax.scatter(attn, [cum[i] for i in attn], color="C3", zorder=3, s=18,
                   label="attention products")
    stages = [stage_of(r["name"]) for r in rows]
    for i in range(1, len(rows)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i - 0.5, color="0.85", lw=0.8)
            ax.text(i - 0.4, max(cum_ub) * 0.02, stages[i], fontsize=7, rotation=90, va="bottom")
    ax.set(xlabel="weight layer / attention product, in network order",
           ylabel="cumulative operations per image", title="cumulative synaptic operations")
    ax.legend(fontsize=8)


def _firing(ax, report: dict) -> None:
    """Firing rate and fraction of neurons at the cap of each neuron layer of ``report``."""
    nrows = report["neurons"]
    layers = range(len(nrows))
    ax.bar(layers, [r["firing_rate"] for r in nrows], color="C2", label="firing rate (spikes / cap)")
    ax.plot(layers, [r["fraction_at_cap"] for r in nrows], "k.",
            label="fraction of neurons at the cap")
    ax.set(xlabel="neuron layer, in network order", ylim=(0, 1),
           title=f"firing per layer (mean {report['firing_rate']:.3f} spikes per neuron)")
    ax.legend(fontsize=8)


def to_markdown(report: dict) -> str:
    """The energy report as a markdown table (totals last), for papers and READMEs."""
    lines = ["| layer | input | SOPs | MACs | SOPs upper bound | ANN MACs |",
             "|---|---|---:|---:|---:|---:|"]
    for r in report["per_layer"]:
        lines.append(f"| {r['name']} | {r['input']} | {r['sops']:,.0f} | {r['macs']:,.0f} | "
                     f"{r['sops_upper_bound']:,.0f} | {r['ann_macs']:,.0f} |")
    lines.append(f"| **total per image** | | **{report['sops']:,.0f}** | **{report['macs']:,.0f}** | "
                 f"**{report['sops_upper_bound']:,.0f}** | **{report['ann_macs']:,.0f}** |")
    lines.append("")
    lines.append(f"Energy per image ({report['preset']}: {report['pj_per_accumulate']} pJ per "
                 f"accumulate, {report['pj_per_mac']} pJ per MAC): SNN "
                 f"{report['energy_mj'] * 1e3:.4g} uJ, ANN {report['ann_energy_mj'] * 1e3:.4g} uJ "
                 f"({report['energy_ratio']:.2f}x). Firing rate {report['firing_rate']:.4f} spikes "
                 f"per neuron per inference, at most {report['max_spikes_per_neuron']}.")
    return "\n".join(lines)


__all__ = ["figure", "label", "plot_report", "readable_layers", "stage_of", "to_markdown"]
