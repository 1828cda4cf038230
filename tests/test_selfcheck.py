"""The known answer a served model is compared against (tracking/selfcheck.py): what counts as the same answer."""

from __future__ import annotations

import json

from musicid.tracking.selfcheck import differs, encode_known_answer, normalised


def test_per_request_fields_and_float_noise_do_not_count() -> None:
    registered = {"query": "/tmp/a.audio", "matched": True,
                  "matches": [{"ref": "w1", "score": 0.9994641, "offset_s": 1.2500001}]}
    served = {"query": "/tmp/b.audio", "matched": True, "warning": "/tmp/b.audio: short",
              "matches": [{"ref": "w1", "score": 0.99946, "offset_s": 1.25}]}
    assert differs(encode_known_answer(registered), served) is None


def test_another_reference_or_score_is_a_changed_answer() -> None:
    registered = encode_known_answer({"matches": [{"ref": "w1", "score": 0.91}, {"ref": "w2", "score": 0.5}]})
    why = differs(registered, {"matches": [{"ref": "w2", "score": 0.91}, {"ref": "w1", "score": 0.5}]})
    assert why is not None and why.startswith("known answer changed: registered")
    assert differs(registered, {"matches": [{"ref": "w1", "score": 0.95}, {"ref": "w2", "score": 0.5}]}) is not None


def test_long_answers_keep_their_head_within_an_mlflow_tag() -> None:
    notes = {"notes": [{"onset_s": i * 0.1, "offset_s": i * 0.1 + 0.05, "pitch": 60 + i % 12, "velocity": 0.5}
                       for i in range(2000)]}
    assert len(normalised(notes)["notes"]) == 5
    assert len(encode_known_answer(notes)) <= 5000 and json.loads(encode_known_answer(notes))["notes"][0]["pitch"] == 60
