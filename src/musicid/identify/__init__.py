"""Query side: embed a query, search the reference index, vote for offset-consistent matches.

    identifier = Identifier(load_model("models/fingerprinter"), load_index("data/index"), IdentifyConfig())
    identifier.identify_path("clip.wav")   # {"query": "clip.wav", "matches": [{"ref", "score", "offset_s"}, ...]}
"""

from musicid.identify.identifier import Identifier
from musicid.identify.voting import vote

__all__ = ["Identifier", "vote"]
