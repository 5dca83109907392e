#!/usr/bin/env bash
# Regenerate every table in benchmarks/results/, one benchmark after another (the machine should be otherwise
# idle: timings are taken side by side inside each script, but a busy machine still adds noise).
# Usage: bash benchmarks/run_all.sh [speed compress classical methods text]   (default: all of them)
# Long ones on 2 cores: methods (convergence check, then 54 runs: hours; resumable, rerun to continue),
# compress (the ResNet-8x4 teacher, once, then three compress runs: about 1.5 h the first time).
# The methods table on a CUDA machine instead: bash benchmarks/gpu.sh (methods_gpu.json, about 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
which=("$@")
[ ${#which[@]} -eq 0 ] && which=(speed compress classical methods text)

# The shared teacher of classical and compress's small row: cnn width 16 (72.7K parameters), the demo teacher's
# recipe (configs/demo_teacher.yaml: 10 epochs on the 55,000 training images of the seed-0 split) at that width.
if [ ! -f benchmarks/cache/teacher/model.json ]; then
  .venv/bin/distill train configs/demo_teacher.yaml --set teacher.kwargs.width=16 --out benchmarks/cache/teacher_run \
    --overwrite
  cp -r benchmarks/cache/teacher_run/teacher benchmarks/cache/teacher
fi
for b in "${which[@]}"; do
  start=$(date +%s)
  case $b in
    speed) $PY benchmarks/speed.py --train-subset 20000 ;;
    compress) $PY benchmarks/compress.py ;;
    classical) $PY benchmarks/classical.py ;;
    methods)
      $PY benchmarks/methods.py --convergence    # scratch at E and 2E: protocol.scratch_E / scratch_2E
      $PY benchmarks/methods.py --force --workers 2 ;;   # two one-thread processes side by side
    text) $PY benchmarks/text.py ;;
    *) echo "unknown benchmark $b" >&2; exit 2 ;;
  esac
  echo "== $b took $(( $(date +%s) - start )) s"
done
