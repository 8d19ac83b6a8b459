#!/usr/bin/env bash
# Makes docs/img/trajectory_dfa.png (README, docs/trajectory.md): the shipped DFA recipe saving a checkpoint
# every 125 steps (fadiag.examples.train_trajectory), then `fadiag trajectory --plot` over the run.
# Run from the repository root: bash docs/img/make_trajectory_dfa.sh [RUN_DIR]
set -euo pipefail
run="${1:-$(mktemp -d)/dfa}"
python -m fadiag.examples.train_trajectory --out "$run" --every 125
python -m fadiag trajectory "$run" --spec "$run/run.yaml" --plot docs/img/trajectory_dfa.png --exit-zero -q \
    -f json -o "$run/trajectory.json"
echo "docs/img/trajectory_dfa.png from $run"
