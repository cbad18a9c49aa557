"""`kumo data`: raw videos -> filtered, captioned, latent-cached training set.

    kumo data scan   IN_DIR -o manifest.jsonl [--workers N | --ray ADDRESS]
    kumo data filter manifest.jsonl -o clips.jsonl [--rejected rejected.jsonl]
    kumo data cut    clips.jsonl -o clips/ [--fps 24 --size 640x360] [--workers N | --ray ADDRESS]
    kumo data encode clips/ --vae ckpts/vae -o latents/ [--size 640x360 | --aspect-buckets [AREA]]

Every sub-command takes `--config configs/data_filter.yaml` (thresholds and settings; see
docs/data-pipeline.md). Files that cannot be used are reported in the summary and never stop
a run. Exit status: 0 when the run finished (failed files or clips are listed, with a last
line counting them), 2 when the command itself was used wrongly (checked before any work).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from pathlib import Path

from kumovideo.cli.args import resolve_device
from kumovideo.data.pipeline.config import ASPECT_BUCKET_AREA, RANGES
from kumovideo.geometry import DEFAULT_GEOMETRY
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.extras import require
from kumovideo.utils.numbers import FPS_MAX, WORKERS_MAX, check_real, check_whole
from kumovideo.utils.paths import check_not_overwriting, check_output_folder

log = logging.getLogger(__name__)

# The optional modules each sub-command needs, checked before anything else (the
# `data` extra: OpenCV decodes and resizes, PySceneDetect finds the cuts).
NEEDS = {"scan": ("cv2", "scenedetect"), "filter": (), "cut": ("cv2",), "encode": ("cv2",)}


def register(sub) -> None:
    """Add the `data` command and its sub-commands to the `kumo` parser."""
    parser = sub.add_parser(
        "data",
        help="build a training set from a folder of videos (scan, filter, cut, encode)",
        description="Data pipeline: scan videos (cuts, overlays, quality, motion, camera, "
        "captions), filter clips, cut them to files, pre-extract VAE latents.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    def action(func, help, source, output):
        """One sub-command: `func`'s name less "run_", described by `func`'s docstring, with its
        SOURCE (dest, METAVAR[, help]) and -o OUTPUT (METAVAR[, help]); the caller adds its own
        flags, then `common`'s."""
        p = actions.add_parser(func.__name__.removeprefix("run_"), help=help, description=func.__doc__)
        p.add_argument(source[0], type=Path, metavar=source[1], **({"help": source[2]} if len(source) > 2 else {}))
        p.add_argument(
            "-o",
            "--output",
            type=Path,
            required=True,
            metavar=output[0],
            **({"help": output[1]} if len(output) > 1 else {}),
        )
        p.set_defaults(func=func)
        return p

    def common(p, parallel: bool = False) -> None:
        """The flags every sub-command takes (--config, --quiet; --workers and --ray where
        the work runs in parallel)."""
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="YAML settings (default: built-in, as in configs/data_filter.yaml)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if parallel:
            p.add_argument(
                "--workers", type=int, default=None, help="local worker processes (default: one per CPU core)"
            )
            p.add_argument(
                "--ray",
                metavar="ADDRESS",
                default=None,
                help="run as a Ray Data pipeline on the cluster at ADDRESS "
                "('auto', 'ray://host:10001', or 'local' to start one here)",
            )

    scan = action(
        run_scan,
        "probe and analyse every video under a folder",
        ("in_dir", "IN_DIR"),
        ("MANIFEST", "manifest to write or resume (.jsonl)"),
    )
    scan.add_argument("--retry-errors", action="store_true", help="analyse again the files recorded as errors")
    common(scan, parallel=True)

    filt = action(
        run_filter,
        "keep the clips that pass the thresholds",
        ("manifest", "MANIFEST"),
        ("CLIPS", "kept clips (.jsonl)"),
    )
    filt.add_argument(
        "--rejected", type=Path, default=None, help="also write the rejected clips, each with its reasons"
    )
    common(filt)

    cut = action(
        run_cut,
        "write the kept clips as video files",
        ("clips", "CLIPS", "output of `kumo data filter`"),
        ("OUT_DIR",),
    )
    cut.add_argument("--fps", type=float, default=None, help="target frame rate (default: source)")
    cut.add_argument(
        "--size", default=None, metavar="WxH", help="target size, scaled to cover and centre-cropped (default: source)"
    )
    cut.add_argument("--no-copy", action="store_true", help="always re-encode, never stream copy")
    common(cut, parallel=True)

    enc = action(
        run_encode,
        "pre-extract VAE latents into safetensors shards",
        ("clips", "CLIPS", "the folder `kumo data cut` wrote (or its clips.jsonl)"),
        ("OUT_DIR",),
    )
    enc.add_argument("--vae", type=Path, required=True, metavar="DIR", help="diffusers AutoencoderKLCogVideoX folder")
    enc.add_argument("--frames", type=int, default=None, help="frames per clip, 4k+1 (default 49)")
    enc.add_argument("--size", default=None, metavar="WxH", help="pixel size fed to the VAE")
    enc.add_argument(
        "--aspect-buckets",
        nargs="?",
        const=str(ASPECT_BUCKET_AREA),
        default=None,
        metavar="AREA",
        help="any aspect ratio: each clip to the bucket nearest its aspect (sides multiples of the VAE's "
        "stride x patch 2, area at most AREA pixels, 1:2 .. 2:1), scaled to cover and centre-cropped; "
        "AREA in pixels or as WxH (default 256x256); not with --size",
    )
    enc.add_argument("--shard-size", type=int, default=None, help="clips per shard (default 64)")
    enc.add_argument("--device", default="cpu", help="torch device (default cpu)")
    enc.add_argument(
        "--frame-latents",
        action="store_true",
        help="also keep each even frame's image latent, for conditioned training (docs/conditioning.md)",
    )
    common(enc)


# ------------------------------------------------------------------------------ helpers
def _config(args):
    from kumovideo.data.pipeline.config import load_config

    return load_config(args.config)


def _output_file(path: Path) -> Path:
    """Check an output file; its folder may be missing (created, with any parents, once
    everything else has been checked, as `cut` and `encode` create theirs)."""
    if path.is_dir():
        raise KumoInputError(f"-o {path} is a folder; give a file name such as {path / 'out.jsonl'}")
    check_output_folder(path.parent if str(path.parent) else Path("."), f"-o {path}: its folder")
    return path


def _output_dir(path: Path) -> Path:
    """Check an output folder; it is created (with any parents) only once everything else
    has been checked."""
    return check_output_folder(path, "-o")


def _only_our_files(out_dir: Path, ours, what: str) -> None:
    """Refuse an existing output folder holding files this command would not have written:
    its outputs are named after clip ids and shard numbers, and would overwrite a user's
    files of the same names. Our own files (a run to resume) and hidden temp files pass."""
    if not out_dir.is_dir():
        return
    foreign = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".") and not ours(p.name))
    if foreign:
        raise KumoInputError(
            f"-o {out_dir} already holds files that are not {what} (e.g. {foreign[0]}); choose a new or empty folder"
        )


def _input_file(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise KumoInputError(f"{what} {path} not found; {hint}")
    return path


def _size(text: str | None, flag: str) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 2:
        raise KumoInputError(f"{flag} {text!r} is not a size; write it as WIDTHxHEIGHT, e.g. 640x360")
    return check_whole(int(m.group(1)), f"{flag} width"), check_whole(int(m.group(2)), f"{flag} height")


def _bucket_area(text: str) -> int:
    """--aspect-buckets AREA: pixels (65536) or WxH (256x256, its area), within encode.aspect_buckets' range."""
    m = re.fullmatch(r"\s*(\d+)(?:[xX](\d+))?\s*", text)
    if not m:
        raise KumoInputError(
            f"--aspect-buckets {text!r} is not an area; pass pixels (65536) or WxH (256x256), or no value for 256x256"
        )
    area = int(m.group(1)) * int(m.group(2) or 1)
    allowed = RANGES["encode.aspect_buckets"]
    if not allowed.admits(area):
        raise KumoInputError(f"--aspect-buckets {text}: the area must be {allowed.describe()} pixels, got {area}")
    return area


def _workers(args) -> int:
    """--workers, with --ray's address checked too (both are read before any work starts)."""
    from kumovideo.data.pipeline.runner import check_ray, default_workers

    if args.ray is not None:
        check_ray(args.ray)
    if args.workers is None:
        return default_workers()
    return check_whole(args.workers, "--workers", high=WORKERS_MAX, too_small="{name} {value}: pass 1 or more")


def _require_extras(args) -> None:
    """The optional modules this sub-command needs (NEEDS), before anything else."""
    for module in NEEDS[args.data_command]:
        require(module, f"kumo data {args.data_command}")


def _report_failures(failed: int, total: int, what: str, before: int = 0, before_means: str = "done before") -> int:
    """A last stderr line when some items failed (listed above): `failed` of the `total` the
    output now covers, `before` of them from earlier runs. The exit status stays 0:
    unusable inputs are expected in raw footage and recorded, not errors of the command."""
    if failed:
        earlier = f"; {before} {before_means}" if before else ""
        print(
            f"kumo: {failed} of {total} {what} failed (listed above{earlier}); the others were written",
            file=sys.stderr,
        )
    return 0


# ------------------------------------------------------------------------------ commands
def check_scan_args(args: argparse.Namespace):
    """`kumo data scan`'s flags and files, before any work; its config and worker count."""
    _require_extras(args)
    cfg = _config(args)
    _output_file(args.output)
    return cfg, _workers(args)


def run_scan(args: argparse.Namespace) -> int:
    """Probe and analyse every video under IN_DIR into a JSON Lines manifest (one record per
    video). Re-running resumes: recorded files are skipped."""
    cfg, workers = check_scan_args(args)
    from kumovideo.data.pipeline.scan import scan_folder

    summary = scan_folder(
        args.in_dir,
        args.output,
        cfg.scan,
        workers=workers,
        ray_address=args.ray,
        retry_errors=args.retry_errors,
        quiet=args.quiet,
    )
    for line in summary.lines():
        print(line)
    print(f"manifest: {args.output}")
    return _report_failures(
        len(summary.errors), summary.found, "files", before=summary.skipped, before_means="already in the manifest"
    )


def check_filter_args(args: argparse.Namespace):
    """`kumo data filter`'s flags and files, before any work; its config."""
    _require_extras(args)
    cfg = _config(args)
    _input_file(args.manifest, "manifest", "run `kumo data scan IN_DIR -o MANIFEST` first")
    _output_file(args.output)
    if args.rejected is not None:
        _output_file(args.rejected)
    check_not_overwriting({"MANIFEST": args.manifest}, {"-o": args.output, "--rejected": args.rejected})
    return cfg


def run_filter(args: argparse.Namespace) -> int:
    """Apply the thresholds of the config's `filter` section to a scan manifest; write the kept
    clips."""
    cfg = check_filter_args(args)
    from kumovideo.data.pipeline.filter import filter_records
    from kumovideo.data.pipeline.manifest import SCAN_MANIFEST, atomic_write_jsonl, latest_by_path, read_manifest

    records = list(latest_by_path(read_manifest(args.manifest, SCAN_MANIFEST)).values())
    if not records:
        raise KumoInputError(
            f"manifest {args.manifest} holds no records; run `kumo data scan IN_DIR -o MANIFEST` first"
        )
    kept, rejected, reasons = filter_records(records, cfg.filter)
    for path, lines in ((args.output, kept), (args.rejected, rejected)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_jsonl(path, lines)
    videos = sum(1 for r in records if r.get("status") == "ok")
    seconds = sum(e["duration"] for e in kept)
    print(
        f"kept {len(kept)} of {len(kept) + len(rejected)} clips from {videos} videos "
        f"({seconds:.1f} s of video) -> {args.output}"
    )
    if reasons:
        print("rejected: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    return 0


def check_cut_args(args: argparse.Namespace):
    """`kumo data cut`'s flags and files, before any work; its config (with the flags in
    it), worker count and output folder (checked, not created)."""
    _require_extras(args)
    cfg = _config(args)
    _input_file(args.clips, "clip list", "run `kumo data filter MANIFEST -o CLIPS` first")
    if args.fps is not None:
        too_small = "{name} {value:g} is not a frame rate; pass a positive number"
        cfg.cut.fps = check_real(args.fps, "--fps", high=FPS_MAX, too_small=too_small)
    w, h = _size(args.size, "--size")
    if w is not None:
        cfg.cut.width, cfg.cut.height = w, h
    if args.no_copy:
        cfg.cut.stream_copy = False
    workers = _workers(args)
    out_dir = _output_dir(args.output)
    check_not_overwriting({"CLIPS": args.clips}, {"the cut manifest": out_dir / "clips.jsonl"})
    return cfg, workers, out_dir


def run_cut(args: argparse.Namespace) -> int:
    """Write each kept clip to OUT_DIR/<id>.mp4 (stream copy where possible, else re-encoded)
    with <id>.txt caption and OUT_DIR/clips.jsonl."""
    cfg, workers, out_dir = check_cut_args(args)
    from kumovideo.data.pipeline.cut import CUT_SETTINGS, cut_settings, cut_task
    from kumovideo.data.pipeline.manifest import CLIP_LIST, CUT_MANIFEST, atomic_write_jsonl, read_manifest
    from kumovideo.data.pipeline.resume import check_same_settings, remove_temp_files
    from kumovideo.data.pipeline.runner import run_tasks

    manifest = out_dir / "clips.jsonl"
    entries = read_manifest(args.clips, CLIP_LIST)
    names = {"clips.jsonl"} | {f"{e['id']}{ext}" for e in entries for ext in (".mp4", ".txt")}
    _only_our_files(out_dir, names.__contains__, "clips of this list")
    # Resume: clips already cut (in the manifest and on disk) are kept as they are, so they
    # must have been cut with this run's settings. The manifest is rewritten at the end, so
    # it must really be one.
    previous = {e["id"]: e for e in read_manifest(manifest, CUT_MANIFEST)} if manifest.exists() else {}
    done = {i: e for i, e in previous.items() if e.get("status") == "ok" and (out_dir / e.get("file", "")).is_file()}
    check_same_settings(
        out_dir, [e.get("cut_settings") for e in done.values()], cut_settings(cfg.cut), CUT_SETTINGS, "clips cut"
    )
    todo = [e for e in entries if e["id"] not in done]
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(out_dir, names.__contains__)  # a killed run's
    results = dict(done)
    counts: Counter = Counter()
    for res in run_tasks(
        cut_task(cfg.cut, str(out_dir)), todo, workers=workers, ray_address=args.ray, desc="cut", quiet=args.quiet
    ):
        results[res["id"]] = res
        counts[res.get("method") or "error"] += 1
    ordered = [results[e["id"]] for e in entries if e["id"] in results]
    ok = [r for r in ordered if r.get("status") == "ok"]
    atomic_write_jsonl(manifest, ok)
    failed = [r for r in ordered if r.get("status") != "ok"]
    print(
        f"cut {len(todo)} clips ({counts['copy']} stream-copied, {counts['encode']} re-encoded, "
        f"{len(failed)} failed; {len(done)} already done) -> {out_dir}"
    )
    print(f"captions: {out_dir}/<clip id>.txt, which `kumo data encode` reads: edit those to change a caption")
    for r in failed:
        print(f"  failed: {r['id']}: {r.get('error')}")
    return _report_failures(len(failed), len(entries), "clips", before=len(entries) - len(todo))


def check_encode_args(args: argparse.Namespace):
    """`kumo data encode`'s flags and files, before any work; its config (with the flags in
    it), cut manifest, device and output folder (checked, not created)."""
    _require_extras(args)
    cfg = _config(args)
    manifest = args.clips / "clips.jsonl" if args.clips.is_dir() else args.clips
    _input_file(manifest, "cut manifest", "run `kumo data cut CLIPS -o OUT_DIR` first and pass OUT_DIR")
    if not args.vae.is_dir():
        raise KumoInputError(f"--vae {args.vae} is not a folder; pass the diffusers AutoencoderKLCogVideoX folder")
    if args.frames is not None:
        not_4k1 = "{name} {value}: the VAE needs 4k+1 frames (17, 33, 49...)"
        check_whole(args.frames, "--frames", too_small=not_4k1)
        if not DEFAULT_GEOMETRY.is_encodable_frames(args.frames):
            raise KumoInputError(not_4k1.format(name="--frames", value=args.frames))
        cfg.encode.frames = args.frames
    if args.size is not None and args.aspect_buckets is not None:
        raise KumoInputError(
            "--size and --aspect-buckets exclude each other (every clip to one size, or each to the bucket "
            "nearest its aspect); pass one of them"
        )
    # A flag replaces the config's sizing: --size its aspect_buckets, --aspect-buckets its width/height.
    w, h = _size(args.size, "--size")
    if w is not None:
        if not (DEFAULT_GEOMETRY.is_encodable_side(w) and DEFAULT_GEOMETRY.is_encodable_side(h)):
            raise KumoInputError(f"--size {args.size}: width and height must be multiples of 8")
        cfg.encode.width, cfg.encode.height, cfg.encode.aspect_buckets = w, h, None
    if args.aspect_buckets is not None:
        cfg.encode.aspect_buckets = _bucket_area(args.aspect_buckets)
        cfg.encode.width = cfg.encode.height = None
    if args.shard_size is not None:
        cfg.encode.shard_size = check_whole(args.shard_size, "--shard-size", too_small="{name} must be 1 or more")
    device = str(resolve_device(args.device))
    return cfg, manifest, device, _output_dir(args.output)


def _warn_unpatchable_size(width: int | None, height: int | None) -> None:
    """The VAE takes multiples of 8, but MADiT's patch 2 needs even latent sides: pixel sides
    that are multiples of 16. Other sizes encode, and `kumo train dit` refuses the latents."""
    unit = DEFAULT_GEOMETRY.side_multiple
    if width is None or height is None or (width % unit == 0 and height % unit == 0):
        return
    (w_low, w_high), (h_low, h_high) = (
        DEFAULT_GEOMETRY.nearest_sides(v) if v % unit else (v, v) for v in (width, height)
    )
    log.warning(
        f"encode size {width}x{height} is not a multiple of {unit} (VAE stride 8 x patch 2), so `kumo train dit` "
        f"cannot train on these latents; use e.g. --size {w_low}x{h_low} or {w_high}x{h_high}"
    )


def run_encode(args: argparse.Namespace) -> int:
    """Encode cut clips with the CogVideoX VAE into OUT_DIR/shard-NNNNN.safetensors +
    OUT_DIR/index.json, which `kumo train dit` reads directly."""
    cfg, manifest, device, out_dir = check_encode_args(args)
    from kumovideo.data.pipeline.encode import (
        check_encode_resume,
        encode_clips,
        encode_settings,
        is_latent_file,
        load_index,
        load_vae,
    )
    from kumovideo.data.pipeline.manifest import CUT_MANIFEST, read_manifest

    # An index.json already there must be ours (a run to resume), encoded with these settings.
    settings = encode_settings(cfg.encode, args.vae, args.frame_latents)
    check_encode_resume(load_index(out_dir), settings, out_dir)
    _only_our_files(out_dir, is_latent_file, "latent shards and their index.json")
    entries = read_manifest(manifest, CUT_MANIFEST)
    _warn_unpatchable_size(cfg.encode.width, cfg.encode.height)  # once every check has passed
    vae = load_vae(args.vae, cfg.encode.dtype, device)
    out_dir.mkdir(parents=True, exist_ok=True)  # created once the VAE has loaded
    summary = encode_clips(
        entries,
        manifest.parent,
        vae,
        str(args.vae),
        out_dir,
        cfg.encode,
        device=device,
        quiet=args.quiet,
        frame_latents=args.frame_latents,
    )
    refreshed = summary["captions_refreshed"]
    print(
        f"encoded {summary['encoded']} clips ({summary['skipped']} already done, "
        f"{len(summary['errors'])} failed"
        + (f"; captions of {refreshed} done clips updated from their .txt" if refreshed else "")
        + f") into {summary['shards']} shards, {summary['clips']} clips in {out_dir / 'index.json'}"
    )
    for clip_id, err in summary["errors"]:
        print(f"  failed: {clip_id}: {err}", file=sys.stderr)
    total = summary["encoded"] + len(summary["errors"]) + summary["skipped"]
    return _report_failures(len(summary["errors"]), total, "clips", before=summary["skipped"])
