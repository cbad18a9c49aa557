"""`kumo data scan`: every video under a folder -> one manifest record per video.

Unusable files (empty, truncated, not a video, no frames) become error records with the
reason; they never stop the run. Re-running on the same manifest resumes: paths that already
have a record are skipped (error records too, unless `retry_errors`).
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumovideo.data.pipeline.analyze import analyze_video, drop_kind, video_key
from kumovideo.data.pipeline.captions import load_captioner
from kumovideo.data.pipeline.config import ScanConfig
from kumovideo.data.pipeline.manifest import SCAN_MANIFEST, ManifestAppender, latest_by_path, read_manifest
from kumovideo.data.pipeline.probe import BadVideo
from kumovideo.data.pipeline.runner import run_tasks
from kumovideo.utils.errors import KumoInputError

_CAPTIONERS: dict[str, Any] = {}  # one captioner per process, loaded on first use

log = logging.getLogger(__name__)


def _captioner(spec: str):
    """The captioner `spec` names, built once per process."""
    if spec not in _CAPTIONERS:
        _CAPTIONERS[spec] = load_captioner(spec)
    return _CAPTIONERS[spec]


def find_videos(root: str | Path, extensions: list[str]) -> list[Path]:
    """Video files under `root` (recursively, sorted, hidden folders skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise KumoInputError(
            f"input folder {root} does not exist or is not a folder; pass the folder that holds your videos"
        )
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found: dict[Path, None] = {}  # ordered, and a file reached twice (through a symlink) is scanned once
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or path.suffix.lower() not in exts:
            continue
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_symlink() and not path.exists():
            found[path.absolute()] = None  # a broken link: recorded as a failure, not passed over in silence
    if not found:
        raise KumoInputError(
            f"no video files under {root} (looked for {', '.join(sorted(exts))}); "
            "pass the folder that holds your videos or set scan.extensions"
        )
    return list(found)


def scan_one(path: str, cfg: ScanConfig, decoder_threads: int = 0) -> dict[str, Any]:
    """Analyse one file; any failure becomes an error record (the run goes on)."""
    t0 = time.perf_counter()
    try:
        captioner = _captioner(cfg.captioner) if cfg.captioner else None
        return analyze_video(path, cfg, captioner, decoder_threads)
    except BadVideo as exc:
        reason = str(exc)
    except MemoryError:
        reason = "out of memory while analysing"
    except Exception as exc:  # a bug or an exotic file must not end a long run
        reason = " ".join(f"unexpected {type(exc).__name__}: {exc}".split())  # one line (OpenCV's span several)
        tb = traceback.format_exc(limit=3)
        return {
            "path": str(path),
            "key": video_key(path),
            "status": "error",
            "error": reason,
            "traceback": tb,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    return {
        "path": str(path),
        "key": video_key(path),
        "status": "error",
        "error": reason,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _crash_record(path: str, reason: str) -> dict[str, Any]:
    """The error record of a file whose worker process died on it."""
    return {"path": str(path), "key": video_key(path), "status": "error", "error": reason, "seconds": 0.0}


@dataclass
class ScanSummary:
    found: int = 0
    skipped: int = 0  # already in the manifest (resume)
    ok: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    dropped: Counter = field(default_factory=Counter)  # stretches left out, per kind
    # Readable videos that gave no clip, with the reasons their record lists.
    no_clip: list[tuple[str, str]] = field(default_factory=list)
    video_seconds: float = 0.0
    wall_seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.video_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        done = self.ok + len(self.errors)
        clips = f"{self.clips} clips"
        if self.no_clip:
            clips += f" ({len(self.no_clip)} ok files gave none)"
        dropped = sum(self.dropped.values())
        clips += f", {dropped} stretches dropped"
        if dropped:
            clips += " (" + ", ".join(f"{v} {k}" for k, v in self.dropped.most_common()) + ")"
        out = [
            f"scanned {done} of {self.found} files ({self.skipped} already in the manifest): "
            f"{self.ok} ok, {len(self.errors)} failed; {clips}; "
            f"{self.video_seconds:.1f} s of video in {self.wall_seconds:.1f} s "
            f"({rate:.1f}x real time, {done / max(self.wall_seconds, 1e-9):.2f} files/s)"
        ]
        for path, reason in self.errors:
            out.append(f"  failed: {path}: {reason}")
        for path, reason in self.no_clip:
            out.append(f"  no clip: {path}: {reason}")
        return out


def scan_folder(
    in_dir: str | Path,
    manifest: str | Path,
    cfg: ScanConfig,
    workers: int = 1,
    ray_address: str | None = None,
    retry_errors: bool = False,
    quiet: bool = False,
) -> ScanSummary:
    """Scan `in_dir` into `manifest` (appending; resumes a previous run).

    Everything is checked before the first video is analysed: the folder, an existing
    manifest (it must be a scan manifest, since it is appended to) and the captioner. Then
    the manifest's folder is created if missing.
    """
    manifest = Path(manifest)
    videos = find_videos(in_dir, cfg.extensions)
    done = latest_by_path(read_manifest(manifest, SCAN_MANIFEST, resuming=True) if manifest.exists() else [])
    if cfg.captioner:
        # A captioner that cannot be built is a configuration mistake: report it once, here,
        # not as an error record on every file. Runs in this process reuse this instance.
        _captioner(cfg.captioner)
    todo = [str(p) for p in videos if str(p) not in done or (retry_errors and done[str(p)].get("status") != "ok")]
    summary = ScanSummary(found=len(videos), skipped=len(videos) - len(todo))
    # With several workers each decoder gets one thread; alone it may use them all.
    threads = 1 if (workers > 1 or ray_address) else 0
    task = functools.partial(scan_one, cfg=cfg, decoder_threads=threads)
    t0 = time.perf_counter()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with ManifestAppender(manifest) as out:
        records = run_tasks(
            task, todo, workers=workers, ray_address=ray_address, desc="scan", quiet=quiet, on_crash=_crash_record
        )
        for record in records:
            out.append(record)
            for line in record.get("warnings", []):
                log.warning(line)
            if record["status"] == "ok":
                summary.ok += 1
                summary.clips += len(record["clips"])
                summary.dropped.update(drop_kind(d["reason"]) for d in record["dropped"])
                if not record["clips"]:
                    reasons = dict.fromkeys(d["reason"] for d in record["dropped"])
                    summary.no_clip.append((record["path"], "; ".join(reasons)))
                probe = record["probe"]
                if probe.get("fps"):
                    summary.video_seconds += probe["decoded_frames"] / probe["fps"]
            else:
                summary.errors.append((record["path"], record["error"]))
    summary.wall_seconds = time.perf_counter() - t0
    return summary
