#!/usr/bin/env bash
# team.sh up|down|status [options]: the team's MLflow tracking server on PostgreSQL (musicid team ...).
# `up` installs PostgreSQL when missing (Debian), initialises a cluster, role and database in .team/ on
# first use, starts the server with proxied artifacts and prints the MLFLOW_TRACKING_URI to export.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory install team-packages >/dev/null
exec .venv/bin/musicid team "$@"
