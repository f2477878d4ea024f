#!/usr/bin/env bash
# Runs bench engine and bench handoff for the previous commit's binary (base) and this commit's (new), alternating
# which goes first, two rounds each. Output: one JSON per run.
set -euo pipefail
cd /work/bench-run
base=/work/specfaas-base
new=/work/specfaas-new
for round in 1 2; do
  if [ $round = 1 ]; then order="base new"; else order="new base"; fi
  for side in $order; do
    bin=${!side}
    "$bin" bench engine --iterations 2000 --json engine-$side-$round.json > engine-$side-$round.md
  done
done
for round in 1 2; do
  if [ $round = 1 ]; then order="base new"; else order="new base"; fi
  for side in $order; do
    bin=${!side}
    "$bin" bench handoff --iterations 200 --json handoff-$side-$round.json > handoff-$side-$round.md
  done
done
echo bench-done
