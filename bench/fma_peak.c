/* The CPU's float32 FMA peak in GFLOP/s, for bench/gemm.py's compute floor: each thread runs
   12 independent chains of 16-float multiply-adds (a * b + c on registers the width of the
   compile target, contracted to FMA with -ffp-contract=fast -march=native) for ~0.3 s; best of 5.
   Usage: fma_peak THREADS */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

typedef float vec __attribute__((vector_size(64)));

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  const long iters = 20000000;
  double best = 0.0;
  float sink = 0.0f;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      vec b, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
      for (int l = 0; l < 16; ++l) {
        b[l] = 0.999f;
        c[l] = 0.0001f;
        a0[l] = a1[l] = a2[l] = a3[l] = a4[l] = a5[l] = 0.001f * (float)l;
        a6[l] = a7[l] = a8[l] = a9[l] = a10[l] = a11[l] = 0.002f * (float)l;
      }
      for (long i = 0; i < iters; ++i) {  /* named accumulators: kept in registers */
        a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
        a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
        a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
      }
      const vec s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
      for (int l = 0; l < 16; ++l) sink += s[l];
    }
    const double s = omp_get_wtime() - t0;
    const double gflops = 2.0 * 12 * 16 * (double)iters * threads / s / 1e9;
    if (gflops > best) best = gflops;
  }
  printf("%.1f %g\n", best, (double)sink);
  return 0;
}
