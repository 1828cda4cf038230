"""Render evaluation queries: a planned window of a held-out track under one degradation.

Conditions (the main ones are scored together, speed/pitch are reported apart because a
fingerprint is not expected to survive them by design):
  noise         background noise (pink, brown, babble, music, hum) at 0-10 dB SNR
  noise_reverb  synthetic room reverb, then noise
  codec_noise   coarse codec-like quantisation, then noise
  telephone     300-3400 Hz band, then noise
  speed         playback speed ±1-3 % (tempo and pitch together)
  pitch         pitch shift ±1 semitone
"""

from __future__ import annotations

import librosa
import numpy as np
import soxr
import torch

from musicid.audio.augment import NoiseBank, add_noise, codec, reverberate, telephone

MAIN_CONDITIONS = ("noise", "noise_reverb", "codec_noise", "telephone")
APART_CONDITIONS = ("speed", "pitch")
NOISE_KINDS = ("pink", "brown", "babble", "music", "hum")


def _speed(signal: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play `factor` times faster: resample so the same content takes 1/factor of the time.

    soxr handles the irrational rate ratio directly; torchaudio's sinc resampler would build a
    kernel for the reduced fraction (e.g. 8000/8081), which takes seconds per query.
    """
    return soxr.resample(signal, sample_rate, sample_rate / factor, quality="HQ").astype(np.float32)


def render_query(
    track: np.ndarray, sample_rate: int, start_s: float, duration_s: float, condition: str,
    snr_db: tuple[float, float], bank: NoiseBank, seed: int, music_bed: torch.Tensor,
) -> tuple[np.ndarray, dict]:
    """Cut and degrade one query; returns (signal, details of what was applied)."""
    gen = torch.Generator().manual_seed(seed)
    begin = int(round(start_s * sample_rate))
    length = int(round(duration_s * sample_rate))
    details: dict = {"condition": condition}
    if condition == "speed":
        factor = float(1 + np.sign(torch.rand(1, generator=gen).item() - 0.5) * (0.01 + 0.02 * torch.rand(1, generator=gen).item()))
        needed = int(np.ceil(length * factor)) + 1
        out = _speed(track[begin : begin + needed], factor, sample_rate)[:length]
        details["speed"] = round(factor, 4)
        return out, details
    if condition == "pitch":
        steps = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
        out = librosa.effects.pitch_shift(track[begin : begin + length], sr=sample_rate, n_steps=steps, res_type="soxr_hq")
        details["pitch_semitones"] = steps
        return out.astype(np.float32), details
    clip = torch.from_numpy(track[begin : begin + length].copy())[None, :]
    if condition == "noise_reverb":
        clip = reverberate(clip, sample_rate, (0.3, 0.9), gen)
    elif condition == "codec_noise":
        clip = codec(clip, gen)
    elif condition == "telephone":
        clip = telephone(clip, sample_rate)
    elif condition != "noise":
        raise ValueError(f"unknown condition {condition!r}; allowed: {', '.join(MAIN_CONDITIONS + APART_CONDITIONS)}")
    music = music_bed[:, : clip.shape[1]] if music_bed.shape[1] >= clip.shape[1] else None
    kinds = NOISE_KINDS if music is not None else NOISE_KINDS[:3] + NOISE_KINDS[4:]
    kind_index = int(torch.randint(len(kinds), (1,), generator=gen))
    kind = kinds[kind_index]
    noisy = add_noise(clip, bank, snr_db, gen, kinds=(kind,)) if kind != "music" else _mix_music(clip, music, snr_db, gen)
    details["noise"] = kind
    peak = float(noisy.abs().max())
    if peak > 1.0:
        noisy = noisy / peak
    return noisy[0].numpy().astype(np.float32), details


def _mix_music(clip: torch.Tensor, music: torch.Tensor, snr_db: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    from musicid.audio.augment import mix_at_snr

    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * torch.rand(1, generator=gen)
    return mix_at_snr(clip, music, snr)
