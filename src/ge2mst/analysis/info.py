"""Static facts about a model: parameters, MACs, the SOPs upper bound, tokens and groups per stage."""

from __future__ import annotations

import torch
from torch import nn

from ..conversion.converter import convert
from ..conversion.kinds import is_stbp, one_or_list
from ..core.quantizers import ExpGQuant, quantizers
from ..nn.attention import GroupedAttention
from .energy import count_operations
from .energy_stbp import count_stbp_operations


@torch.no_grad()
def model_info(model: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    """Facts about ``model`` for one input of ``input_shape`` (C, H, W).

    ``macs``: ANN-mode multiply-accumulates of one image (weight layers and attention products).
    ``sops_upper_bound``: synaptic operations if every neuron fired its cap (G spikes), attention
    spike-pair coincidences included; it depends on the architecture only. An STBP baseline (its
    own spiking network) is counted as it runs on one random image.
    """
    model = model.eval()
    expg = [q for _, q in quantizers(model) if isinstance(q, ExpGQuant)]
    stages = []
    hooks = []

    def record(name):
        def fn(module, args, output):
            _, _, H, W = args[0].shape
            k = module.groups_per_side(H, W)
            stages.append({"module": name, "type": type(module).__name__, "tokens": H * W,
                           "map": [H, W], "groups": k * k, "tokens_per_group": H * W // (k * k),
                           "heads": module.heads, "global_heads": module.global_heads})
        return fn

    for name, m in model.named_modules():
        if isinstance(m, GroupedAttention):
            hooks.append(m.register_forward_hook(record(name)))
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    if is_stbp(model):  # its own spiking network: counted as it runs, nothing to convert
        ops = count_stbp_operations(model, [x])
        steps, groups = model.T, None
    else:
        ops = count_operations(convert(model), [x])
        steps = one_or_list(q.T for q in expg) if expg else []
        groups = one_or_list(q.G for q in expg) if expg else []
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "input": list(input_shape),
        "T": steps,
        "G": groups,
        "macs": ops["ann_macs"],
        "sops_upper_bound": ops["sops_upper_bound"],
        "attention": stages,
        "per_layer": [{k: r[k] for k in ("name", "input", "ann_macs", "sops_upper_bound")}
                      for r in ops["per_layer"]],
    }


def describe_model(name: str, img_size: int | None = None, in_chans: int = 3,
                   num_classes: int | None = None, T: int | None = None,
                   G: int | None = None) -> dict:
    """`model_info` of the registered model ``name``, built for ``in_chans`` x ``img_size`` x
    ``img_size`` images (default side: the model's, else 32) in ``num_classes`` classes (default:
    the model's own), with ``T`` and ``G`` (default: the builder's); ``{"model": name, ...}``."""
    from ..models import create_model, model_kwargs_for, model_spec

    size = img_size or model_spec(name).img_size or 32
    kwargs = model_kwargs_for(name, num_classes=num_classes or 10, in_chans=in_chans,
                              img_size=size, T=T, G=G)
    if num_classes is None:
        kwargs.pop("num_classes")  # the model's own default
    model = create_model(name, **kwargs)
    return {"model": name, **model_info(model, (in_chans, size, size))}


def format_info(info: dict) -> str:
    """The lines ``ge2mst info`` prints for ``info`` (`describe_model`)."""
    _, height, width = info["input"]
    lines = [f"{info['model']}: {info['params']:,} parameters, input {height}x{width}, "
             f"T={info['T']}, G={info['G']}",
             f"  ANN MACs per image          {info['macs']:,.0f}",
             f"  SOPs upper bound per image  {info['sops_upper_bound']:,.0f}"]
    for a in info["attention"]:
        lines.append(f"  {a['module']:<28} {a['type']:<6} {a['map'][0]}x{a['map'][1]} tokens, "
                     f"{a['groups']} group{'s' if a['groups'] != 1 else ''} of {a['tokens_per_group']}, "
                     f"{a['heads']} heads "
                     f"({a['global_heads']} global)")
    return "\n".join(lines)
