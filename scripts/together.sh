#!/usr/bin/env bash
# together.sh CMD...: run independent shell commands at once, print each one's output (stdout and
# stderr) in the order given, and exit 1 naming every command that failed.
# Why: the demo's answers (registry table, identify, works identify, pitches, notes, records) each
# spend seconds importing torch and MLflow on one core; side by side they take about half as long.
set -u
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cmds=("$@")
pids=()
for i in "${!cmds[@]}"; do
	bash -c "${cmds[$i]}" >"$out/$i" 2>&1 &
	pids[i]=$!
done
failed=()
for i in "${!cmds[@]}"; do
	wait "${pids[i]}" || failed+=("${cmds[$i]}")
done
for i in "${!cmds[@]}"; do
	cat "$out/$i"
done
for cmd in "${failed[@]+"${failed[@]}"}"; do
	echo "failed: $cmd" >&2
done
[ ${#failed[@]} -eq 0 ]
