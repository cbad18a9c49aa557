"""What one request may ask for. The bounds keep a single request from holding the only
worker for minutes or filling memory; each is a `kumo serve` setting with these defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20  # a create request is a few hundred bytes of JSON
    max_prompt_chars: int = 2000
    max_frames: int = 65  # 8 s at 8 fps
    max_side: int = 512  # pixels, each of width and height
    max_steps: int = 100
    max_guidance: float = 30.0
    max_queue: int = 16  # jobs waiting (not counting the one running); more get 429
    max_list: int = 100  # items per page of GET /v1/videos
