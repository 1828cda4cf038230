"""The open-set threshold: below it, a best match means "this clip is not in the catalog"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OpenSetThreshold:
    """The lowest score a match needs, as a function of the query's segment count.

    Why per length: a score is the offset-consistent share of the query's segments that hit one
    reference. A wrong reference collects a few chance hits, so its score falls as the query
    grows (measured on real music: the 99th percentile of wrong best scores goes from 0.93 at 1 s
    to 0.57 at 10 s) while right answers score alike at every length. One flat threshold would
    then be loose for short queries and needlessly strict for long ones. Calibrated at each
    evaluated length (and interpolated in log segment count between them, held flat outside),
    the threshold means the same false-positive rate at every query length.
    """

    segments: tuple[float, ...]
    min_scores: tuple[float, ...]

    def at(self, segments: float) -> float:
        return float(np.interp(np.log(max(float(segments), 1.0)), np.log(self.segments), self.min_scores))

    def to_dict(self) -> dict[str, list[float]]:
        return {"segments": list(self.segments), "min_scores": list(self.min_scores)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OpenSetThreshold":
        return cls(tuple(float(x) for x in data["segments"]), tuple(float(x) for x in data["min_scores"]))

    @classmethod
    def fit(cls, impostors: list[np.ndarray], segments: list[float], target_fpr: float) -> "OpenSetThreshold":
        """Per length, the lowest score letting ≤ target_fpr of its impostors through (never rising
        with length: a longer query needs no more than a shorter one)."""
        pairs = sorted((max(n, 1.0), float(np.nextafter(np.quantile(s, 1.0 - target_fpr, method="higher"), np.inf)))
                       for s, n in zip(impostors, segments) if len(s))
        if not pairs:
            return cls((1.0,), (1.0,))
        counts = [n for n, _ in pairs]
        # answers print scores to 6 decimals: round up, so a printed score compares as computed
        cuts = np.ceil(np.maximum.accumulate(np.array([c for _, c in pairs])[::-1])[::-1] * 1e6) / 1e6
        return cls(tuple(counts), tuple(float(c) for c in cuts))
