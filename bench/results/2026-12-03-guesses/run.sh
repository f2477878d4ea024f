#!/bin/sh
# Reproduces this directory: release build, the full paper run for seeds 1 and 2, then the ablation of
# field-by-field output guesses (`[engine] field_guesses`).
set -e
cargo build --release -p cli
B=./target/release/specfaas
D=bench/results/2026-12-03-guesses
$B bench paper --seed 1 --out $D/seed-1 2> $D/seed-1.log > /dev/null
$B bench paper --seed 2 --out $D/seed-2 2> $D/seed-2.log > /dev/null
$B bench ablation --piece fields --seed 1 --json $D/ablation-fields.json 2> $D/ablation-fields.log > $D/ablation-fields.md
