/* libcublas.so.12 for a machine that has only cuBLAS 13 and no network (the lent GPU
 * machine: CUDA 13 image, nothing can be downloaded, and a cuBLAS 12 wheel is over the
 * 64 MiB that may travel to it). FAISS GPU calls eight cuBLAS functions, whose
 * signatures are unchanged in cuBLAS 13; each one here jumps to its cuBLAS 13 twin,
 * looked up once when the library loads. Used only by benchmarks/device/run.sh; a normal
 * `pip install streamrec[gpu]` gets the real cuBLAS 12 from PyPI. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#define FORWARDED                                                                  \
  X(cublasCreate_v2) X(cublasDestroy_v2) X(cublasGemmEx) X(cublasGemmStridedBatchedEx) \
  X(cublasGetMathMode) X(cublasSetMathMode) X(cublasSetStream_v2) X(cublasSgemmEx)

#define X(name) __attribute__((visibility("hidden"), used)) void *target_##name;
FORWARDED
#undef X

__attribute__((constructor)) static void resolve(void) {
  void *cublas13 = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
  if (!cublas13) {
    fprintf(stderr, "cublas12 shim: %s\n", dlerror());
    abort();
  }
#define X(name)                                                              \
  if (!(target_##name = dlsym(cublas13, #name))) {                           \
    fprintf(stderr, "cublas12 shim: libcublas.so.13 lacks %s\n", #name);     \
    abort();                                                                 \
  }
  FORWARDED
#undef X
}

/* x86-64 tail jumps: the arguments stay in their registers and on the stack. */
#define X(name) __asm__(".globl " #name "\n.type " #name ", @function\n" #name \
                        ":\n\tjmp *target_" #name "(%rip)\n");
FORWARDED
#undef X
