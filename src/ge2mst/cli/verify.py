"""``ge2mst verify``: compare a model's ANN and converted SNN outputs on images."""

from __future__ import annotations

import contextlib
import json

from ..analysis.faults import FAULT_NEEDS, FAULTS
from ..analysis.verification import DEFAULT_ORACLE_SAMPLE, REFERENCES
from ..errors import ConfigError
from . import _args
from ._runs import _print_table, prepare_run


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="compare a model's ANN and converted SNN outputs on "
                                             "images")
    _args.add_run_args(p)
    _args.add_choice(p, "--form", help="ExpG-IF firing form: binary search (A) or sequential IF dynamics (B)")
    _args.add_choice(p, "--step-mode", help="event: layer by layer over T steps of spike trains; collapsed: "
                                "synapses summed over time in one pass")
    _args.add_choice(p, "--dtype", help="arithmetic of both modes (float64: the tight check)")
    p.add_argument("--reference", choices=REFERENCES, default="trained",
                   help="ANN to compare with: as trained, or with BatchNorm folded (the "
                        "deployable ANN; bit-identical to --step-mode collapsed in float32)")
    _args.add_choice(p, "--attention-products",
                     help="spiking attention products from the integer codes read from the spike "
                          "trains (codes) or from the spike trains themselves, step pair by step "
                          "pair (spikes: the event-level attention)")
    p.add_argument("--oracle-sample", type=_args._positive_int, default=None,
                   help="neurons per layer and batch that the independent oracle and the form "
                        "cross-check examine (default: 65536; every neuron with --strict)")
    p.add_argument("--inject-fault", default=None, metavar="FAULT", choices=FAULTS,
                   help="break the conversion deliberately in one documented way, to see the "
                        f"checks catch it: {', '.join(FAULTS)} (no-refractoriness with --form "
                        "sequential, ignored-attention-products with --attention-products spikes, "
                        "float32-kernel with --strict; the attention faults need a model with "
                        "attention)")
    p.add_argument("--strict", action="store_true",
                   help="the oracle examines every neuron, the float32 path is checked too "
                        "(folded ANN against collapsed SNN bit for bit, every float32 quantizer "
                        "output against the oracle), and the exit status is 1 unless the run is "
                        "exact (every check listed under exactness_failures passes)")
    _args.add_json(p, help="print one JSON object")
    p.set_defaults(func=run)


def _fault_context(fault: str | None, model):
    """The context that injects ``fault`` into ``model`` (none without a fault)."""
    from ..analysis.faults import inject

    return contextlib.nullcontext() if fault is None else inject(fault, model)


def _check_options(args) -> int | None:
    """The oracle sample of ``args``; `ConfigError` for options that contradict each other."""
    if args.strict and args.oracle_sample is not None:
        raise ConfigError("--strict makes the oracle examine every neuron: drop --oracle-sample")
    fault = args.inject_fault
    for option, value in FAULT_NEEDS.get(fault, {}).items():
        if getattr(args, option) != value:
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"--inject-fault {fault} acts only with "
                              + (flag if value is True else f"{flag} {value}"))
    return None if args.strict else (args.oracle_sample or DEFAULT_ORACLE_SAMPLE)


def run(args) -> int:
    from ..analysis.verification import is_exact, verify

    sample = _check_options(args)
    model, batches, header = prepare_run(args)
    with _fault_context(args.inject_fault, model):
        report = verify(model, batches, step_mode=args.step_mode, form=args.form, dtype=args.dtype,
                        reference=args.reference, attention_products=args.attention_products,
                        oracle_sample=sample, seed=args.seed, progress=not args.json,
                        float32_path=args.strict)
    report = {**header, **report}
    if args.inject_fault is not None:
        report["injected_fault"] = args.inject_fault
    exact = is_exact(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report, exact)
    return 1 if (args.strict and not exact) else 0


def _print_report(report: dict, exact: bool) -> None:
    """The plain report: the scalar figures as a table, then what was compared with what, then
    the verdict with its failures."""
    nested = {k: report.pop(k) for k in ("checks", "exactness_failures") if k in report}
    _print_table({k: v for k, v in report.items() if not isinstance(v, dict) or not v})
    print("\nchecked:")
    for name, what in nested.get("checks", {}).items():
        print(f"  {name:<17} {what}")
    print(f"\nverdict: {'exact' if exact else 'NOT exact'}")
    for line in nested.get("exactness_failures", ()):
        print(f"  - {line}")
