"""The work identifier: which composition (work) a performance is a version of.

CoverHunter-style: CQT features of whole performances (`features`), split leak-free by work and
by performance (`split`), a Conformer or CQTNet backbone with attention pooling (`model`) trained
with focal + triplet + center losses (`losses`, `augment`, `train`), ranked by mAP / MR1 on unseen
and seen works (`metrics`, `evaluate`), served from a FAISS index of performances plus work
centroids (`index`, `identify`, `pyfunc`). The declaration the spine uses is `family.FAMILY`.
"""
