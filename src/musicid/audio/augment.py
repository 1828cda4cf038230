"""Batch degradations on the model's device: what a phone recording in a bar does to music.

Used twice: to make training pairs (clean anchor vs degraded positive) and to make evaluation
queries. Everything takes a torch.Generator so a seed gives the same degradations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio.functional as AF


@dataclass(frozen=True)
class DegradeSpec:
    snr_db: tuple[float, float] = (0.0, 10.0)
    noise_kinds: tuple[str, ...] = ("pink", "brown", "babble", "music", "hum")
    reverb_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.2, 0.8)
    bandlimit_prob: float = 0.5
    codec_prob: float = 0.3
    gain_db: tuple[float, float] = (-10.0, 6.0)


def _uniform(low: float, high: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device="cpu").to(device)


def colored_noise(n: int, samples: int, exponent: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """1/f^exponent noise (1 = pink, 2 = brown), unit RMS."""
    white = torch.randn(n, samples, generator=gen).to(device)
    spectrum = torch.fft.rfft(white)
    freqs = torch.arange(spectrum.shape[-1], device=device).clamp_min(1).float()
    shaped = torch.fft.irfft(spectrum / freqs.pow(exponent / 2), n=samples)
    return shaped / shaped.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)


def babble(n: int, samples: int, sample_rate: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Speech-like noise: several 'talkers' of formant-filtered pulses with syllable-rate envelopes."""
    t = torch.arange(samples, device=device) / sample_rate
    out = torch.zeros(n, samples, device=device)
    for _ in range(4):
        f0 = _uniform(90, 250, n, gen, device)[:, None]
        glottal = torch.sign(torch.sin(2 * math.pi * f0 * t)) + 0.3 * torch.randn(n, samples, generator=gen).to(device)
        voice = glottal
        for formant in (500.0, 1500.0, 2500.0):
            center = formant * float(_uniform(0.8, 1.2, 1, gen, device))
            voice = voice + 0.5 * AF.bandpass_biquad(glottal, sample_rate, min(center, sample_rate / 2 - 100), Q=4.0)
        syllable = _uniform(3, 6, n, gen, device)[:, None]
        phase = _uniform(0, 2 * math.pi, n, gen, device)[:, None]
        envelope = torch.sin(2 * math.pi * syllable * t + phase).clamp_min(0) ** 2
        out = out + voice * envelope
    return out / out.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)


def hum(n: int, samples: int, sample_rate: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Mains hum with harmonics (50 or 60 Hz)."""
    t = torch.arange(samples, device=device) / sample_rate
    base = torch.where(torch.rand(n, generator=gen) < 0.5, 50.0, 60.0).to(device)[:, None]
    out = sum(torch.sin(2 * math.pi * base * k * t) / k for k in range(1, 6))
    return out / out.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)


def room_impulse(n: int, sample_rate: int, rt60: torch.Tensor, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Synthetic room impulse responses: direct path + exponentially decaying noise tail."""
    length = int(sample_rate * 0.6)
    t = torch.arange(length, device=device) / sample_rate
    decay = torch.exp(-6.9 * t[None, :] / rt60[:, None])
    ir = torch.randn(n, length, generator=gen).to(device) * decay * 0.3
    ir[:, 0] = 1.0
    return ir / ir.norm(dim=-1, keepdim=True)


def mix_at_snr(signal: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    power_signal = signal.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10)
    power_noise = noise.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10)
    scale = torch.sqrt(power_signal / (power_noise * 10 ** (snr_db[:, None] / 10)))
    return signal + scale * noise


def make_noise(kind: str, n: int, samples: int, sample_rate: int, gen: torch.Generator, device: torch.device,
               music: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "pink":
        return colored_noise(n, samples, 1.0, gen, device)
    if kind == "brown":
        return colored_noise(n, samples, 2.0, gen, device)
    if kind == "babble":
        return babble(n, samples, sample_rate, gen, device)
    if kind == "hum":
        return hum(n, samples, sample_rate, gen, device)
    if kind == "music":
        if music is None or music.shape[0] < 2:
            return colored_noise(n, samples, 1.0, gen, device)
        shift = int(torch.randint(1, music.shape[0], (1,), generator=gen))
        return torch.roll(music, shifts=shift, dims=0)[:, :samples]
    raise ValueError(f"unknown noise kind {kind!r}; allowed: pink, brown, babble, hum, music")


class NoiseBank:
    """Pre-rendered background noise clips per kind, so a training step only slices and mixes.

    Synthesising babble (formant filters) per batch costs more than the model's forward pass on a
    CPU; a bank of a few dozen seconds per kind, cut at random offsets, is as varied in practice.
    """

    def __init__(self, sample_rate: int, kinds: tuple[str, ...], seconds: float = 30.0, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        gen = torch.Generator().manual_seed(seed)
        samples = int(seconds * sample_rate)
        self.sample_rate = sample_rate
        self.kinds = tuple(kinds)
        self.clips = {
            kind: make_noise(kind, 1, samples, sample_rate, gen, torch.device("cpu"))[0].to(device)
            for kind in self.kinds
            if kind != "music"
        }

    def sample(self, kind: str, n: int, samples: int, gen: torch.Generator, music: torch.Tensor | None = None) -> torch.Tensor:
        if kind == "music":
            device = music.device if music is not None else torch.device("cpu")
            return make_noise("music", n, samples, self.sample_rate, gen, device, music=music)
        clip = self.clips[kind]
        starts = torch.randint(0, len(clip) - samples, (n,), generator=gen)
        index = (starts[:, None] + torch.arange(samples)[None, :]).to(clip.device)
        return clip[index]


def add_noise(x: torch.Tensor, bank: NoiseBank, snr_db: tuple[float, float], gen: torch.Generator,
              kinds: tuple[str, ...] | None = None) -> torch.Tensor:
    """Each row gets one noise kind (chosen per row) at an SNR drawn from `snr_db`."""
    n, samples = x.shape
    kinds = kinds or bank.kinds
    choice = torch.randint(len(kinds), (n,), generator=gen)
    noise = torch.zeros_like(x)
    for index, kind in enumerate(kinds):
        rows = (choice == index).nonzero().flatten().to(x.device)
        if len(rows):
            noise[rows] = bank.sample(kind, len(rows), samples, gen, music=x)[: len(rows)].to(x.device)
    return mix_at_snr(x, noise, _uniform(*snr_db, n, gen, x.device))


def reverberate(x: torch.Tensor, sample_rate: int, rt60: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    ir = room_impulse(x.shape[0], sample_rate, _uniform(*rt60, x.shape[0], gen, x.device), gen, x.device)
    return AF.fftconvolve(x, ir)[:, : x.shape[1]]


def telephone(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    return AF.lowpass_biquad(AF.highpass_biquad(x, sample_rate, 300.0), sample_rate, min(3400.0, sample_rate / 2 - 100))


def bandlimit(x: torch.Tensor, sample_rate: int, gen: torch.Generator) -> torch.Tensor:
    low = float(_uniform(100, 500, 1, gen, x.device))
    high = float(_uniform(2500, sample_rate / 2 - 200, 1, gen, x.device))
    return AF.lowpass_biquad(AF.highpass_biquad(x, sample_rate, low), sample_rate, high)


def codec(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Codec-like artefacts: coarse mu-law quantisation (8 to 6 bits)."""
    bits = int(torch.randint(6, 9, (1,), generator=gen))
    channels = 2**bits
    peak = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
    encoded = AF.mu_law_encoding(x / peak, channels)
    return AF.mu_law_decoding(encoded, channels) * peak


def _rows(prob: float, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) < prob).nonzero().flatten().to(device)


def degrade(x: torch.Tensor, sample_rate: int, spec: DegradeSpec, gen: torch.Generator, bank: NoiseBank) -> torch.Tensor:
    """Random chain: reverb → band-limit → noise → codec → gain, each with its probability."""
    out = x.clone()
    rows = _rows(spec.reverb_prob, len(out), gen, x.device)
    if len(rows):
        out[rows] = reverberate(out[rows], sample_rate, spec.rt60_s, gen)
    rows = _rows(spec.bandlimit_prob, len(out), gen, x.device)
    if len(rows):
        out[rows] = bandlimit(out[rows], sample_rate, gen)
    out = add_noise(out, bank, spec.snr_db, gen, spec.noise_kinds)
    rows = _rows(spec.codec_prob, len(out), gen, x.device)
    if len(rows):
        out[rows] = codec(out[rows], gen)
    gain = 10 ** (_uniform(*spec.gain_db, len(out), gen, x.device) / 20)
    return (out * gain[:, None]).clamp(-1.0, 1.0)
