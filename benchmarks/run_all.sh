#!/usr/bin/env bash
# Regenerate every table in benchmarks/results/, one benchmark after another (the machine should be otherwise
# idle: timings are taken side by side inside each script, but a busy machine still adds noise).
# Usage: bash benchmarks/run_all.sh [speed compress classical methods text]   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
which=("$@")
[ ${#which[@]} -eq 0 ] && which=(speed compress classical methods text)

# The shared teacher: the demo's teacher architecture (cnn width 16), trained 10 epochs on all of Fashion-MNIST.
if [ ! -f benchmarks/cache/teacher/model.json ]; then
  .venv/bin/distill train configs/demo.yaml --set teacher.train.epochs=10 --out benchmarks/cache/teacher_run --overwrite
  cp -r benchmarks/cache/teacher_run/teacher benchmarks/cache/teacher
fi
for b in "${which[@]}"; do
  start=$(date +%s)
  case $b in
    speed) $PY benchmarks/speed.py --train-subset 20000 ;;
    compress) $PY benchmarks/compress.py ;;
    classical) $PY benchmarks/classical.py ;;
    methods) $PY benchmarks/methods.py --train-subset 8000 --budget-minutes 40 --force ;;
    text) $PY benchmarks/text.py ;;
    *) echo "unknown benchmark $b" >&2; exit 2 ;;
  esac
  echo "== $b took $(( $(date +%s) - start )) s"
done
