"""Modules that serve both modes, ANN (training) and SNN (after `ge2mst.convert`): weight layers and
their synapses (`layers`), group-wise attention (`attention`) and its spiking form
(`spiking_attention`), and the Ge2mS-T blocks (`blocks`)."""

from .attention import GWSSA, SSA, GroupedAttention, exact_group_attention, group_tokens, ungroup_tokens
from .blocks import SFFN, ConvSFFN, Downsample, Residual, SConv, TokenMixer
from .layers import ConvBN, LinearBN, Synapse, TimeDistributed, fold_batchnorm
from .spiking_attention import SpikingGWSSA, spike_pair_coincidences

__all__ = ["SFFN", "SSA", "ConvBN", "ConvSFFN", "Downsample", "GWSSA", "GroupedAttention",
           "LinearBN", "Residual", "SConv", "SpikingGWSSA", "Synapse", "TimeDistributed",
           "TokenMixer", "exact_group_attention", "fold_batchnorm", "group_tokens",
           "spike_pair_coincidences", "ungroup_tokens"]
