"""KumoVideo: text-to-video generation with the MADiT mixed-attention diffusion transformer.

    from kumovideo import KumoPipeline
    pipe = KumoPipeline.from_pretrained("ckpts/")
    video = pipe("a red circle moves left on a black background", num_frames=17).frames[0]
"""

__version__ = "0.1.0"

from diffusers import AutoencoderKLCogVideoX

from kumovideo.models import KumoTransformer3DModel, madit_from_preset
from kumovideo.pipelines import KumoPipeline, KumoPipelineOutput
from kumovideo.schedulers import KumoDDIMScheduler, KumoLCMScheduler

__all__ = [
    "AutoencoderKLCogVideoX",
    "KumoDDIMScheduler",
    "KumoLCMScheduler",
    "KumoPipeline",
    "KumoPipelineOutput",
    "KumoTransformer3DModel",
    "madit_from_preset",
]
