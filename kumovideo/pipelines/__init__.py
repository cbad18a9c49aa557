from .loading import load_pipeline_components, load_vae
from .pipeline_kumo import KumoPipeline, KumoPipelineOutput, frames_to_uint8

__all__ = ["KumoPipeline", "KumoPipelineOutput", "frames_to_uint8", "load_pipeline_components", "load_vae"]
