#!/usr/bin/env bash
# On the GPU machine: the same benchmark suites on an earlier tree and on this one, in one call, so that
# a refactor's speed can be compared on one card. The earlier tree travels as an ignored folder:
#   git archive REV pyramid_core | (mkdir -p .before && tar -x -C .before)   # here, then carry .before
#   bash benchmarks/before_after.sh engine "table1 --skip-max-batch --batch32-methods engine-baseline,pyramid-45"
# Each suite argument is a `bench` command line; results land in $OUT/before_* and $OUT/after_*.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
for suite in "$@"; do
  name=${suite%% *}
  for side in before after; do
    echo "=== $side $suite $(date +%T)"
    dir=$PWD; [ "$side" = before ] && dir=$PWD/.before
    (cd "$dir" && python3 -m pyramid_core bench $suite --out "$OUT/${side}_$name") 2>&1 | grep -v Warning | tail -12
  done
done
