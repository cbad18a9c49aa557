"""Synthetic test videos with known ground truth for the data-pipeline tests.

Every clip is rendered from a textured still image seen through a virtual camera, so the
truth is known exactly:

* camera movement: the camera window slides (pan / tilt) or scales (zoom) over the image at a
  known speed, or stays put (``static``); a ``static`` clip can carry a moving subject (a
  textured disc), and a ``frozen`` clip repeats one frame;
* transitions: clips are joined by hard cuts or by fades through black, and the frame index
  where the next scene starts is recorded;
* overlays: a semi-transparent logo burned into a corner, or subtitles in a bottom band that
  change every ``subtitle_every`` frames.

Camera names follow film convention and describe what the *camera* does: ``pan_left`` turns
the camera to the left, so the scene slides to the right across the frame; ``tilt_up`` turns
it up, so the scene slides down; ``zoom_in`` magnifies the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

CAMERA_KINDS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")


@dataclass
class ClipSpec:
    """One synthetic shot."""

    camera: str = "static"  # one of CAMERA_KINDS, or "frozen" (one repeated frame)
    frames: int = 36
    seed: int = 0
    speed: float = 2.0  # pan/tilt: pixels per frame; zoom: relative scale change per frame x100
    subject: bool = False  # a textured disc moving across a static-camera shot
    overlay: str | None = None  # None, "logo" or "subtitle"
    corner: int = 0  # logo corner: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    subtitle_every: int = 36  # frames between subtitle changes
    noise: float = 0.0  # per-frame Gaussian sensor noise (grey levels)


@dataclass
class Truth:
    """Where each scene starts and ends in the joined video, plus each clip's spec."""

    boundaries: list[int] = field(default_factory=list)  # first frame of each new scene
    clips: list[tuple[int, int, ClipSpec]] = field(default_factory=list)  # [start, end) frames
    overlay_boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    num_frames: int = 0


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A colourful image with structure at several scales (so optical flow has texture)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((3, 0.35), (12, 0.35), (48, 0.3)):
        small = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        img += weight * cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    tint = rng.uniform(0.35, 1.0, size=3).astype(np.float32)  # per-scene palette
    img = np.clip(img * tint * 255.0, 0, 255).astype(np.uint8)
    for _ in range(max(8, height * width // 1500)):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(3, max(4, min(height, width) // 10)))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), size, colour, -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x, y), (x + size, y + size // 2 + 1), colour, -1)
    return img


def _camera_frame(big: np.ndarray, w: int, h: int, cx: float, cy: float, scale: float) -> np.ndarray:
    """The view of `big` through a window centred at (cx, cy), `scale` big-pixels per pixel."""
    m = np.array([[scale, 0, cx - scale * w / 2], [0, scale, cy - scale * h / 2]], np.float32)
    return cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def logo_box(w: int, h: int, corner: int) -> tuple[int, int, int, int]:
    """The logo's box (x0, y0, x1, y1) for a frame size and corner."""
    bw, bh = max(24, w // 4), max(10, h // 8)
    margin = max(3, w // 40)
    x0 = margin if corner in (0, 2) else w - margin - bw
    y0 = margin if corner in (0, 1) else h - margin - bh
    return x0, y0, x0 + bw, y0 + bh


def subtitle_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The band subtitles are drawn in (x0, y0, x1, y1)."""
    return w // 8, h - h // 6 - 2, w - w // 8, h - 2


_WORDS = [
    "hello there",
    "the quick fox",
    "jumps over",
    "a lazy dog",
    "see you soon",
    "what a view",
    "look at that",
    "over here",
    "not again",
    "let us go",
]


def _draw_logo(frame: np.ndarray, corner: int) -> None:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = logo_box(w, h, corner)
    layer = frame.copy()
    cv2.rectangle(layer, (x0, y0), (x1 - 1, y1 - 1), (245, 245, 245), 1)
    (tw, _), _ = cv2.getTextSize("KUMO", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2)
    scale = min((y1 - y0) / 28.0, (x1 - x0 - 6) / tw)
    cv2.putText(
        layer,
        "KUMO",
        (x0 + 3, y1 - 3),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, int(round(scale * 2))),
        cv2.LINE_AA,
    )
    # Semi-transparent, as broadcasters' watermarks usually are.
    frame[y0:y1, x0:x1] = cv2.addWeighted(layer[y0:y1, x0:x1], 0.75, frame[y0:y1, x0:x1], 0.25, 0)


def _draw_subtitle(frame: np.ndarray, text: str) -> None:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = subtitle_box(w, h)
    scale = (y1 - y0) / 30.0
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = ((w - tw) // 2, y1 - (y1 - y0 - th) // 2 - 1)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def render_clip(spec: ClipSpec, width: int, height: int) -> list[np.ndarray]:
    """Render one shot as a list of BGR uint8 frames."""
    rng = np.random.default_rng(spec.seed + 1000)
    big = textured_image(height * 3, width * 3, spec.seed)
    cx, cy, scale = 1.5 * width, 1.5 * height, 1.0
    n = spec.frames
    # Start positions chosen so the window stays inside the big image for the whole shot.
    travel = spec.speed * n
    if spec.camera == "pan_right":
        cx -= travel / 2
    elif spec.camera == "pan_left":
        cx += travel / 2
    elif spec.camera == "tilt_down":
        cy -= travel / 2
    elif spec.camera == "tilt_up":
        cy += travel / 2
    rate = 1.0 + spec.speed / 100.0
    if spec.camera == "zoom_in":
        scale = 1.6
    elif spec.camera == "zoom_out":
        scale = 1.6 / rate**n
    disc = textured_image(height // 3, height // 3, spec.seed + 7)
    radius = height // 7
    frames = []
    for t in range(n):
        if spec.camera == "frozen" and frames:
            frames.append(frames[0].copy())
            continue
        frame = _camera_frame(big, width, height, cx, cy, scale)
        if spec.subject:
            px = int(width * 0.15 + (width * 0.7) * t / max(1, n - 1))
            py = int(height * 0.45 + height * 0.15 * np.sin(t / 6.0))
            mask = np.zeros((height, width), np.uint8)
            cv2.circle(mask, (px, py), radius, 255, -1)
            patch = cv2.resize(disc, (width, height))
            frame[mask > 0] = patch[mask > 0]
        if spec.noise > 0:
            noisy = frame.astype(np.float32) + rng.normal(0, spec.noise, frame.shape)
            frame = np.clip(noisy, 0, 255).astype(np.uint8)
        if spec.overlay == "logo":
            _draw_logo(frame, spec.corner)
        elif spec.overlay == "subtitle":
            _draw_subtitle(frame, _WORDS[(spec.seed + t // spec.subtitle_every) % len(_WORDS)])
        frames.append(frame)
        # Advance the camera.
        if spec.camera == "pan_right":
            cx += spec.speed
        elif spec.camera == "pan_left":
            cx -= spec.speed
        elif spec.camera == "tilt_down":
            cy += spec.speed
        elif spec.camera == "tilt_up":
            cy -= spec.speed
        elif spec.camera == "zoom_in":
            scale /= rate
        elif spec.camera == "zoom_out":
            scale *= rate
    return frames


def render_dark_clip(frames: int, width: int, height: int, subject: bool = True) -> list[np.ndarray]:
    """A small red disc crossing a black background left to right (BGR uint8 frames).

    Like ShapesWorld's "a red circle moves left on a black background", every frame's mean
    level (about 3) is under the default `fade_threshold` of 12, yet it is content, not a
    fade. With ``subject=False`` the frames are plain black.
    """
    radius = max(2, height // 10)
    out = []
    for t in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        if subject:
            x = int(width * 0.15 + width * 0.7 * t / max(1, frames - 1))
            cv2.circle(frame, (x, height // 2), radius, (40, 40, 230), -1, lineType=cv2.LINE_AA)
        out.append(frame)
    return out


def fade(frames: list[np.ndarray], n: int, out: bool) -> list[np.ndarray]:
    """Fade the last (out=True) or first n frames to or from black."""
    frames = [f.copy() for f in frames]
    for i in range(n):
        if out:
            idx, level = len(frames) - n + i, 1.0 - (i + 1) / n
        else:
            idx, level = i, (i + 1) / (n + 1)
        frames[idx] = (frames[idx].astype(np.float32) * level).astype(np.uint8)
    return frames


def write_video(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 24,
    gop: int = 48,
    crf: int = 18,
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """Encode BGR frames to an H.264 (yuv420p) file with PyAV."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def build_video(
    path: Path,
    specs: list[ClipSpec],
    transitions: list[str],
    width: int = 160,
    height: int = 120,
    fps: int = 24,
    fade_len: int = 8,
    **write_kw,
) -> Truth:
    """Render clips joined by `transitions` ("cut" or "fade", one fewer than clips) and write them.

    A fade is a fade-out of ``fade_len`` frames at the end of the first shot followed by a
    fade-in of ``fade_len`` frames at the start of the next; the recorded boundary is the
    first frame of the fade-in (the darkest point lies between the two).
    """
    assert len(transitions) == len(specs) - 1
    truth = Truth()
    all_frames: list[np.ndarray] = []
    rendered = [render_clip(s, width, height) for s in specs]
    for i, (spec, frames) in enumerate(zip(specs, rendered)):
        if i > 0 and transitions[i - 1] == "fade":
            frames = fade(frames, fade_len, out=False)
        if i < len(specs) - 1 and transitions[i] == "fade":
            frames = fade(frames, fade_len, out=True)
        start = len(all_frames)
        if i > 0:
            truth.boundaries.append(start)
        all_frames.extend(frames)
        truth.clips.append((start, len(all_frames), spec))
        if spec.overlay == "logo":
            truth.overlay_boxes.append(logo_box(width, height, spec.corner))
        elif spec.overlay == "subtitle":
            truth.overlay_boxes.append(subtitle_box(width, height))
        else:
            truth.overlay_boxes.append(None)
    truth.num_frames = len(all_frames)
    write_video(path, all_frames, fps=fps, **write_kw)
    return truth


def write_bad_inputs(folder: Path, good_video: Path) -> dict[str, str]:
    """Write the four kinds of broken input; returns {file name: what is wrong with it}."""
    folder = Path(folder)
    (folder / "empty.mp4").write_bytes(b"")
    data = Path(good_video).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 2 // 5])
    (folder / "notavideo.mp4").write_bytes(b"This is a shopping list, not a video.\n" * 50)
    # AVI keeps a video stream header with zero frames (MP4 drops an empty track entirely).
    with av.open(str(folder / "noframes.avi"), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()
    return {
        "empty.mp4": "empty",
        "truncated.mp4": "truncated",
        "notavideo.mp4": "not a video",
        "noframes.avi": "no frames",
    }


def benchmark_specs(seed: int, clips: int = 12) -> tuple[list[ClipSpec], list[str], int]:
    """A random but reproducible mix of shots for one benchmark video.

    Every camera class and frozen shots appear in turn; speeds span slow to fast; a quarter
    of the shots carry a moving subject, some sensor noise; moving shots get a logo or
    subtitles about a third of the time. Returns (specs, transitions, fade length).
    """
    rng = np.random.default_rng(seed)
    kinds = list(CAMERA_KINDS) + ["frozen"]
    specs = []
    for j in range(clips):
        kind = kinds[(seed * clips + j) % len(kinds)]
        if kind.startswith("zoom"):
            speed = float(rng.choice([0.5, 1.0, 2.0]))
        else:
            speed = float(rng.choice([0.7, 1.5, 3.0, 6.0]))
        subject = bool(rng.random() < (0.5 if kind == "static" else 0.25))
        overlay = None
        if kind not in ("static", "frozen") and rng.random() < 0.6:
            overlay = "subtitle" if rng.random() < 0.3 else "logo"
        frames = 90 if overlay == "subtitle" else int(rng.integers(42, 57))
        specs.append(
            ClipSpec(
                camera=kind,
                frames=frames,
                seed=seed * 100 + j,
                speed=speed,
                subject=subject,
                overlay=overlay,
                corner=int(rng.integers(0, 4)),
                noise=float(rng.choice([0.0, 2.0])),
            )
        )
    transitions = [str(rng.choice(["cut", "fade"])) for _ in range(clips - 1)]
    fade_len = int(rng.choice([4, 6, 8]))
    return specs, transitions, fade_len


def build_benchmark_set(folder: Path, videos: int = 4, clips: int = 12) -> list[tuple[Path, Truth]]:
    """Write `videos` benchmark videos into `folder`; returns [(path, truth)]."""
    out = []
    for v in range(videos):
        specs, transitions, fade_len = benchmark_specs(v, clips)
        path = Path(folder) / f"bench_{v}.mp4"
        out.append((path, build_video(path, specs, transitions, fade_len=fade_len)))
    return out


def match_clips(truth: Truth, clips: list[dict]) -> list[tuple[ClipSpec, int, dict | None]]:
    """Pair each true clip with the detected clip overlapping it most (None if none)."""
    pairs = []
    for k, (start, end, spec) in enumerate(truth.clips):
        best, best_overlap = None, 0
        for c in clips:
            overlap = min(end, c["end_frame"]) - max(start, c["start_frame"])
            if overlap > best_overlap:
                best, best_overlap = c, overlap
        pairs.append((spec, k, best if best_overlap >= 0.5 * (end - start) else None))
    return pairs


def boundary_f1(predicted: list[int], truth: list[int], tolerance: int = 2) -> tuple[float, float, float]:
    """(precision, recall, F1) of predicted boundaries, each truth matched at most once."""
    used: set[int] = set()
    hits = 0
    for t in truth:
        match = next(
            (p for p in sorted(predicted, key=lambda p: abs(p - t)) if abs(p - t) <= tolerance and p not in used), None
        )
        if match is not None:
            used.add(match)
            hits += 1
    precision = hits / len(predicted) if predicted else 0.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def box_hit(found: list[int], true: tuple[int, int, int, int]) -> bool:
    """A reported box is a hit when most of it lies on the true overlay (or IoU >= 0.3)."""
    x0, y0 = max(found[0], true[0]), max(found[1], true[1])
    x1, y1 = min(found[2], true[2]), min(found[3], true[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area_f = (found[2] - found[0]) * (found[3] - found[1])
    area_t = (true[2] - true[0]) * (true[3] - true[1])
    return inter >= 0.5 * area_f or inter >= 0.3 * (area_f + area_t - inter)


def evaluate(folder: Path, videos: int = 4, first_seed: int = 0) -> dict:
    """Build benchmark videos with seeds first_seed.. and measure every accuracy target."""
    from kumovideo.data.pipeline.analyze import analyze_video

    predicted, true, offset = [], [], 0
    camera_right = camera_total = hits = with_overlay = alarms = without = 0
    static, moving = [], []
    for v in range(first_seed, first_seed + videos):
        specs, transitions, fade_len = benchmark_specs(v)
        path = Path(folder) / f"bench_{v}.mp4"
        truth = build_video(path, specs, transitions, fade_len=fade_len)
        record = analyze_video(path)
        predicted += [t["frame"] + offset for t in record["transitions"]]
        true += [b + offset for b in truth.boundaries]
        offset += truth.num_frames + 100
        for spec, k, clip in match_clips(truth, record["clips"]):
            camera_total += 1
            label = "static" if spec.camera == "frozen" else spec.camera
            camera_right += clip is not None and clip["camera"]["label"] == label
            if spec.overlay:
                with_overlay += 1
                hits += clip is not None and any(
                    box_hit(it["box"], truth.overlay_boxes[k]) for it in clip["overlays"]["items"]
                )
            elif clip is not None:
                without += 1
                alarms += clip["overlays"]["detected"]
            if clip is not None:
                still = spec.camera == "frozen" or (spec.camera == "static" and not spec.subject)
                (static if still else moving).append(clip["motion"]["score"])
    p, r, f1 = boundary_f1(predicted, true)
    pairs = [(s, m) for s in static for m in moving]
    return {
        "boundaries": len(true),
        "cut_precision": p,
        "cut_recall": r,
        "cut_f1": f1,
        "clips": camera_total,
        "camera_accuracy": camera_right / camera_total,
        "overlay_clips": with_overlay,
        "overlay_detection": hits / max(1, with_overlay),
        "clean_clips": without,
        "overlay_false_alarms": alarms / max(1, without),
        "static_below_moving": sum(s < m for s, m in pairs) / max(1, len(pairs)),
        "pairs": len(pairs),
    }


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Measure the data pipeline's accuracy targets on generated videos.")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = evaluate(Path(tmp), args.videos, args.first_seed)
    print(
        f"cut detection: F1 {res['cut_f1']:.3f} (precision {res['cut_precision']:.3f}, recall "
        f"{res['cut_recall']:.3f}) over {res['boundaries']} boundaries, +-2 frames"
    )
    print(f"camera movement: accuracy {res['camera_accuracy']:.3f} over {res['clips']} clips")
    print(
        f"overlays: detected in {res['overlay_detection']:.3f} of {res['overlay_clips']} clips "
        f"with one; false alarms {res['overlay_false_alarms']:.3f} of {res['clean_clips']} without"
    )
    print(f"dynamic score: static below moving in {res['static_below_moving']:.3f} of {res['pairs']} pairs")


def tiny_vae():
    """A random-weight CogVideoX VAE of the published layout (8x spatial, 4x temporal, 4 latent
    channels) at the smallest widths, seeded: what the data and cache tests encode with."""
    import torch
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
    ).eval()
