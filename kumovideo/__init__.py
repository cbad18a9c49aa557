"""KumoVideo: text-to-video generation with the MADiT mixed-attention diffusion transformer.

    from kumovideo import KumoPipeline
    pipe = KumoPipeline.from_pretrained("ckpts/")
    video = pipe("a red circle moves left on a black background", num_frames=17).frames[0]
"""

__version__ = "0.1.0"

# Loaded on first use (PEP 562), so `import kumovideo.cli` and `kumo --help` do not pay
# for torch, diffusers and transformers (~4 s on a laptop CPU) before they are needed.
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


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kumovideo' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
