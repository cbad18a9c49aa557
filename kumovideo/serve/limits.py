"""What one request may ask for. The bounds keep a single request from holding the only
worker for minutes or filling memory; each is a `kumo serve` setting with these defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # A create request is a few hundred bytes of JSON, or a phone photo as input_reference
    # (base64 in JSON adds a third); the photo is fitted to the clip's size anyway.
    max_body_bytes: int = 8 << 20
    max_image_pixels: int = 4096 * 4096  # input_reference: refused before it is decoded
    max_prompt_chars: int = 2000
    max_frames: int = 65  # 8 s at 8 fps
    max_side: int = 512  # pixels, each of width and height
    max_steps: int = 100
    max_guidance: float = 30.0
    max_queue: int = 16  # jobs waiting (not counting the one running); more get 429
    max_list: int = 100  # items per page of GET /v1/videos
