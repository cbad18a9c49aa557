"""Audio <-> the V2A model's spectrogram, and video frames -> its conditioning input.

The representation is librosa's mel spectrogram (magnitude, Slaney mel bands) in log
scale, mapped from the model's `log_mel_range` to [-1, 1]; the way back is librosa's
mel -> STFT (non-negative least squares) and Griffin-Lim. Every setting comes from the
model's config, so a checkpoint carries its own representation.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from kumovideo.utils.extras import require

GRIFFIN_LIM_ITERATIONS = 32  # measured: more iterations do not move the judged pitch or loudness


def _librosa():
    return require("librosa", "video-to-audio")


def num_mel_frames(num_samples: int, hop_length: int) -> int:
    """Mel frames librosa gives for `num_samples` (centred frames)."""
    return 1 + num_samples // hop_length


def num_samples_for(num_frames: int, fps: float, sample_rate: int) -> int:
    """Samples in a soundtrack exactly as long as `num_frames` frames at `fps`."""
    return round(num_frames * sample_rate / fps)


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """librosa's Slaney mel filterbank (M, n_fft // 2 + 1), built once per setting."""
    basis = _librosa().filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    return torch.from_numpy(basis)


def audio_to_mel(audio: np.ndarray, config) -> torch.Tensor:
    """Mono float audio (N,) -> normalised log-mel (M, T) in about [-1, 1].

    librosa.feature.melspectrogram(power=1) computed as torch.stft (centred, zero-padded,
    Hann) times librosa's filterbank: the same numbers, and ~10x faster per clip, which
    is what a training step that renders its own batch spends its time on.
    """
    signal = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    window = torch.hann_window(config.n_fft, periodic=True)
    stft = torch.stft(
        signal, config.n_fft, config.hop_length, window=window, center=True, pad_mode="constant", return_complex=True
    )
    basis = mel_basis(config.sample_rate, config.n_fft, config.n_mels, float(config.f_min), float(config.f_max))
    mel = basis @ stft.abs()
    low, high = config.log_mel_range
    log_mel = mel.clamp(min=math.exp(low)).log()
    return 2.0 * (log_mel - low) / (high - low) - 1.0


def mel_to_audio(mel: torch.Tensor, config, num_samples: int, n_iter: int = GRIFFIN_LIM_ITERATIONS) -> np.ndarray:
    """Normalised log-mel (M, T) -> mono float32 audio of exactly `num_samples` (Griffin-Lim)."""
    low, high = config.log_mel_range
    log_mel = (mel.detach().float().cpu().numpy().clip(-1.0, 1.0) + 1.0) / 2.0 * (high - low) + low
    magnitude = np.exp(log_mel)
    magnitude[log_mel <= low + 1e-3] = 0.0  # the floor is silence, not a faint hiss
    librosa = _librosa()
    stft = librosa.feature.inverse.mel_to_stft(
        magnitude, sr=config.sample_rate, n_fft=config.n_fft, fmin=config.f_min, fmax=config.f_max, power=1.0
    )
    # Griffin-Lim from seeded random phases: the same mel always gives the same audio.
    audio = librosa.griffinlim(
        stft, n_iter=n_iter, hop_length=config.hop_length, n_fft=config.n_fft, length=num_samples, random_state=0
    )
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def frames_to_condition(frames: np.ndarray | torch.Tensor, frame_size: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) frames (or float (F, 3, H, W) in [-1, 1]) -> (F, 3, s, s) in [-1, 1].

    Area resampling to a square: the conditioning side is small, and area keeps thin
    shapes visible where nearest-neighbour would drop them.
    """
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got shape {frames.shape}")
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        video = frames.float()
    if video.shape[-2:] != (frame_size, frame_size):
        video = F.interpolate(video, size=(frame_size, frame_size), mode="area")
    return video
