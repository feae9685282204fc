#!/usr/bin/env bash
# The README's Wikipedia table: every method at 16/32/64 bits plus the CCA-sign baseline, on
# the official split (693 queries, 2173 train = retrieval), then report.py writes the table.
#   bash experiments/reproduce_wikipedia.sh [DATA_DIR] [METHOD ...]
# Per-method settings are the --set values below (the table's "settings" column repeats them).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/wikipedia}
shift || true
methods=${*:-"cca dcmh dcph mmach hsidhn uchm mdch"}
out=results/wikipedia
mkdir -p "$out"
declare -A settings=(
  [dcmh]="--epochs 150 --batch-size 32 --set init=fan_in --set lr=0.03"
  [dcph]=""
  [mmach]="--epochs 50"
  [hsidhn]="--set eta=0.1"
  [uchm]=""
  [mdch]="--set init=fan_in --set lr=0.01 --set eta=0.1"
)
for m in $methods; do
  for bits in 16 32 64; do
    if [ "$m" = cca ]; then
      python experiments/cca_baseline.py --dataset=wikipedia --data-dir="$data" --bits=$bits \
        --out "$out/cca-sign-${bits}.json"
    else
      # shellcheck disable=SC2086
      python experiments/run.py --method=$m --dataset=wikipedia --data-dir="$data" --bits=$bits \
        ${settings[$m]} --no-progress --no-checkpoint --overwrite --out "$out/$m-$bits.json"
    fi
  done
done
python experiments/report.py "$out"/*.json --readme README.md --section wikipedia
