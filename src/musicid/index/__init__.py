"""Reference index for any family: embeddings of reference recordings in FAISS plus an id map.

A family's loaded model is an `Embedder` (signature, embedding_dim, sample_rate, segment_s,
embed_segments); the index never knows which family made it, only the model signature it records.

    refs = index_refs_from_folder("music/")           # or index_refs_from_manifest(refs.jsonl, root)
    meta = build_index(refs, loaded_model, "data/index/fingerprint", IndexConfig())   # segments every hop_s
    meta = write_vector_index("data/index/works", vectors, refs, meta, IndexConfig())  # one vector per ref
    index = load_index("data/index/fingerprint", expected_signature=loaded.signature)
    scores, track_index, offset_s = index.search(embeddings, k=20)
"""

from musicid.index.build import (
    IndexSignatureError,
    RefIndexError,
    build_index,
    index_refs_from_folder,
    index_refs_from_manifest,
    partial_dir,
    write_vector_index,
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
    "write_vector_index",
]
