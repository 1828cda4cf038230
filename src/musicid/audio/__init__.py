"""Audio decoding, measurement and resampling."""

from musicid.audio.decode import AUDIO_EXTENSIONS, DecodeError, DecodedAudio, decode, is_audio_path, list_files
from musicid.audio.measure import AudioStats, measure
from musicid.audio.resample import to_mono, to_model_rate

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioStats",
    "DecodeError",
    "DecodedAudio",
    "decode",
    "is_audio_path",
    "list_files",
    "measure",
    "to_model_rate",
    "to_mono",
]
