#!/bin/sh
# Reproduces this directory: release build, the ablation, then the full paper run for seed 1 (and seed 2).
set -e
cargo build --release -p cli
B=./target/release/specfaas
D=bench/results/2026-12-02-paper
$B bench ablation --seed 1 --json $D/ablation.json 2> $D/ablation.log > $D/ablation.md
$B bench paper --seed 1 --out $D/seed-1 2> $D/seed-1.log > /dev/null
$B bench paper --seed 2 --out $D/seed-2 2> $D/seed-2.log > /dev/null
