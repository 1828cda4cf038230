#!/usr/bin/env bash
# Real-music benchmark with the kit in ../shared/bench (see its DESIGN notes):
#   1. fetch ~90 freely licensed game-music tracks and render 1200 degraded queries,
#   2. run this pipeline on them in a scratch copy of the repo (ingest.source = the dev tracks):
#      train on the `train` split only, index ALL tracks,
#   3. identify every query with `musicid identify --json` and score with score.py, twice:
#      on queries from held-out tracks (the figure to report) and on all queries.
# Usage: benchmarks/dev_music.sh [WORKDIR] [extra `key=value` params overrides...]
# Needs: apt-get install -y espeak-ng ffmpeg (for the query generator), the .venv from `make install`.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
KIT=${MUSICID_BENCH_KIT:-$REPO/../shared/bench}
WORK=${1:-/tmp/musicid-dev-music}; shift || true
MUSIC=$WORK/music
export PATH=$REPO/.venv/bin:$PATH DVC_NO_ANALYTICS=1

[ -d "$MUSIC/refs" ] || bash "$KIT/fetch-dev-music.sh" "$MUSIC"
[ -f "$MUSIC/truth.json" ] || python "$KIT/make_queries.py" --refs "$MUSIC/refs" --out "$MUSIC"

PIPE=$WORK/pipeline
if [ ! -d "$PIPE/.git" ]; then
  mkdir -p "$PIPE"
  cp "$REPO/dvc.yaml" "$REPO/params.yaml" "$REPO/.dvcignore" "$PIPE/"
  cp -r "$REPO/.dvc" "$PIPE/" && rm -rf "$PIPE/.dvc/tmp" "$PIPE/.dvc/cache"
  cp -r "$REPO/src" "$PIPE/" && find "$PIPE/src" -name __pycache__ -prune -exec rm -rf {} +   # stages depend on their code
  git -C "$PIPE" init -q
fi
python - "$PIPE/params.yaml" "$MUSIC/refs" "$@" <<'PY'
import sys, yaml
path, refs, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
params = yaml.safe_load(open(path))
params["ingest"]["source"] = refs
params["prepare"].update({"val_fraction": 0.1, "test_fraction": 0.5})
for item in overrides:  # dotted keys: fingerprint.train.epochs=24
    key, value = item.split("=", 1)
    *sections, name = key.split(".")
    node = params
    for section in sections:
        node = node[section]
    node[name] = yaml.safe_load(value)
open(path, "w").write(yaml.safe_dump(params, sort_keys=False))
PY
(cd "$PIPE" && dvc repro fingerprint-index)
(cd "$PIPE" && musicid identify "$MUSIC"/queries/*.wav --model models/fingerprint --index data/index/fingerprint --json > "$WORK/results.jsonl") || true
python - "$PIPE/data/manifests/train.jsonl" "$MUSIC/truth.json" "$WORK/truth-heldout.json" <<'PY'
import json, sys
train = {json.loads(line)["track_id"] for line in open(sys.argv[1])}
truth = json.load(open(sys.argv[2]))
held = {q: t for q, t in truth.items() if t["ref"] not in train}
json.dump(held, open(sys.argv[3], "w"))
print(f"{len(held)} of {len(truth)} queries come from {len({t['ref'] for t in held.values()})} tracks the model never trained on")
PY
echo "== held-out tracks (report this) =="; python "$KIT/score.py" "$WORK/truth-heldout.json" "$WORK/results.jsonl"
echo "== all queries (includes tracks seen in training) =="; python "$KIT/score.py" "$MUSIC/truth.json" "$WORK/results.jsonl"
