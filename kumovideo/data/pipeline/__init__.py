"""The `kumo data` pipeline: a folder of raw videos -> a filtered, captioned, latent-cached
training set.

Stages (one module each):

* `probe` -- container facts; unusable files become `BadVideo` with a reason.
* `scenes` -- hard cuts and fades (PySceneDetect + frame-difference checks).
* `overlays` -- static logos/watermarks and subtitle bands.
* `quality` -- sharpness, exposure, colourfulness, blockiness, noise, one score.
* `motion` -- dense optical flow: dynamic score, subject vs background.
* `camera` -- static / pan / tilt / zoom with speed, from the global flow.
* `captions` -- sidecar captions, a `Captioner` hook, attribute captions.
* `analyze` -- one decode pass per video running all of the above.
* `scan`, `filter`, `cut`, `encode` -- the four `kumo data` commands.
* `runner` -- local worker processes or a Ray Data pipeline.
* `manifest` -- durable JSON Lines and atomic writes.

See docs/data-pipeline.md.
"""

from __future__ import annotations

from kumovideo.utils.lazy import lazy_exports

# Lazy, so `import kumovideo.data.pipeline` does not pull in torch or OpenCV: each public
# name, by the stage module that defines it.
_BY_MODULE = {
    "analyze": ["analyze_video"],
    "probe": ["BadVideo", "probe"],
    "config": ["DataConfig", "load_config"],
    "captions": ["Captioner"],
    "encode": ["LatentShardDataset"],
}
_EXPORTS = {name: f"{__name__}.{module}" for module, names in _BY_MODULE.items() for name in names}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
