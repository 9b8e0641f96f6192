"""The two on-disk formats: trained checkpoints (`checkpoint`: safetensors + JSON config) and
converted spiking networks (`spiking`)."""

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .spiking import convert_checkpoint, is_spiking_file, load_spiking, save_spiking

__all__ = ["convert_checkpoint", "is_spiking_file", "load_checkpoint", "load_spiking",
           "read_checkpoint", "save_checkpoint", "save_spiking"]
