#!/bin/bash
# Paired fp32 and fast-path (bf16 + channels_last) sweeps of the demo's arms over seeds 0 1 2, seed by seed,
# into OUT/fp32 and OUT/fast; resumable (a sweep skips its finished runs). Then:
#   .venv/bin/python benchmarks/fast_path_equivalence.py --fp32 OUT/fp32 --fast OUT/fast
# usage: benchmarks/fast_path_equivalence.sh fp32|fast [OUT=runs/eqs] [JOBS=1]   (run the two modes side by side)
# EXTRA: more --set overrides for both modes; the committed figures used the reduced scale
#   EXTRA="n_max=200 test_per_class=100 epochs=4 stabilization_epochs=2 data_root=runs/eqs/data"
set -u
cd "$(dirname "$0")/.."
mode=$1; out=${2:-runs/eqs}; jobs=${3:-1}
case $mode in
  fp32) sets="precision=fp32 memory_format=contiguous" ;;
  fast) sets="precision=bf16 memory_format=channels_last" ;;
  *) echo "usage: $0 fp32|fast [OUT] [JOBS]" >&2; exit 2 ;;
esac
for seed in 0 1 2; do
  t0=$(date +%s)
  echo "$(date -u +%T) start $mode seed$seed"
  .venv/bin/python -m taetlib sweep --preset fmnist_lt_demo --seeds "$seed" --jobs "$jobs" --out "$out/$mode" \
    --set $sets ${EXTRA:-}
  echo "$(date -u +%T) end $mode seed$seed rc=$? $(( $(date +%s) - t0 )) s"
done
