#!/usr/bin/env bash
# Nightly-style soak: the thorough profile (200 random drawn cases per layer and dtype, plus every
# documented example and edge case) under several Hypothesis seeds. Prints one line per seed and,
# for any failure, the report with its reproduce commands. Exit status 1 if any seed failed.
#
#   scripts/soak.sh                  # 20 seeds, tf and torch
#   SEEDS="1 2 3" IMPLS="--impl numpy" scripts/soak.sh
set -uo pipefail
cd "$(dirname "$0")/.."
seeds=${SEEDS:-$(seq 1 20)}
impls=${IMPLS:---impl tf --impl torch}
reports=${REPORTS:-reports/soak}
mkdir -p "$reports"
failed=0
for seed in $seeds; do
    # shellcheck disable=SC2086  # impls is a list of arguments
    if attnconf check $impls --profile thorough --seed "$seed" --report "$reports/seed-$seed.md" >"$reports/seed-$seed.txt" 2>&1; then
        echo "seed $seed: $(grep -m1 -E '^(all checks passed|[0-9]+ failure)' "$reports/seed-$seed.txt")"
    else
        failed=1
        echo "seed $seed: FAILED; report in $reports/seed-$seed.md"
        grep -A3 "reproduce:" "$reports/seed-$seed.txt" | head -n 40
    fi
done
exit $failed
