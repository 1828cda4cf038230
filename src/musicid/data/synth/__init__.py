"""Deterministic synthetic music: the project's built-in dataset of works, each rendered as covers.

Why synthetic: tests, CI and first experiments need audio that behaves like music (harmonic timbres,
rhythm, chord changes, song form) without shipping or downloading copyrighted recordings.

Vocabulary: a *work* is a composition (key, tempo, chord progressions, melody, bass line, drum
groove, song structure with repeated sections). A *version* re-renders a work the way a cover would:
other tempo, key, instruments, mix and small arrangement changes, but the same tune. Fingerprinting
learns "which recording, where in it"; cover identification learns "which composition".

Everything derives from ``SynthConfig.seed`` through independent random streams per (work) and per
(work, version), so one config always yields byte-identical files and growing ``n_works`` never
changes the tracks that already existed.

One module per concern: `compose` (random streams, music theory, melody, bass, drums, song form:
notes only, no audio, so note labels can feed the pitch family), `instruments` (timbres, drum kits),
`render` (version planning, arrangement, mixing → audio), `encode` (FLAC/OGG/WAV bytes), `archive`
(parallel rendering into the tar.gz + metadata.csv).
"""

from musicid.data.synth.archive import build_archive
from musicid.data.synth.compose import (
    METADATA_COLUMNS,
    Chord,
    DrumHit,
    Note,
    Part,
    SectionSpan,
    Work,
    compose_work,
    version_rng,
    work_rng,
)
from musicid.data.synth.encode import encode_audio
from musicid.data.synth.instruments import TIMBRES, make_kit, synth_note
from musicid.data.synth.render import (
    VersionPlan,
    plan_version,
    render_track,
    render_track_preview,
    render_version,
    track_format,
    track_layout,
)

__all__ = [
    "METADATA_COLUMNS", "TIMBRES", "build_archive", "Chord", "compose_work", "DrumHit", "encode_audio", "make_kit",
    "Note", "Part", "plan_version", "render_track", "render_track_preview", "render_version", "SectionSpan",
    "synth_note", "track_format", "track_layout", "version_rng", "VersionPlan", "Work", "work_rng",
]
