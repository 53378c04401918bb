#!/usr/bin/env bash
# The script the lent GPU machine runs for docs/BENCHMARKS.md "On the GPU" (issue #19), in
# two calls (prepare.sh says why): `run.sh stash` with .device-faiss carried, then `run.sh`
# with .device carried. Keras on JAX trains SASRec and NeuMF; FAISS GPU searches 1M and
# 10M items. Prints every figure and writes the JSON and logs under $OUT.
# TRAIN_ARGS / FAISS_ARGS replace the sizes (a CPU smoke run uses small ones); PARTS picks.
set -uo pipefail
STASH=/tmp/streamrec-stash
if [ "${1:-}" = stash ]; then
  mkdir -p "$STASH" && cp .device-faiss/libfaiss.so.xz "$STASH/" && ls -la "$STASH"; exit
fi
[ -f "$STASH/libfaiss.so.xz" ] || { echo "error: no $STASH/libfaiss.so.xz: run 'run.sh stash' on this machine first"; exit 3; }
DEV=.device
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
pip_target() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$@"; }
pip_target /tmp/site "$DEV"/wheels/*.whl && pip_target /tmp/cuda12 "$DEV"/cuda12/*.whl || exit 1
tar -C /tmp/site -xJf "$DEV/faiss.tar.xz" && xz -T0 -dc "$STASH/libfaiss.so.xz" > /tmp/site/faiss/libfaiss.so || exit 1
CUBLAS13=$(find /opt /usr -name libcublas.so.13 2>/dev/null | head -1)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
export LD_LIBRARY_PATH=$PWD/$DEV/lib:/tmp/cuda12/nvidia/cuda_runtime/lib:${CUBLAS13%/*}:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
# Fail in seconds, not minutes, when the stack does not load.
python3 -c "import jax, keras, faiss; print('jax', jax.__version__, jax.devices(), 'keras', \
keras.__version__, 'faiss', faiss.__version__, 'gpus', faiss.get_num_gpus())" || exit 1
quiet() { grep -v -E "absl::|oneDNN|cpu_feature_guard|rebuild TensorFlow|^I0000|^W0000"; }
read -r -a faiss_args <<< "${FAISS_ARGS:---items 1000000 10000000 --nprobe 128 256 512 1024 2048 --nlist 0 50000}"
read -r -a train_args <<< "${TRAIN_ARGS:---steps 0 --seeds 42 43 44}"
PARTS=${PARTS:-cap faiss train}
[[ $PARTS != *cap* ]] || timeout 120 python3 -m benchmarks.gpu cap --out "$OUT/gpu-cap.json" 2>&1 \
  | quiet | tee "$OUT/cap.log"
[[ $PARTS != *faiss* ]] || timeout "${FAISS_TIMEOUT:-180}" python3 -m benchmarks.gpu faiss "${faiss_args[@]}" \
  --out "$OUT/gpu-faiss.json" 2>&1 | quiet | tee "$OUT/faiss.log"
[[ $PARTS != *train* ]] || timeout "${TRAIN_TIMEOUT:-240}" python3 -m benchmarks.gpu train --data "$DEV/ratings.csv" \
  --format movielens "${train_args[@]}" --out "$OUT/gpu-train.json" 2>&1 \
  | quiet | tee "$OUT/train.log"
