"""Encoding rendered audio as FLAC / OGG Vorbis / WAV bytes (deterministic OGG serials)."""

from __future__ import annotations

import io
import zlib

import numpy as np
import soundfile as sf

from musicid.data.synth.compose import _ENCODE_BLOCK, _SOUNDFILE_FORMATS

# ----------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    """Ogg's CRC-32 (poly 0x04C11DB7, MSB-first, init 0) via zlib on bit-reversed bytes (C speed)."""
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """Replace the random stream serial libsndfile puts in every Ogg page, then re-checksum pages.

    The Vorbis payload itself is deterministic; only the serial (and so each page CRC) changes run
    to run, which would make identical audio produce different archive bytes.
    """
    out, pos = bytearray(data), 0
    while pos < len(out):
        if out[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = out[pos + 26]
        length = 27 + n_segments + sum(out[pos + 27 : pos + 27 + n_segments])
        out[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        out[pos + 22 : pos + 26] = b"\0\0\0\0"
        out[pos + 22 : pos + 26] = _ogg_crc(bytes(out[pos : pos + length])).to_bytes(4, "little")
        pos += length
    return bytes(out)


def encode_audio(audio: np.ndarray, sr: int, fmt: str, serial: int = 0x6D757369) -> bytes:
    """Encode to FLAC/WAV (PCM_16) or Ogg Vorbis in memory, byte-reproducibly."""
    container, subtype = _SOUNDFILE_FORMATS[fmt]
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", sr, audio.shape[1], subtype=subtype, format=container) as handle:
        for start in range(0, len(audio), _ENCODE_BLOCK):
            handle.write(audio[start : start + _ENCODE_BLOCK])
    data = buffer.getvalue()
    return _fix_ogg_serial(data, serial) if fmt == "ogg" else data
