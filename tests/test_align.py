"""Alignment re-ranking: a transposed, slower version of a melody aligns far better than another melody."""

from __future__ import annotations

import numpy as np

from musicid.config import WorksRerankConfig
from musicid.families.works.align import Aligner, chroma_recipe, chroma_sequence, fold_chroma, pitch_classes, rerank_distances

CFG = WorksRerankConfig(average_frames=1, embed_frames=5)


def melody_chroma(notes: np.ndarray, frames_per_note: int, shift: int = 0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(frames, 12) chroma of a melody: each note's pitch class (+ its fifth, softer) held for some frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for note in notes:
        column = np.full(12, 0.05)
        column[(note + shift) % 12] = 1.0
        column[(note + shift + 7) % 12] = 0.4
        frames += [column + noise * rng.random(12) for _ in range(frames_per_note)]
    return np.asarray(frames, dtype=np.float32)


def test_fold_chroma_sums_each_pitch_class_over_octaves_and_sub_bins() -> None:
    cqt = np.zeros((3, 48), dtype=np.float32)  # two octaves at 24 bins per octave
    cqt[:, 2] = 1.0   # pitch class 1 (bins 2 and 3), octave 1
    cqt[:, 27] = 2.0  # pitch class 1, octave 2
    chroma = fold_chroma(cqt, 24)
    assert chroma.shape == (3, 12) and np.allclose(chroma[:, 1], 3.0) and np.allclose(np.delete(chroma, 1, axis=1), 0)
    assert chroma_sequence(np.ones((7, 12)), 3).shape == (2, 12)


def test_alignment_finds_a_transposed_slower_version_and_not_another_melody() -> None:
    rng = np.random.default_rng(1)
    melody, other = rng.integers(0, 12, 40), rng.integers(0, 12, 40)
    query = Aligner(melody_chroma(melody, 4, noise=0.2, seed=1), CFG)
    version = query.score(melody_chroma(melody, 5, shift=3, noise=0.2, seed=2))  # 25 % slower, a minor third up
    stranger = query.score(melody_chroma(other, 4, noise=0.2, seed=3))
    assert version > 2 * stranger, (version, stranger)


def test_rerank_reorders_only_the_top_k_and_skips_self_matches() -> None:
    rng = np.random.default_rng(2)
    melodies = [rng.integers(0, 12, 30) for _ in range(4)]
    chroma = [melody_chroma(m, 4, seed=i) for i, m in enumerate(melodies)]
    chroma.append(melody_chroma(melodies[0], 5, shift=2, seed=9))  # a version of performance 0
    # the embedding ranks the version of 0 last among 0's candidates
    distances = np.array([[0.0, 0.1, 0.2, 0.3, 0.4]] * 5)
    self_mask = np.eye(5, dtype=bool)
    assert rerank_distances(distances, chroma, chroma, CFG.model_copy(update={"top_k": 0})) is distances
    out = rerank_distances(distances, chroma, chroma, CFG.model_copy(update={"top_k": 4}), self_mask)
    assert out[0, 0] == 0.0  # the self match is never aligned
    assert int(np.argmin(np.where(self_mask[0], np.inf, out[0]))) == 4  # the version now comes first
    narrow = rerank_distances(distances, chroma, chroma, CFG.model_copy(update={"top_k": 2}), self_mask)
    assert (narrow[0, 1:3] < 0).all() and np.allclose(narrow[0, 3:], distances[0, 3:])  # only the 2 nearest aligned


def test_harmonic_pitch_classes_put_a_notes_overtones_back_on_its_own_pitch_class() -> None:
    """A C with strong partials (octave, twelfth = G, two octaves): the harmonic profile gives C a larger share."""
    cqt = np.zeros((2, 96), dtype=np.float32)  # 8 octaves at 12 bins per octave from C1
    for partial, level in ((24, 1.0), (36, 0.8), (43, 0.7), (48, 0.6)):  # C3 and its harmonics 2, 3, 4
        cqt[:, partial] = level
        cqt[:, partial - 1] = cqt[:, partial + 1] = 0.3 * level  # leakage into the neighbouring bins
    plain = fold_chroma(cqt, 12).astype(np.float32)
    harmonic = pitch_classes(cqt, 12, {"peaks": True, "harmonic_weight": 0.6, "harmonics": 4}).astype(np.float32)
    share = lambda chroma: chroma[0, 0] / chroma[0].sum()  # noqa: E731
    assert share(harmonic) > share(plain) + 0.15, (share(plain), share(harmonic))
    assert plain[0, 1] > 0 and plain[0, 11] > 0  # leakage into the neighbouring pitch classes, folded as is
    assert harmonic[0, 1] == 0 and harmonic[0, 11] == 0  # peaks only: gone
    same = pitch_classes(cqt, 12, {"peaks": False, "harmonic_weight": 0.0})
    assert np.array_equal(same, fold_chroma(cqt, 12))  # the recipe an older index records is the plain fold
    assert chroma_recipe(CFG) == {"peaks": True, "harmonic_weight": 0.6, "harmonics": 4}
