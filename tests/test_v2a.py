"""Video-to-audio: ShapesWorld sound, its judge, the spectrogram, the model, the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_runs import TINY_V2A, save_tiny_v2a

from kumovideo.data import shapes_world as sw
from kumovideo.evaluation.sound_judge import judge_sound, summarise_sound
from kumovideo.models.v2a_kumo import KumoV2AModel
from kumovideo.pipelines.pipeline_kumo_v2a import KumoV2APipeline
from kumovideo.pipelines.spectrogram import audio_to_mel, mel_to_audio, num_mel_frames
from kumovideo.utils.errors import KumoInputError

librosa = pytest.importorskip("librosa")


def clip(caption: str, seed: int = 0, size: int = 64, frames: int = 17) -> sw.ClipSpec:
    return sw.clip_spec_from_caption(caption, np.random.default_rng(seed), size, frames)


def peak_hz(audio: np.ndarray, sample_rate: int = sw.SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), 1 << 17))
    return float(np.fft.rfftfreq(1 << 17, 1 / sample_rate)[np.argmax(spectrum)])


# ------------------------------------------------------------------ the world's sound
def test_sound_follows_the_spec():
    spec = clip("a large red circle moves up on a black background")
    audio = sw.render_sound(spec)
    assert audio.shape == (34_000,) and audio.dtype == np.float32  # 17 frames / 8 fps * 16 kHz
    quarter = len(audio) // 4
    start, end = peak_hz(audio[:2000]), peak_hz(audio[-2000:])
    assert abs(start - 220.0) < 3
    assert abs(12 * np.log2(end / start) - 2.0) < 0.2  # 2 semitones over 0.40 H of upward travel
    assert abs(np.abs(audio[:quarter]).max() - 0.2) < 0.01  # a large object: amplitude 0.2
    growing = sw.render_sound(clip("a small green square grows on a gray background"))
    assert np.abs(growing[-quarter:]).max() > 2 * np.abs(growing[:quarter]).max()


# ------------------------------------------------------------------ the judge
def test_judge_agrees_with_rendered_soundtracks_and_rejects_mismatched_ones():
    rng = np.random.default_rng(11)
    specs = [sw.sample_clip_spec(rng, 64, 17) for _ in range(60)]
    results = [judge_sound(sw.render_sound(s), sw.caption(s)) for s in specs]
    assert summarise_sound(results)["match_rate"] >= 0.98
    # Another clip's caption whose sound differs (colours, glide or loudness) must fail.
    from kumovideo.cli.eval_sound import sound_signature

    rejected = []
    for a, b in zip(specs, specs[1:] + specs[:1]):
        if sound_signature(sw.caption(a)) != sound_signature(sw.caption(b)):
            rejected.append(not judge_sound(sw.render_sound(a), sw.caption(b)).matches)
    assert len(rejected) > 50 and np.mean(rejected) >= 0.98


def test_judge_names_the_broken_rule():
    caption = "a blue circle moves up on a navy background"
    spec = clip(caption)
    assert judge_sound(sw.render_sound(spec), caption).matches
    level = sw.render_sound(clip("a blue circle stays still on a navy background"))
    assert judge_sound(level, caption).rules == {"tone": True, "glide": False, "loudness": True, "no_extra_tone": True}
    silence = np.zeros(34_000, dtype=np.float32)
    assert not judge_sound(silence, caption).rules["tone"]
    every_tone = sum(sw.render_sound(clip(f"a {c} circle stays still on a black background")) for c in sw.COLOURS)
    verdict = judge_sound(every_tone, "a blue circle stays still on a black background")
    assert not verdict.matches and set(verdict.extra_tones) == set(sw.COLOURS) - {"blue"}
    # A loud green gliding down ends half a semitone from red's band: its skirt there is not a red tone.
    from kumovideo.evaluation.sound_judge import MIN_AMPLITUDE, band_tracks

    green = sw.render_sound(clip("a large green circle moves down on a gray background"))
    _, _, red_band = band_tracks(green + 0.002 * np.random.default_rng(0).standard_normal(len(green)), 220.0)
    assert (red_band >= MIN_AMPLITUDE).mean() < 0.05


# ------------------------------------------------------------------ spectrogram and vocoder
def test_mel_is_librosas_and_griffin_lim_keeps_what_the_judge_hears():
    config = KumoV2AModel().config
    caption = "a yellow triangle shrinks and a purple square moves down on a forest background"
    audio = sw.render_sound(clip(caption))
    mel = audio_to_mel(audio, config)
    reference = librosa.feature.melspectrogram(
        y=audio, sr=16_000, n_fft=1024, hop_length=250, n_mels=96, fmin=100.0, fmax=2000.0, power=1.0
    )
    low, high = config.log_mel_range
    expected = 2 * (np.log(np.maximum(reference, np.exp(low))) - low) / (high - low) - 1
    assert mel.shape == (96, num_mel_frames(len(audio), 250))
    np.testing.assert_allclose(mel.numpy(), expected, atol=1e-4)
    back = mel_to_audio(mel, config, len(audio))
    assert back.shape == audio.shape
    assert judge_sound(back, caption).matches


# ------------------------------------------------------------------ the model
def test_model_output_depends_on_the_video_per_time_step():
    torch.manual_seed(0)
    local = KumoV2AModel(**{**TINY_V2A, "context_layers": 0}).eval()
    clip_wide = KumoV2AModel(**TINY_V2A).eval()
    for model in (local, clip_wide):
        for p in (model.proj_out.weight, *(b.conv2.weight for b in model.blocks)):
            torch.nn.init.normal_(p, std=0.1)  # the zero init would hide every input
    x = torch.randn(1, 32, 137)  # 17 frames at 8 fps
    t = torch.tensor([500])
    still = torch.zeros(1, 17, 3, 16, 16)
    moved = still.clone()
    moved[:, 16:] = 1.0  # only the last frame changes
    with torch.no_grad():
        a, b = local(x, t, still, 8.0), local(x, t, moved, 8.0)
        wide = clip_wide(x, t, still, 8.0), clip_wide(x, t, moved, 8.0)
        masked = clip_wide(x, t, still, 8.0, torch.zeros(1)), clip_wide(x, t, moved, 8.0, torch.zeros(1))
    changed = (a - b).abs().amax(dim=1)[0]  # per mel frame
    # Mel frame j hears frame j * 250 / 16000 * 8: the last video frame is heard from mel
    # frame 120 on; without the frame context, frames before 100 lie beyond the receptive
    # field (~16) and stay put ...
    assert changed[-5:].min() > 1e-4 and changed[:100].max() == 0
    # ... with it, every frame sees the whole clip (how things changed since the start).
    assert (wide[0] - wide[1]).abs().amax(dim=1)[0][:100].min() > 0
    torch.testing.assert_close(*masked)  # the video dropped: no trace of it


def test_frame_positions_follow_the_clock():
    model = KumoV2AModel(**TINY_V2A)
    positions = model.frame_positions(137, 17, 8.0, "cpu")
    assert positions[0] == 0 and positions[8] == pytest.approx(1.0)  # 8 hops of 250 = 1/8 s
    assert positions[-1] == 16  # held at the last frame


# ------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def tiny_v2a(tmp_path_factory):
    return save_tiny_v2a(tmp_path_factory.mktemp("v2a") / "tiny-v2a", steps=3)


def test_pipeline_round_trip_duration_and_seed(tiny_v2a):
    assert (tiny_v2a / "denoiser" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = KumoV2APipeline.from_pretrained(tiny_v2a)
    assert pipe.default_sampling() == {"num_inference_steps": 3, "guidance_scale": 1.0}
    frames = sw.render_clip(clip("a red circle moves left on a black background", frames=9))
    for fps in (8, 24):
        out = pipe(frames, fps=fps, generator=torch.Generator().manual_seed(1), progress=False)
        assert out.audios[0].shape == (round(9 / fps * 16_000),)
    again = pipe(frames, fps=24, generator=torch.Generator().manual_seed(1), progress=False)
    np.testing.assert_array_equal(out.audios[0], again.audios[0])
    guided = pipe(frames, fps=24, guidance_scale=3.0, generator=torch.Generator().manual_seed(1), progress=False)
    assert guided.audios[0].shape == out.audios[0].shape


def test_pipeline_runs_in_bf16_close_to_fp32(tiny_v2a):
    # The time interpolation's float32 weights promoted bf16 features: conv1d refused them.
    frames = sw.render_clip(clip("a red circle moves left on a black background", frames=9))
    audio = {}
    for dtype in (torch.float32, torch.bfloat16):
        pipe = KumoV2APipeline.from_pretrained(tiny_v2a, torch_dtype=dtype)
        out = pipe(frames, fps=8, generator=torch.Generator().manual_seed(1), progress=False)
        audio[dtype] = np.asarray(out.audios[0], dtype=np.float64)
    assert np.isfinite(audio[torch.bfloat16]).all()
    assert audio[torch.bfloat16].shape == audio[torch.float32].shape
    correlation = np.corrcoef(audio[torch.bfloat16], audio[torch.float32])[0, 1]
    assert correlation > 0.5, correlation


@pytest.mark.parametrize(
    ("video", "kwargs", "needle"),
    [
        (np.zeros((9, 16, 16), np.uint8), {}, "(F, H, W, 3)"),
        (np.zeros((9, 16, 16, 3), np.float32), {}, "uint8"),
        (np.zeros((9, 16, 16, 3), np.uint8), {"audio_prompt": "a tone"}, "takes no text"),
        (np.zeros((9, 16, 16, 3), np.uint8), {"fps": 0}, "fps"),
        (np.zeros((9, 16, 16, 3), np.uint8), {"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_pipeline_refuses_bad_input_in_one_line(tiny_v2a, video, kwargs, needle):
    pipe = KumoV2APipeline.from_pretrained(tiny_v2a)
    with pytest.raises(KumoInputError, match=None) as info:
        pipe(video, progress=False, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_t2v_folder_is_not_a_v2a_model(tmp_path):
    from kumovideo.pipelines.pipeline_kumo_v2a import check_v2a_folder

    (tmp_path / "model_index.json").write_text('{"_class_name": "KumoPipeline"}')
    with pytest.raises(KumoInputError, match="not a video-to-audio model"):
        check_v2a_folder(tmp_path)
