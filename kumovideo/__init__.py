"""KumoVideo: text-to-video generation with the MADiT mixed-attention diffusion transformer.

from kumovideo import KumoPipeline
pipe = KumoPipeline.from_pretrained("ckpts/")
video = pipe("a red circle moves left on a black background", num_frames=17).frames[0]
"""

__version__ = "0.1.0"

from kumovideo.utils.lazy import lazy_exports

# Loaded on first use, so `import kumovideo.cli` and `kumo --help` do not pay for torch,
# diffusers and transformers (~4 s on a laptop CPU) before they are needed.
_EXPORTS = {
    "AutoencoderKLCogVideoX": "diffusers",
    "KumoDDIMScheduler": "kumovideo.schedulers",
    "KumoLCMScheduler": "kumovideo.schedulers",
    "KumoPipeline": "kumovideo.pipelines",
    "KumoPipelineOutput": "kumovideo.pipelines",
    "KumoTransformer3DModel": "kumovideo.models",
    "madit_from_preset": "kumovideo.models",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
