"""Throughput of `kumo data scan` on a generated 480p video, as a multiple of real time.

    python -m kumovideo.data.pipeline.benchmark [--seconds 20] [--fps 30] [--repeat 3]

Writes a synthetic 854x480 H.264 video (camera pans, tilts and zooms over textured images,
joined by hard cuts; no disk or network access needed), then times the full per-video scan
on it -- probe, decode, cut and fade detection, optical flow, camera classification,
overlay detection, quality -- exactly as `kumo data scan` runs it for one file in one
process. Prints seconds per run and the real-time factor (video seconds / wall seconds) of
the best and the median run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from kumovideo.data.pipeline.analyze import analyze_video
from kumovideo.data.pipeline.config import ScanConfig

WIDTH, HEIGHT = 854, 480


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((h, w, 3), np.float32)
    for cell, weight in ((4, 0.4), (24, 0.35), (96, 0.25)):
        small = rng.random((h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        img += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img * rng.uniform(0.4, 1.0, 3) * 255, 0, 255).astype(np.uint8)


def write_benchmark_video(
    path: str | Path, seconds: float = 20.0, fps: int = 30, shot_seconds: float = 4.0, seed: int = 0
) -> Path:
    """A 480p video of camera moves over textures, a hard cut every `shot_seconds`."""
    rng = np.random.default_rng(seed)
    moves = ["pan", "tilt", "zoom", "static"]
    total = int(round(seconds * fps))
    shot = int(round(shot_seconds * fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for t in range(total):
            k, i = divmod(t, shot)
            if i == 0:
                big = _texture(HEIGHT * 2, WIDTH * 2, rng)
                move = moves[k % len(moves)]
            cx, cy, s = WIDTH, HEIGHT, 1.0
            if move == "pan":
                cx += 3.0 * (i - shot / 2)
            elif move == "tilt":
                cy += 2.0 * (i - shot / 2)
            elif move == "zoom":
                s = 1.5 * 0.995**i
            m = np.array([[s, 0, cx - s * WIDTH / 2], [0, s, cy - s * HEIGHT / 2]], np.float32)
            frame = cv2.warpAffine(
                big, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
            )
            for pkt in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return Path(path)


def measure(path: str | Path, repeat: int = 3, cfg: ScanConfig | None = None) -> dict:
    """Time `repeat` scans of `path`; returns seconds per run and real-time factors."""
    runs = []
    record = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        record = analyze_video(path, cfg or ScanConfig())
        runs.append(time.perf_counter() - t0)
    probe = record["probe"]
    video_seconds = probe["decoded_frames"] / probe["fps"]
    return {
        "video_seconds": video_seconds,
        "runs": runs,
        "best_x_realtime": video_seconds / min(runs),
        "median_x_realtime": video_seconds / statistics.median(runs),
        "clips": len(record["clips"]),
        "transitions": len(record["transitions"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_benchmark_video(Path(tmp) / "bench480.mp4", args.seconds, args.fps)
        res = measure(path, args.repeat)
    print(
        f"video: {WIDTH}x{HEIGHT}, {args.fps} fps, {res['video_seconds']:.1f} s, H.264; "
        f"found {res['transitions']} transitions, {res['clips']} clips"
    )
    print("runs (s): " + ", ".join(f"{r:.2f}" for r in res["runs"]))
    print(
        f"scan throughput: best {res['best_x_realtime']:.1f}x real time, "
        f"median {res['median_x_realtime']:.1f}x real time"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
