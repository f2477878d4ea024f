#!/bin/sh
# Reproduces this directory: release build, the full paper run for seeds 1 and 2, then the ablations of idle CPU
# for speculative runs and of reusing squashed runs' handlers.
set -e
cargo build --release -p cli
B=./target/release/specfaas
D=bench/results/2026-12-03-paper
$B bench paper --seed 1 --out $D/seed-1 2> $D/seed-1.log > /dev/null
$B bench paper --seed 2 --out $D/seed-2 2> $D/seed-2.log > /dev/null
$B bench ablation --piece idle-cpu --seed 1 --json $D/ablation-idle-cpu.json 2> $D/ablation-idle-cpu.log > $D/ablation-idle-cpu.md
$B bench ablation --piece reuse --seed 1 --json $D/ablation-reuse.json 2> $D/ablation-reuse.log > $D/ablation-reuse.md
