"""The README's demo GIF: a few prompts through the built-in model, side by side.

.venv/bin/python scripts/demo_gif.py docs/assets/builtin-demo.gif
"""

import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

from kumovideo.builtin import builtin_model_dir
from kumovideo.pipelines import KumoPipeline, frames_to_uint8
from kumovideo.utils.video_io import write_video

PROMPTS = [
    "a red circle moves left on a black background",
    "a large yellow triangle grows on a navy background",
    "a blue square moves down on a gray background",
    "a white square stays still and a green circle moves right on a forest background",
]


def main(out: str, tile: int = 256) -> None:
    pipe = KumoPipeline.from_pretrained(builtin_model_dir(), torch_dtype=torch.float32)
    videos = pipe(  # at the model's own clip size and sampling defaults
        PROMPTS,
        generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))],
        output_type="pt",
    ).frames
    tiles = []
    for prompt, video in zip(PROMPTS, videos):
        frames = frames_to_uint8(video)
        scale = max(1, tile // frames.shape[2])
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)  # (F, tile, tile, 3)
        label = Image.new("RGB", (frames.shape[2], 40), "white")
        draw = ImageDraw.Draw(label)
        words, line, lines = prompt.split(), "", []
        for word in words:  # wrap the caption to the tile width
            if len(line) + len(word) > frames.shape[2] // 6.5:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        draw.multiline_text((4, 2), "\n".join(lines[:3]), fill="black", spacing=1)
        label = np.asarray(label)[None].repeat(len(frames), axis=0)
        tiles.append(np.concatenate([frames, label], axis=1))
    gap = np.full((tiles[0].shape[0], tiles[0].shape[1], 4, 3), 255, np.uint8)
    grid = np.concatenate(sum([[t, gap] for t in tiles], [])[:-1], axis=2)
    write_video(grid, out, fps=8)
    print(f"wrote {out} ({grid.shape[2]}x{grid.shape[1]}, {len(grid)} frames)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/assets/builtin-demo.gif")
