"""Decode any audio file to float32 PCM: soundfile first, audioread (ffmpeg/GStreamer) as fallback.

soundfile (libsndfile) reads WAV/FLAC/OGG/Opus/MP3 without external programs; audioread covers
containers such as M4A/AAC when ffmpeg is installed. Failures raise DecodeError with a short reason
suitable for a quarantine entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from musicid.errors import MusicidError

AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".m4a", ".aac", ".wma"}
)

# libsndfile reports header frame counts; a file that decodes to fewer frames than this share of
# them was cut short (a partial download or copy).
_TRUNCATION_TOLERANCE = 0.995
# For WAV/AIFF libsndfile trusts the file length but reports the header's data chunk size as
# "data : 132300 (should be 66128)"; a header promising more bytes than exist means a cut file.
_CHUNK_SIZE_MISMATCH = re.compile(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class DecodeError(MusicidError):
    """The file could not be decoded into usable PCM; the message is the quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # (frames, channels) float32 in [-1, 1]
    sample_rate: int
    format: str  # container, e.g. FLAC, OGG, WAV, MP3
    subtype: str  # encoding, e.g. PCM_16, VORBIS
    decoder: str  # "soundfile" or "audioread"

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def is_audio_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


def list_files(root: str | Path) -> tuple[list[str], list[str]]:
    """(audio, other) files under `root`, as sorted POSIX paths relative to it.

    Symlinks to files count: a curated folder of links to a library is common.
    """
    root = Path(root)
    audio, other = [], []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            (audio if is_audio_path(path) else other).append(path.relative_to(root).as_posix())
    return audio, other


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def _decode_soundfile(path: Path) -> DecodedAudio:
    info = sf.info(str(path))
    mismatch = _CHUNK_SIZE_MISMATCH.search(info.extra_info or "")
    if mismatch and int(mismatch.group(1)) > int(mismatch.group(2)):
        raise DecodeError(
            "truncated", f"header declares {mismatch.group(1)} data bytes but the file holds {mismatch.group(2)}"
        )
    samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    declared = int(info.frames)
    if 0 < declared < 2**62 and samples.shape[0] < declared * _TRUNCATION_TOLERANCE:
        raise DecodeError(
            "truncated", f"header declares {declared} frames but only {samples.shape[0]} decode"
        )
    return DecodedAudio(samples, int(sample_rate), info.format, info.subtype, "soundfile")


def _decode_audioread(path: Path) -> DecodedAudio:
    import audioread

    with audioread.audio_open(str(path)) as handle:
        channels, sample_rate = int(handle.channels), int(handle.samplerate)
        pcm = b"".join(handle)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    samples = samples[: len(samples) - len(samples) % max(channels, 1)].reshape(-1, max(channels, 1))
    return DecodedAudio(samples, sample_rate, path.suffix.lstrip(".").upper(), "PCM_16", "audioread")


def decode(path: str | Path) -> DecodedAudio:
    """Decode `path` fully; raise DecodeError(reason) for empty, truncated or undecodable files."""
    path = Path(path)
    if not path.is_file():
        raise DecodeError("missing", str(path))
    if path.stat().st_size == 0:
        raise DecodeError("empty_file", "0 bytes")
    try:
        audio = _decode_soundfile(path)
    except DecodeError:
        raise
    except Exception as sf_error:  # libsndfile raises several types; any of them means "try ffmpeg"
        try:
            audio = _decode_audioread(path)
            if audio.frames == 0:
                raise ValueError("no samples decoded")
        except Exception as ar_error:
            raise DecodeError(
                "undecodable",
                f"soundfile: {_first_line(sf_error)}; audioread: {_first_line(ar_error) or 'no backend'}",
            ) from None
    if audio.frames == 0 or audio.sample_rate <= 0:
        raise DecodeError("empty_audio", "no samples decoded")
    if not np.isfinite(audio.samples).all():
        raise DecodeError("undecodable", "decoded samples contain NaN or Inf")
    return audio
