"""Reference index: every reference track embedded every `index.hop_s`, in FAISS plus an id map.

    refs = index_refs_from_folder("music/")           # or index_refs_from_manifest(refs.jsonl, root)
    meta = build_index(refs, load_model("models/fingerprinter"), "data/index", IndexConfig())
    index = load_index("data/index", expected_signature=loaded.signature)
    scores, track_index, offset_s = index.search(embeddings, k=20)
"""

from musicid.index.build import (
    IndexSignatureError,
    RefIndexError,
    build_index,
    index_refs_from_folder,
    index_refs_from_manifest,
    partial_dir,
)
from musicid.index.search import RefIndex, load_index

__all__ = [
    "IndexSignatureError",
    "RefIndex",
    "RefIndexError",
    "build_index",
    "index_refs_from_folder",
    "index_refs_from_manifest",
    "load_index",
    "partial_dir",
]
