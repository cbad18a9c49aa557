from diffusers import AutoencoderKLCogVideoX

from .transformer_kumo import MADIT_PRESETS, KumoTransformer3DModel, MADiTBlock, count_parameters, madit_from_preset

__all__ = [
    "AutoencoderKLCogVideoX",
    "KumoTransformer3DModel",
    "MADiTBlock",
    "MADIT_PRESETS",
    "madit_from_preset",
    "count_parameters",
]
