# The two set-up commands from README: `make demo` and `make test`. Both create .venv and install
# everything they need on a fresh machine (Python 3.11 with venv + pip is all that is assumed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml 2>/dev/null | cut -c1-12)
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg

.PHONY: install debian-packages browser-packages team-packages team-up team-down demo test test-team test-faults test-fast bench clean-venv

# Debian packages: fluidsynth + the FluidR3 GM soundfont render the chorales (pitch-notes-render).
DEBIAN_PACKAGES := fluidsynth fluid-soundfont-gm
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2

debian-packages:
	@if ! command -v fluidsynth >/dev/null || [ ! -f $(SOUNDFONT) ]; then \
		echo "installing Debian packages: $(DEBIAN_PACKAGES)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; fi; \
	fi

# The team set-up (README "Team set-up"; tests/test_team.py, tests/test_ssh_remote.py): PostgreSQL for the
# MLflow server's backend store, OpenSSH's server for the SSH DVC remote the tests start on loopback.
TEAM_PACKAGES := postgresql openssh-server openssh-client
team-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then \
		echo "installing Debian packages: $(TEAM_PACKAGES)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEAM_PACKAGES) >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEAM_PACKAGES) >/dev/null; fi; \
	fi

# Headless Chromium + its WebDriver: tests/test_serve.py drives `musicid serve`'s web page with selenium.
BROWSER_PACKAGES := chromium chromium-driver
browser-packages:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing Debian packages: $(BROWSER_PACKAGES)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; \
		else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PACKAGES) >/dev/null; fi; \
	fi

team-up: install team-packages
	$(BIN)/musicid team up

team-down: install
	$(BIN)/musicid team down

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: debian-packages $(STAMP)

# Every stage but the production trainers (`dvc repro works-train-prod fingerprint-train-prod`: K folds + a final
# run each, minutes more).
DEMO_STAGES := fingerprint-report works-report pitch-report pitch-transcribe-report

demo: install
	@start=$$(date +%s); \
	dvc repro $(DEMO_STAGES) && \
	echo && echo "dvc status (should report no changes):" && dvc status --with-deps $(DEMO_STAGES) && \
	echo && echo "== pipeline finished in $$(( $$(date +%s) - start )) s ==" && \
	musicid data inspect data/ingested && \
	musicid data validate data/manifests && \
	musicid store info data/shards/fingerprint/{train,val,test}.zarr data/shards/works/{train,val,test}.zarr \
		data/shards/pitch/polyphonic-train.zarr data/shards/pitch-notes/chorales-train.zarr && \
	echo && echo "== fingerprint evaluation on held-out tracks (reports/fingerprint/eval/metrics.json) ==" && musicid metrics && \
	echo && echo "== works evaluation (reports/works/eval/metrics.json) ==" && musicid works metrics && \
	echo && echo "== pitch evaluation on held-out generated windows (reports/pitch/eval/metrics.json) ==" && musicid pitch metrics && \
	$(BIN)/python -c "import json, soundfile as sf; t = json.loads(open('data/manifests/test.jsonl').readline()); \
	a, r = sf.read('data/ingested/' + t['path']); sf.write('reports/demo-clip.wav', a[12 * r:17 * r], r); \
	print('\n== clip for identify: 5 s cut at 12 s from', t['track_id'], '=='); \
	w = [json.loads(l) for l in open('data/splits/works/test.jsonl') if json.loads(l)['role'] == 'test_unseen'][0]; \
	open('reports/demo-performance.txt', 'w').write('data/ingested/' + w['path']); \
	print('== performance for works identify:', w['track_id'], 'of work', w['work_id'], '(a work the model never trained on) ==')" && \
	echo && echo "== model registry (MLflow, mlflow.db): promote each family's candidate through its release gates ==" && \
	musicid registry promote candidate --alias champion --all && \
	scripts/together.sh \
		"musicid registry compare --all" \
		"echo; musicid identify reports/demo-clip.wav --top 3" \
		"echo; musicid works identify '$$(cat reports/demo-performance.txt)' --top 3" \
		"echo; echo '== pitches of the same clip, every 0.5 s (musicid-pitch @champion) =='; \
		 musicid pitch predict reports/demo-clip.wav --hop 22050" \
		"echo; echo '== notes of a chorale test piece (musicid-transcriber @champion) → reports/pitch/demo-notes/ =='; \
		 musicid transcribe data/labelled/pitch/chorales/audio/$$(awk -F, '$$3 == "test" {print $$1; exit}' data/labelled/pitch/chorales/tracks.csv).flac \
			--out reports/pitch/demo-notes" \
		"echo; echo '== transcription records (MLflow; dvc exp run -S pitch_onset.pos_weight=2 pitch-transcribe-report adds a row) =='; \
		 musicid pitch records" && \
	echo && echo "Results: data/ (archive, catalog, manifests, splits, shards, indexes), models/{fingerprint,works}/," && \
	echo "         reports/{fingerprint,works}/ (train, eval: metrics + plots; model-card.md, benchmark-report.md," && \
	echo "         release-checklist.md), mlflow.db (runs + registry: mlflow ui --backend-store-uri sqlite:///mlflow.db)."

# `make test`: the suite but two jobs kept apart so it stays within 15 minutes on 2 cores: `make test-team`
# (PostgreSQL + MLflow server, sshd, DDP processes, a Dask cluster: each started for real) and
# `make test-faults` (every stage of the tiny pipeline killed and rerun). .ci/run runs all three.
test: install browser-packages
	$(BIN)/python -m pytest -m "not team and not faults"

test-team: install team-packages
	$(BIN)/python -m pytest -m team

test-faults: install
	$(BIN)/python -m pytest -m faults

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/shard_read.py

clean-venv:
	rm -rf $(VENV)
