#!/usr/bin/env bash
# The methods table (benchmarks/methods.py, the same protocol) on CUDA with AMP (bf16) and channels_last, into
# benchmarks/results/methods_gpu.{json,md} (the shape of methods.json, plus "checks"), within about 10 minutes of
# GPU time:
#   1. checks (~1-2 min): throughput in images/s of the student alone, KD from the teacher cache and KD with the
#      teacher every step; fp16 autocast with the grad scaler; bf16 + channels_last; torch.compile; one-process
#      DDP under torchrun (NCCL). Each passes or fails on its own; all go into the JSON under "checks".
#   2. the table: WORKERS processes (default 12) share the GPU, each taking an interleaved part of the (method,
#      seed) runs (methods.py --shard I/N), stopped after TABLE_SECONDS (default 360). Every finished run is kept in
#      benchmarks/cache/gpu/ and an unfinished one checkpoints each epoch, so a later call continues where this one
#      stopped; the results say which rows are complete.
#   3. methods.py --collect-only writes the results.
#
# Usage:
#   bash benchmarks/gpu.sh                      # on a CUDA machine
#   bash benchmarks/gpu.sh --stage-data         # here, before: copy Fashion-MNIST into benchmarks/cache/data/
#                                               # (ignored by git; carry benchmarks/cache/data to a machine
#                                               # without network, the script finds it there)
#   bash benchmarks/gpu.sh --cpu-check          # the same script on the CPU: one method, one epoch, a small subset,
#                                               # into benchmarks/cache/gpu-cpu-check/methods_gpu.json
# Extra arguments after the mode go to methods.py's table run (e.g. --epochs 10 --train-subset 20000).
# Data: $DISTILL_DATA when set; else /usr/share/datasets/fashion-mnist; else benchmarks/cache/data/fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

mode=gpu
case "${1:-}" in
  --cpu-check) mode=cpu; shift ;;
  --stage-data)
    mkdir -p benchmarks/cache/data/fashion-mnist
    cp -v /usr/share/datasets/fashion-mnist/*-ubyte.gz benchmarks/cache/data/fashion-mnist/
    echo "staged: carry benchmarks/cache/data (about 30 MB) to the GPU machine"
    exit 0 ;;
esac

if [ -z "${DISTILL_DATA:-}" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ -f benchmarks/cache/data/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    export DISTILL_DATA="$ROOT/benchmarks/cache/data"
  else
    echo "Fashion-MNIST not found: set DISTILL_DATA, install dataset-fashion-mnist, or run" \
      "'bash benchmarks/gpu.sh --stage-data' on a machine that has it and carry benchmarks/cache/data" >&2
    exit 2
  fi
fi

start=$(date +%s)
if [ "$mode" = cpu ]; then
  # The whole path on the CPU in seconds: checks on a small subset, then one method for one epoch.
  out=${OUT_DIR:-benchmarks/cache/gpu-cpu-check}
  cache=$out/cache
  rm -rf "$cache" "$out/checks.json" "$out/methods_gpu.json" "$out/methods_gpu.md"; mkdir -p "$cache"
  $PY benchmarks/methods.py --device cpu --checks "$out/checks.json" --throughput-images "${CHECK_IMAGES:-512}"
  table=(--device cpu --amp bf16 --channels-last --methods kd --epochs 1 --seeds 2 --train-subset 512
         --val-subset 256 --test-subset 256 --cache "$cache" --out "$out" --name methods_gpu --force)
  workers=${WORKERS:-2}
else
  $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --cpu-check')"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # many processes share the CPU cores; the work is on the GPU
  out=${OUT_DIR:-benchmarks/results}
  cache=benchmarks/cache/gpu
  mkdir -p "$cache"
  timeout ${CHECK_SECONDS:-180} $PY benchmarks/methods.py --device cuda --amp bf16 --channels-last \
    --checks "$cache/checks.json" --throughput-images ${CHECK_IMAGES:-20000} || echo "checks stopped: $?" >&2
  table=(--device cuda --amp bf16 --channels-last --cache "$cache" --out "$out" --name methods_gpu --force)
  workers=${WORKERS:-12}
fi
checks_s=$(( $(date +%s) - start ))

# The table: interleaved shards in parallel, stopped (SIGTERM: a checkpoint, then exit) after TABLE_SECONDS.
pids=()
for ((i = 0; i < workers; i++)); do
  timeout --kill-after=30 ${TABLE_SECONDS:-360} $PY benchmarks/methods.py "${table[@]}" --shard "$i/$workers" "$@" \
    >"$cache/worker-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
[ $status -eq 0 ] || echo "a worker stopped with status $status (time limit or error; see $cache/worker-*.log)" >&2
tail -n 3 "$cache"/worker-*.log || true

att=$cache/checks.json
[ "$mode" = cpu ] && att=$out/checks.json
METHODS_WORKERS=$workers $PY benchmarks/methods.py "${table[@]}" "$@" --collect-only --attach "$att"
echo "gpu.sh ($mode): checks ${checks_s} s, all $(( $(date +%s) - start )) s; results in $out/methods_gpu.json"
