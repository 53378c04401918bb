#!/usr/bin/env bash
# Run here, with network, before benchmarks/device/run.sh runs on the lent GPU machine.
# That machine has Python 3.12, CUDA 13, JAX and PyTorch but nothing else we need, and it
# cannot download; each call to it carries at most 64 MiB. This gathers what it lacks into
# two git-ignored folders, one per call:
#   .device        Keras and its missing wheels, the CUDA 12 runtime, the cuBLAS 12 shim
#                  (cublas12_shim.c says why), FAISS GPU without its main library, the log
#   .device-faiss  that library (200 MB, 60 MB as xz): `run.sh stash` keeps it on the
#                  machine, and `run.sh` (the next call, within the 30 s it stays warm)
#                  puts it back.
# faiss-gpu 1.15.1, as in the gpu extra, not faiss-gpu-cu12 1.14.1, which has no
# kernels for the H200's sm_90 ("no kernel image is available"), seen on the device.
#
#   benchmarks/device/prepare.sh [CPU-REFERENCE.json]
set -euo pipefail
DEV=.device
DATA=${DATA:-../shared/data/ml-latest-small/ratings.csv}
HERE=$(dirname "$0")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$DEV" "$DEV-faiss" && mkdir -p "$DEV/wheels" "$DEV/cuda12" "$DEV/lib" "$DEV-faiss"
for folder in "/$DEV/" "/$DEV-faiss/"; do
  grep -qsx "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
done
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"
}
download "$DEV/wheels" keras==3.15.1 namex==0.1.0 optree==0.20.0 orjson==3.13.0
download "$DEV/cuda12" nvidia-cuda-runtime-cu12==12.9.79
download "$WORK" faiss-gpu==1.15.1
unzip -q "$WORK"/faiss_gpu-*.whl -d "$WORK/faiss"
# Without its _gpu_build marker faiss skips preloading CUDA from nvidia-* wheels, which the
# machine lacks; LD_LIBRARY_PATH in run.sh finds the libraries instead.
rm "$WORK/faiss/faiss/_gpu_build.py"
xz -T0 -6 -c "$WORK/faiss/faiss/libfaiss.so" > "$DEV-faiss/libfaiss.so.xz"
rm "$WORK/faiss/faiss/libfaiss.so"
tar -C "$WORK/faiss" -cJf "$DEV/faiss.tar.xz" faiss faiss_gpu.libs
gcc -O2 -shared -fPIC -Wl,-soname,libcublas.so.12 -Wl,--version-script="$HERE/cublas12.map" \
  -o "$DEV/lib/libcublas.so.12" "$HERE/cublas12_shim.c" -ldl
# FAISS names libcublasLt.so.12 as needed but calls nothing in it.
gcc -shared -fPIC -x c /dev/null -Wl,-soname,libcublasLt.so.12 -o "$DEV/lib/libcublasLt.so.12"
cp "$DATA" "$DEV/ratings.csv"
if [ $# -gt 0 ]; then cp "$1" "$DEV/cpu-train.json"; fi
du -sh "$DEV" "$DEV-faiss"
