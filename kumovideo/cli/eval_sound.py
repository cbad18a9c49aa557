"""`kumo eval sound`: does the video-to-audio model hear what it sees?

Draws N captions held out of training (`shapes_world.is_held_out`; seeded, alternating
one and two objects), renders each clip (64x64, 17 frames, 8 fps), gives the V2A model
the video alone and judges the soundtrack against the caption by the spec's sound rules
(`evaluation/sound_judge.py`): tone at the colour's pitch, glide, loudness, no extra
tone. Prints rates overall, by number of objects and per rule; writes results.json and a
few examples (the clip with its soundtrack, the .wav, and a spectrogram PNG: generated
above, the spec's rendering below).

`--reference render` judges the rendered soundtracks themselves (the judge's own check;
it also judges each against another clip's caption whose sound differs, which must fail);
`--reference vocoder` judges them after the model's spectrogram and Griffin-Lim (the
ceiling any denoiser can reach with this representation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from kumovideo.cli import args as flags
from kumovideo.cli.reports import percent, write_results
from kumovideo.utils.errors import KumoInputError
from kumovideo.utils.paths import check_output_folder

MAX_CAPTIONS = 10_000
CLIP_SIZE, CLIP_FRAMES, CLIP_FPS = 64, 17, 8  # the built-in text-to-video model's clips


def register(esub) -> None:
    q = esub.add_parser("sound", help="ShapesWorld video-to-audio match rate (spec v1.1 sound rules)")
    q.add_argument("--model", default=None, help="V2A pipeline folder (default: the built-in one)")
    q.add_argument("--n", type=int, default=128, help="number of held-out captions (default 128)")
    q.add_argument("--seed", type=int, default=2025, help="caption and noise seed (default 2025)")
    flags.add_steps_arg(q, help="denoising steps (default: the model's)")
    q.add_argument("--guidance", type=float, default=None, help="guidance over the video (default: the model's)")
    q.add_argument("--examples", type=int, default=4, help="clips written with sound and spectrogram (default 4)")
    q.add_argument("--out", default="outputs/eval-sound", help="folder for results.json and the examples")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.add_argument(
        "--reference",
        choices=["render", "vocoder"],
        default=None,
        help="judge the rendered soundtracks (render), or them through the spectrogram and Griffin-Lim "
        "(vocoder: the ceiling), instead of generated ones",
    )
    q.set_defaults(func=run)


def sound_captions(n: int, seed: int) -> list[str]:
    """n distinct held-out captions, alternating one and two objects."""
    import numpy as np

    from kumovideo.data.shapes_world import caption, is_held_out, sample_clip_spec

    rng = np.random.default_rng([seed, 5151])
    captions: list[str] = []
    for _ in range(1000 * n):
        text = caption(sample_clip_spec(rng, CLIP_SIZE, CLIP_FRAMES, num_objects=1 + len(captions) % 2))
        if is_held_out(text) and text not in captions:
            captions.append(text)
            if len(captions) == n:
                return captions
    raise KumoInputError(f"could not draw {n} distinct held-out captions; lower --n")


def sound_signature(text: str) -> frozenset:
    """What a caption's soundtrack depends on: each colour with its glide and loudness rule."""
    from kumovideo.data.shapes_world import parse_caption
    from kumovideo.evaluation.sound_judge import EXPECTED_GLIDE, EXPECTED_LOUDNESS

    return frozenset(
        (o["colour"], EXPECTED_GLIDE.get(o["motion"], "level"), EXPECTED_LOUDNESS.get(o["motion"], "steady"))
        for o in parse_caption(text)["objects"]
    )


def spectrogram_png(generated, reference, path: Path) -> Path:
    """Two normalised log-mels (M, T) stacked (generated on top), low pitches at the bottom."""
    import numpy as np
    from PIL import Image

    def rows(mel) -> np.ndarray:
        return np.flipud(((mel.numpy().clip(-1, 1) + 1) * 127.5).astype(np.uint8))

    gap = np.full((4, generated.shape[1]), 255, dtype=np.uint8)
    image = Image.fromarray(np.concatenate([rows(generated), gap, rows(reference)]))
    image = image.resize((image.width * 4, image.height * 2), Image.NEAREST)
    from kumovideo.utils.atomic import atomic_file

    with atomic_file(path) as fh:
        image.save(fh, format="PNG")
    return path


def check_args(args) -> Path:
    positive = "--n must be positive"
    flags.check_whole_flags(args, "--n", high=MAX_CAPTIONS, too_small=positive)
    flags.check_whole_flags(args, "--examples", low=0, too_small="--examples must be 0 or more")
    flags.check_seed_flag(args, clips=args.n)
    flags.check_whole_flags(args, "--steps", too_small="{name} {value}: pass 1 or more denoising steps")
    flags.check_audio_guidance("--guidance", args.guidance)
    sampling = [flag for flag, value in (("--steps", args.steps), ("--guidance", args.guidance)) if value is not None]
    if sampling and args.reference:  # the references are rendered (and vocoded), never sampled
        raise KumoInputError(f"{' and '.join(sampling)}: for generated soundtracks only; leave out with --reference")
    return check_output_folder(args.out, "--out")


def run(args) -> int:
    out_dir = check_args(args)

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from kumovideo.cli.v2a import resolve_v2a_folder
    from kumovideo.data.shapes_world import clip_spec_from_caption, render_clip, render_sound
    from kumovideo.evaluation.sound_judge import judge_sound, summarise_sound
    from kumovideo.pipelines.pipeline_kumo_v2a import KumoV2APipeline
    from kumovideo.pipelines.spectrogram import audio_to_mel, mel_to_audio
    from kumovideo.utils.audio_io import mux_audio, write_wav
    from kumovideo.utils.video_io import write_video

    folder = resolve_v2a_folder(args.model)
    pipe = KumoV2APipeline.from_pretrained(folder, torch_dtype=torch.float32)
    config = pipe.denoiser.config
    captions = sound_captions(args.n, args.seed)
    rng = np.random.default_rng([args.seed, 77])
    specs = [clip_spec_from_caption(c, rng, CLIP_SIZE, CLIP_FRAMES) for c in captions]
    signatures = [sound_signature(c) for c in captions]  # --reference render: whose sound differs
    out_dir.mkdir(parents=True, exist_ok=True)

    results, duration_errors, mismatched = [], [], []
    start = time.perf_counter()
    for i, (text, spec) in enumerate(tqdm(list(zip(captions, specs)), desc="eval sound", unit="clip")):
        frames = render_clip(spec)
        rendered = render_sound(spec, fps=CLIP_FPS, sample_rate=config.sample_rate)
        if args.reference == "render":
            audio = rendered
            other = next((c for c, sig in zip(captions, signatures) if sig != signatures[i]), None)
            if other is not None:
                mismatched.append(judge_sound(audio, other, config.sample_rate).matches)
        elif args.reference == "vocoder":
            audio = mel_to_audio(audio_to_mel(rendered, config), config, len(rendered))
        else:
            audio = pipe(
                frames,
                fps=CLIP_FPS,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                generator=torch.Generator().manual_seed(args.seed + i),
                progress=False,
            ).audios[0]
        duration_errors.append(abs(len(audio) / config.sample_rate - len(frames) / CLIP_FPS))
        results.append(judge_sound(audio, text, config.sample_rate))
        if i < args.examples:
            stem = out_dir / f"example_{i:02d}"
            write_video(frames, stem.with_suffix(".silent.mp4"), fps=CLIP_FPS)
            mux_audio(stem.with_suffix(".silent.mp4"), audio, config.sample_rate, stem.with_suffix(".mp4"))
            stem.with_suffix(".silent.mp4").unlink()
            write_wav(audio, config.sample_rate, stem.with_suffix(".wav"))
            spectrogram_png(audio_to_mel(audio, config), audio_to_mel(rendered, config), stem.with_suffix(".png"))
    elapsed = time.perf_counter() - start

    summary = summarise_sound(results)
    summary.update(
        {
            "model": str(folder),
            "reference": args.reference,
            "steps": args.steps or pipe.default_sampling()["num_inference_steps"],
            "guidance": args.guidance if args.guidance is not None else pipe.default_sampling()["guidance_scale"],
            "seed": args.seed,
            "max_duration_error_s": max(duration_errors),
            "frame_s": 1 / CLIP_FPS,
            "seconds_per_clip": elapsed / len(captions),
        }
    )
    if mismatched:
        summary["mismatched_accepted"] = sum(mismatched) / len(mismatched)
    write_results(out_dir, summary, [r.to_dict() for r in results])
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    what = (
        f"reference ({args.reference})"
        if args.reference
        else f"{summary['steps']} steps, guidance {summary['guidance']}"
    )
    print(f"kumo eval sound: {len(captions)} held-out captions, {what}, {elapsed:.0f} s")
    print(f"  match rate        {percent(summary['match_rate'])}")
    print(f"  one object        {percent(summary['one_object']['match_rate'])}  (n={summary['one_object']['clips']})")
    print(f"  two objects       {percent(summary['two_object']['match_rate'])}  (n={summary['two_object']['clips']})")
    for name, value in summary["rules"].items():
        print(f"  {name:<17} {percent(value)}")
    if mismatched:
        print(f"  mismatched captions accepted {percent(summary['mismatched_accepted'])} (n={len(mismatched)})")
    print(
        f"  duration error    <= {summary['max_duration_error_s'] * 1000:.2f} ms (a frame is {1000 / CLIP_FPS:.0f} ms)"
    )
    print(f"examples and per-clip results: {out_dir}")
    return 0
