#!/bin/sh
# Reproduces this directory: release build, then the full paper run for seeds 1 and 2 with the handler-pool
# policy of e00a05a and its fixes in the next commit (no handler started for speculative runs; clean finished ones give their handler back at once)
# and the handler counters of 077ad49.
set -e
cargo build --release -p cli
B=./target/release/specfaas
D=bench/results/2026-12-03-pool
$B bench paper --seed 1 --out $D/seed-1 2> $D/seed-1.log > /dev/null
$B bench paper --seed 2 --out $D/seed-2 2> $D/seed-2.log > /dev/null
