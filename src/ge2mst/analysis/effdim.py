"""Effective dimension and time-step design: instruments to test the claims of related work.

Seed 004 (Guo, Wu, Yiu) claims that effective dimensions of 47-89 on CIFAR / ImageNet explain why
T = 4 suffices, that an epsilon-approximation needs Omega(L_f^2 n d / epsilon^2) spikes, and that
a calibrated constant C = 2.3 predicts spikes with R^2 = 0.97. Its definitions are not public in
what we have. This module measures rather than assumes:

- `estimate_dimensions`: PCA components for 90 / 95 / 99 % of the variance, the participation
  ratio (sum l)^2 / sum l^2 and the entropy effective rank exp(H(l / sum l)) of a feature
  covariance spectrum, each with a basic bootstrap confidence interval (rows resampled);
- `features`: raw pixels, the tokens entering every attention block, or any named layer (hooks);
- `epsilon_curve`: the error epsilon of the converted spiking network against the full-precision
  network (quantizers replaced by their clip), and the spikes it emits, for a list of (T, G);
- `fit_constant`: least squares through the origin of spikes = C * L_f^2 * n * d / epsilon^2,
  with R^2 and a bootstrap interval over the points.

Reconstructions, stated plainly (the seed does not define them): n is the number of spiking
neurons per image, d the participation ratio of the chosen features, L_f an empirical local
Lipschitz constant of the full-precision network (mean ratio of logit change to input change
under small random perturbations), epsilon the mean relative logit error. With other readings the
fitted C changes; the tools take them as arguments.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from ..conversion.converter import convert
from ..core.quantizers import quantizers, set_time_steps
from ..errors import ConfigError, InputError
from ..nn.attention import GroupedAttention
from .plots import figure, label

LEVELS = (0.90, 0.95, 0.99)


def spectrum(x: torch.Tensor) -> torch.Tensor:
    """Eigenvalues (descending, float64) of the covariance of N x D features ``x``."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise InputError(f"features must be N x D with N >= 2, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("features contain NaN or infinite values")
    xc = x.to(torch.float64) - x.to(torch.float64).mean(0, keepdim=True)
    s = torch.linalg.svdvals(xc)
    return (s ** 2 / (x.shape[0] - 1)).clamp_min(0)


def pca_dimension(eigs: torch.Tensor, level: float) -> int:
    """Smallest number of principal components holding ``level`` of the variance."""
    total = eigs.sum()
    if total <= 0:
        return 0
    cum = torch.cumsum(eigs, 0) / total
    return int(torch.searchsorted(cum, torch.tensor(level - 1e-12, dtype=cum.dtype)).item()) + 1


def participation_ratio(eigs: torch.Tensor) -> float:
    s2 = float((eigs ** 2).sum())
    return float(eigs.sum()) ** 2 / s2 if s2 > 0 else 0.0


def entropy_rank(eigs: torch.Tensor) -> float:
    total = float(eigs.sum())
    if total <= 0:
        return 0.0
    p = eigs[eigs > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def _all(eigs: torch.Tensor, levels: Sequence[float]) -> dict[str, float]:
    out = {f"pca_{round(level * 100)}": float(pca_dimension(eigs, level)) for level in levels}
    out["participation_ratio"] = participation_ratio(eigs)
    out["entropy_rank"] = entropy_rank(eigs)
    return out


def estimate_dimensions(x: torch.Tensor, levels: Sequence[float] = LEVELS, bootstrap: int = 100,
                        ci: float = 0.95, seed: int = 0, max_samples: int | None = 4000) -> dict:
    """Effective-dimension estimates of N x D features, each with a bootstrap interval.

    The interval is the basic (reverse-percentile) bootstrap interval [2v - q_hi, 2v - q_lo]:
    resampling rows with replacement duplicates them, which biases these spectral estimators
    downward, and the basic interval corrects for that bias (a percentile interval would sit
    below the truth). ``bootstrap_mean`` shows the size of the bias.

    Returns ``{name: {"value": v, "ci": [lo, hi], "bootstrap_mean": m}, "samples": N,
    "features": D}``.
    """
    if not 0 < ci < 1:
        raise ConfigError(f"ci must lie in (0, 1), got {ci}")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0, got {bootstrap}")
    gen = torch.Generator().manual_seed(seed)
    if max_samples is not None and x.shape[0] > max_samples:
        x = x[torch.randperm(x.shape[0], generator=gen)[:max_samples]]
    point = _all(spectrum(x), levels)
    draws = {k: [] for k in point}
    for _ in range(bootstrap):
        idx = torch.randint(0, x.shape[0], (x.shape[0],), generator=gen)
        for k, v in _all(spectrum(x[idx]), levels).items():
            draws[k].append(v)
    out = {}
    for k, v in point.items():
        if bootstrap:
            d = torch.tensor(draws[k], dtype=torch.float64)
            lo, hi = torch.quantile(d, torch.tensor([(1 - ci) / 2, (1 + ci) / 2], dtype=d.dtype))
            out[k] = {"value": v, "ci": [2 * v - float(hi), 2 * v - float(lo)],
                      "bootstrap_mean": float(d.mean())}
        else:
            out[k] = {"value": v, "ci": None, "bootstrap_mean": None}
    return {**out, "samples": int(x.shape[0]), "features": int(x.shape[1]), "ci_level": ci,
            "bootstrap": bootstrap}


# ---- features -------------------------------------------------------------------------------


def _tokens(t: torch.Tensor) -> torch.Tensor:
    """B x C x H x W -> (B H W) x C tokens; B x F stays."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(t.shape[0], -1)


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, layers: Sequence[str] | None = None,
             batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Features of ``images``: ``"pixels"`` (N x C H W), the tokens entering every attention block
    (``"<name>:input"``, tokens x C) and the outputs of the named ``layers`` (tokens x C for maps,
    N x F otherwise)."""
    named = dict(model.named_modules())
    missing = [n for n in (layers or []) if n not in named]
    if missing:
        raise ConfigError(f"no layer named {missing[0]!r}; e.g. {', '.join(list(named)[1:6])}")
    store: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in named.items():
        if isinstance(m, GroupedAttention):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, n=name: store.setdefault(f"{n}:input", []).append(
                    _tokens(args[0].float()))))
    for name in layers or []:
        hooks.append(named[name].register_forward_hook(
            lambda mod, args, out, n=name: store.setdefault(n, []).append(_tokens(out.float()))))
    model.eval()
    try:
        for i in range(0, images.shape[0], batch_size):
            model(images[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
    result = {"pixels": images.reshape(images.shape[0], -1).float()}
    result.update({k: torch.cat(v) for k, v in store.items()})
    return result


# ---- error against T, spikes, and the constant C ----------------------------------------------


def full_precision(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantizers are their clip (p = 0): the full-precision network."""
    fp = copy.deepcopy(model).eval()
    for _, q in quantizers(fp):
        q.p = 0.0
    return fp


@torch.no_grad()
def lipschitz_estimate(model: nn.Module, images: torch.Tensor, scale: float = 1e-3,
                       draws: int = 4, seed: int = 0) -> float:
    """Mean ||f(x + e) - f(x)|| / ||e|| over images and random perturbations e (||e|| = scale ||x||)."""
    gen = torch.Generator().manual_seed(seed)
    base = model(images)
    ratios = []
    for _ in range(draws):
        e = torch.randn(images.shape, generator=gen)
        e = e * (scale * images.flatten(1).norm(dim=1) / e.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
        ratios.append((model(images + e) - base).flatten(1).norm(dim=1) / e.flatten(1).norm(dim=1))
    return float(torch.cat(ratios).mean())


@torch.no_grad()
def epsilon_curve(model: nn.Module, images: torch.Tensor, settings: Sequence[tuple[int, int]],
                  encoding: str | None = None) -> list[dict]:
    """For each (T, G): epsilon of the converted SNN against the full-precision network, and the
    spikes it emitted (per image, counted from the recorded spike trains)."""
    ref = full_precision(model)(images).to(torch.float64)
    scale = ref.flatten(1).norm(dim=1).clamp_min(1e-12)
    kinds = {type(q).__name__ for _, q in quantizers(model)}
    if encoding is None:
        encoding = "repeat" if kinds == {"QCFSQuant"} else "once"
    points = []
    for T, G in settings:
        m = copy.deepcopy(model).eval()
        set_time_steps(m, T, G)
        snn = convert(m, encoding=encoding)
        out = snn(images, record=True).to(torch.float64)
        spikes = sum(int(s.abs().sum()) for s in snn.spike_trains().values())
        neurons = sum(s[0][0].numel() for s in snn.spike_trains().values())
        eps = float(((out - ref).flatten(1).norm(dim=1) / scale).mean())
        agree = float((out.argmax(1) == ref.argmax(1)).double().mean())
        points.append({"T": T, "G": G, "epsilon": eps, "prediction_agreement_with_fp": agree,
                       "spikes_per_image": spikes / images.shape[0], "neurons_per_image": neurons})
    return points


def fit_constant(points: Sequence[dict], bootstrap: int = 1000, ci: float = 0.95,
                 seed: int = 0) -> dict:
    """Least squares through the origin of y = spikes on x = L_f^2 n d / epsilon^2.

    Each point needs ``spikes_per_image``, ``epsilon``, ``L_f``, ``n`` and ``d``. R^2 is
    1 - SSR / SST with SST about the mean of y (it can be negative for a poor fit).
    """
    if len(points) < 2:
        raise ConfigError("fitting C needs at least two points")
    x = torch.tensor([p["L_f"] ** 2 * p["n"] * p["d"] / p["epsilon"] ** 2 for p in points],
                     dtype=torch.float64)
    y = torch.tensor([p["spikes_per_image"] for p in points], dtype=torch.float64)
    if not torch.isfinite(x).all() or (x <= 0).any():
        raise InputError("every point needs epsilon > 0 and positive L_f, n, d")

    def fit(xs, ys):
        return float((xs * ys).sum() / (xs * xs).sum())

    c = fit(x, y)
    ssr = float(((y - c * x) ** 2).sum())
    sst = float(((y - y.mean()) ** 2).sum())
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(bootstrap):
        idx = torch.randint(0, len(points), (len(points),), generator=gen)
        if (x[idx] > 0).any():
            draws.append(fit(x[idx], y[idx]))
    d = torch.tensor(draws, dtype=torch.float64)
    lo, hi = torch.quantile(d, torch.tensor([(1 - ci) / 2, (1 + ci) / 2], dtype=d.dtype))
    return {"C": c, "ci": [float(lo), float(hi)], "ci_level": ci,
            "r2": 1 - ssr / sst if sst > 0 else None, "points": len(points)}


def advise(points: Sequence[dict], target_epsilon: float) -> dict | None:
    """The measured (T, G) with the fewest spikes whose epsilon meets ``target_epsilon``."""
    ok = [p for p in points if p["epsilon"] <= target_epsilon]
    return min(ok, key=lambda p: (p["spikes_per_image"], p["T"])) if ok else None



#: how the report's symbols are read (seed 004 does not define them)
RECONSTRUCTION = ("n = spiking neurons per image, d = participation ratio, L_f = empirical local "
                  "Lipschitz constant, epsilon = mean relative logit error against the "
                  "full-precision network; seed 004 does not define these")


def effdim_report(model: nn.Module, images: torch.Tensor, settings: Sequence[tuple[int, int]],
                  layers: Sequence[str] | None = None, bootstrap: int = 100,
                  curve_images: int = 128, target_epsilon: float = 0.05, seed: int = 0,
                  plot=None) -> dict:
    """What ``ge2mst effdim`` reports on ``images``: the effective dimensions of the pixels, of the
    attention inputs and of ``layers`` (`estimate_dimensions`); the error curve over ``settings``
    on the first ``curve_images`` images (`epsilon_curve`); L_f on the first 64 images; n and d;
    the fit of C (`fit_constant`, over the points with epsilon > 0; None with fewer than two) and
    the cheapest measured (T, G) meeting ``target_epsilon`` (`advise`). With ``plot``, a PNG
    there (`plot_effdim`), named under ``"plot"``."""
    dims, spectra = {}, {}
    for name, x in features(model, images, layers).items():
        dims[name] = estimate_dimensions(x, bootstrap=bootstrap, seed=seed)
        spectra[name] = spectrum(x[:4000])
    curve = epsilon_curve(model, images[:curve_images], settings)
    l_f = lipschitz_estimate(full_precision(model), images[:64], seed=seed)
    n = curve[0]["neurons_per_image"]
    d = dims["pixels"]["participation_ratio"]["value"]
    usable = [dict(p, L_f=l_f, n=n, d=d) for p in curve if p["epsilon"] > 0]
    fit = fit_constant(usable, seed=seed) if len(usable) >= 2 else None
    report = {"dimensions": dims, "curve": curve, "L_f": l_f, "n": n, "d": d,
              "d_source": "participation ratio of the pixels", "fit": fit,
              "advice": {"target_epsilon": target_epsilon,
                         "cheapest_measured": advise(curve, target_epsilon)},
              "reconstruction": RECONSTRUCTION}
    if plot:
        plot_effdim({**report, "_spectra": spectra}, plot)
        report["plot"] = plot
    return report


def format_effdim(report: dict) -> str:
    """The lines ``ge2mst effdim`` prints for ``report`` (`effdim_report`)."""
    lines = []
    for name, dm in report["dimensions"].items():
        lines.append(f"{name:<28} PCA-90/95/99 {dm['pca_90']['value']:.0f} / "
                     f"{dm['pca_95']['value']:.0f} / {dm['pca_99']['value']:.0f}, participation "
                     f"ratio {dm['participation_ratio']['value']:.1f} "
                     f"{dm['participation_ratio']['ci']}, entropy rank "
                     f"{dm['entropy_rank']['value']:.1f}")
    for p in report["curve"]:
        lines.append(f"T={p['T']} G={p['G']}: epsilon {p['epsilon']:.4f}, "
                     f"{p['spikes_per_image']:,.0f} spikes per image")
    fit = report["fit"]
    if fit:
        lines.append(f"C = {fit['C']:.4g} (CI {fit['ci'][0]:.3g}..{fit['ci'][1]:.3g}), "
                     f"R^2 = {fit['r2']}")
    return "\n".join(lines)


def plot_effdim(report: dict, path) -> None:
    """Cumulative explained variance of each feature set, and epsilon against spikes (PNG)."""
    with figure(path, 2, (13, 4.5)) as (_, axes):
        ax = axes[0]
        for name, eigs in report["_spectra"].items():
            cum = (torch.cumsum(eigs, 0) / eigs.sum()).tolist()
            d = report["dimensions"][name]
            ax.semilogx(range(1, len(cum) + 1), cum,
                        label=f"{name}: PCA-95 {d['pca_95']['value']:.0f}, "
                              f"PR {d['participation_ratio']['value']:.1f}")
        for level in LEVELS:
            ax.axhline(level, color="0.8", lw=0.8)
        label(ax, "principal components", "cumulative variance",
              "effective dimension of the features", 7)
        ax = axes[1]
        pts = report["curve"]
        ax.loglog([p["spikes_per_image"] for p in pts], [p["epsilon"] for p in pts], "o")
        for p in pts:
            ax.annotate(f"T={p['T']},G={p['G']}", (p["spikes_per_image"], p["epsilon"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        fit = report.get("fit")
        if fit and fit["C"] > 0:
            k = report["L_f"] ** 2 * report["n"] * report["d"]
            ys = torch.tensor(sorted(p["epsilon"] for p in pts), dtype=torch.float64)
            ax.loglog((fit["C"] * k / ys ** 2).tolist(), ys.tolist(), "k--", lw=0.8,
                      label=f"spikes = C L^2 n d / eps^2, C = {fit['C']:.3g}, R^2 = "
                            f"{fit['r2']:.2f}" if fit["r2"] is not None else "fit")
            ax.legend(fontsize=7)
        label(ax, "spikes per image (emitted)", "epsilon (relative logit error vs full precision)",
              "error against spikes over (T, G)")
