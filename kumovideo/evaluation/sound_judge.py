"""Judge whether a soundtrack matches its ShapesWorld clip (spec v1.1, "Sound").

The spec's rules, per object named in the caption:
  - tone: a tone within a semitone of its colour's pitch is present in the first quarter;
  - glide: over the clip the tone glides up (> +1 semitone), down (< -1) or stays level,
    as the object moves up, down or neither;
  - loudness: the last quarter is > 2x the first (grows), < 0.5x (shrinks) or within
    those bounds (anything else).
And one rule the spec implies by "no other sound": no palette tone sounds that no object
has (without it a model that plays every colour at once would pass every tone rule).

How a tone is measured: a long-window STFT (256 ms, so neighbouring semitones ~14 Hz
apart at 220 Hz are resolved); each object owns the band within 2.5 semitones of its
colour's pitch (palette pitches are 5 semitones apart, so bands never overlap and a
2-semitone glide stays inside). Per STFT frame: the band's peak frequency (parabolic
interpolation) and its amplitude from the band's energy (Parseval, so a gliding tone
smeared over several bins still counts in full). Quarters are of the clip's duration.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from kumovideo.data.shapes_world import LOUDEST_AMPLITUDE, PITCHES, SAMPLE_RATE, parse_caption

WINDOW = 4096  # samples at 16 kHz: 256 ms, 3.9 Hz bins
HOP = 500
BAND_SEMITONES = 2.5
TONE_TOLERANCE_SEMITONES = 1.0
GLIDE_SEMITONES = 1.0
LOUDER, QUIETER = 2.0, 0.5
# A tone is present when its amplitude is at least this. The quietest tone of the world
# (a small object at the end of "shrinks") is 0.2 * (0.07 / 0.16)^2 ~ 0.038; this is 1/4 of it.
MIN_AMPLITUDE = 0.01 * LOUDEST_AMPLITUDE / 0.2

EXPECTED_GLIDE = {"moves up": "up", "moves down": "down"}  # every other motion: "level"
EXPECTED_LOUDNESS = {"grows": "louder", "shrinks": "quieter"}  # every other motion: "steady"


@dataclass
class ToneJudgement:
    colour: str
    motion: str
    start_hz: float | None  # median pitch in the first quarter (None: no tone there)
    glide_semitones: float | None  # last quarter's median pitch over the first's
    loudness_ratio: float | None  # last quarter's mean amplitude over the first's
    glide: str | None  # "up" | "down" | "level"
    loudness: str | None  # "louder" | "quieter" | "steady"
    tone_ok: bool = False
    glide_ok: bool = False
    loudness_ok: bool = False

    @property
    def ok(self) -> bool:
        return self.tone_ok and self.glide_ok and self.loudness_ok


@dataclass
class SoundJudgement:
    caption: str
    objects: list[ToneJudgement]
    extra_tones: list[str] = field(default_factory=list)  # palette colours sounding with no object
    duration_s: float = 0.0

    @property
    def rules(self) -> dict[str, bool]:
        return {
            "tone": all(o.tone_ok for o in self.objects),
            "glide": all(o.glide_ok for o in self.objects),
            "loudness": all(o.loudness_ok for o in self.objects),
            "no_extra_tone": not self.extra_tones,
        }

    @property
    def matches(self) -> bool:
        return all(self.rules.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "rules": self.rules, "matches": self.matches}


def semitones(f: float, reference: float) -> float:
    return 12.0 * math.log2(f / reference)


def band_tracks(
    audio: np.ndarray, pitch: float, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per STFT frame within the band around `pitch`: (frame centre times s, peak Hz, amplitude).
    Amplitude is 0 in a frame whose band peaks on its edge: that is the skirt of a louder
    tone next door (a neighbour gliding towards this band), not a tone of this band."""
    audio = np.asarray(audio, dtype=np.float64)
    window = np.hanning(WINDOW)
    padded = np.pad(audio, (WINDOW // 2, WINDOW // 2))
    starts = np.arange(0, len(padded) - WINDOW + 1, HOP)
    frames = np.stack([padded[s : s + WINDOW] * window for s in starts])
    spectrum = np.abs(np.fft.rfft(frames, axis=1))
    freqs = np.fft.rfftfreq(WINDOW, 1.0 / sample_rate)
    ratio = 2.0 ** (BAND_SEMITONES / 12.0)
    band = np.flatnonzero((freqs >= pitch / ratio) & (freqs <= pitch * ratio))
    power = spectrum[:, band] ** 2
    # Parseval for a sine: one-sided band energy = A^2 / 4 * N * sum(w^2) ... solved for A.
    amplitude = np.sqrt(4.0 * power.sum(axis=1) / (WINDOW * np.sum(window**2)))
    peak = np.argmax(power, axis=1)
    amplitude = np.where((peak > 0) & (peak < len(band) - 1), amplitude, 0.0)
    inner = np.clip(peak, 1, len(band) - 2)
    a, b, c = (np.log(spectrum[np.arange(len(starts)), band[inner + k]] + 1e-12) for k in (-1, 0, 1))
    offset = np.where(peak == inner, 0.5 * (a - c) / np.where(a - 2 * b + c == 0, -1e-12, a - 2 * b + c), 0.0)
    bin_hz = freqs[1] - freqs[0]
    peak_hz = freqs[band[peak]] + np.clip(offset, -0.5, 0.5) * bin_hz
    times = starts / sample_rate  # padded start == centre of the unpadded window
    return times, peak_hz, amplitude


def _quarters(times: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    first = times <= duration / 4
    last = times >= 3 * duration / 4
    return first, last


def judge_tone(audio: np.ndarray, colour: str, motion: str, sample_rate: int = SAMPLE_RATE) -> ToneJudgement:
    """The spec's three rules for one object's tone."""
    pitch = PITCHES[colour]
    duration = len(audio) / sample_rate
    times, peak_hz, amplitude = band_tracks(audio, pitch, sample_rate)
    first, last = _quarters(times, duration)
    heard = amplitude >= MIN_AMPLITUDE
    judgement = ToneJudgement(colour, motion, None, None, None, None, None)
    if not (first & heard).any():
        return judgement
    start_hz = float(np.median(peak_hz[first & heard]))
    judgement.start_hz = start_hz
    judgement.tone_ok = abs(semitones(start_hz, pitch)) <= TONE_TOLERANCE_SEMITONES
    loud_first = float(np.mean(amplitude[first]))
    loud_last = float(np.mean(amplitude[last]))
    judgement.loudness_ratio = loud_last / max(loud_first, 1e-12)
    judgement.loudness = (
        "louder"
        if judgement.loudness_ratio > LOUDER
        else "quieter"
        if judgement.loudness_ratio < QUIETER
        else "steady"
    )
    judgement.loudness_ok = judgement.loudness == EXPECTED_LOUDNESS.get(motion, "steady")
    if (last & heard).any():
        glide = semitones(float(np.median(peak_hz[last & heard])), start_hz)
        judgement.glide_semitones = glide
        judgement.glide = "up" if glide > GLIDE_SEMITONES else "down" if glide < -GLIDE_SEMITONES else "level"
        judgement.glide_ok = judgement.glide == EXPECTED_GLIDE.get(motion, "level")
    return judgement


def extra_tones(audio: np.ndarray, named: set[str], sample_rate: int = SAMPLE_RATE) -> list[str]:
    """Palette colours (not in `named`) whose tone sounds for at least a quarter of the clip."""
    found = []
    for colour, pitch in PITCHES.items():
        if colour in named:
            continue
        _, _, amplitude = band_tracks(audio, pitch, sample_rate)
        if np.mean(amplitude >= MIN_AMPLITUDE) >= 0.25:
            found.append(colour)
    return found


def judge_sound(audio: np.ndarray, caption: str, sample_rate: int = SAMPLE_RATE) -> SoundJudgement:
    """Judge a mono soundtrack against a ShapesWorld caption (ValueError for a caption
    outside the grammar)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    parsed = parse_caption(caption)
    objects = [judge_tone(audio, o["colour"], o["motion"], sample_rate) for o in parsed["objects"]]
    named = {o["colour"] for o in parsed["objects"]}
    return SoundJudgement(caption, objects, extra_tones(audio, named, sample_rate), len(audio) / sample_rate)


def summarise_sound(results: list[SoundJudgement]) -> dict:
    """Match rates overall, by object count and per rule."""

    def rate(values: list[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    one = [r for r in results if len(r.objects) == 1]
    two = [r for r in results if len(r.objects) == 2]
    return {
        "clips": len(results),
        "match_rate": rate([r.matches for r in results]),
        "one_object": {"clips": len(one), "match_rate": rate([r.matches for r in one])},
        "two_object": {"clips": len(two), "match_rate": rate([r.matches for r in two])},
        "rules": {
            name: rate([r.rules[name] for r in results]) for name in ("tone", "glide", "loudness", "no_extra_tone")
        },
    }
