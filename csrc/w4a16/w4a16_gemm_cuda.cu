// CUDA W4A16 GEMM (prefill, M > kGemvMaxM): 64 x 64 output tiles, K in steps of 32.
//
// Each step loads an x tile [64, 32] (as float32) and the packed weight tile [32, 8 words],
// dequantizing every word into 8 float32 columns of shared memory on load; each of the 256
// threads then accumulates a 4 x 4 block of outputs.
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int kBlockM = 64;
constexpr int kBlockN = 64;
constexpr int kBlockK = 32;
constexpr int kThreads = 256;
constexpr int kTileWords = kBlockN / 8;
static_assert(kBlockK * kTileWords == kThreads, "one packed word per thread per step");
static_assert((kBlockM * kBlockK) % kThreads == 0, "x tile loads must divide evenly");

template <class T>
__global__ void __launch_bounds__(kThreads)
    w4a16_gemm_kernel(const T* __restrict__ x, const int32_t* __restrict__ qweight,
                      const int32_t* __restrict__ qzeros, const __half* __restrict__ scales,
                      const __half* __restrict__ bias, T* __restrict__ y, int64_t m, int64_t k,
                      int64_t n, int64_t group_size) {
  __shared__ float xs[kBlockM][kBlockK + 1];  // +1: rows fall in different banks
  __shared__ float ws[kBlockK][kBlockN];

  const int64_t n_words = n / 8;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kBlockM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kBlockN;
  const int tx = threadIdx.x % 16;  // columns tx + 16 * j
  const int ty = threadIdx.x / 16;  // rows ty * 4 + i

  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    for (int idx = threadIdx.x; idx < kBlockM * kBlockK; idx += kThreads) {
      const int r = idx / kBlockK;
      const int kk = idx % kBlockK;
      const int64_t row = row0 + r;
      const int64_t i = k0 + kk;
      xs[r][kk] = (row < m && i < k) ? to_float(x[row * k + i]) : 0.0f;
    }
    {
      const int kk = threadIdx.x / kTileWords;
      const int tw = threadIdx.x % kTileWords;
      const int64_t i = k0 + kk;
      const int64_t word = col0 / 8 + tw;
      if (i < k && word < n_words) {
        const int64_t g = i / group_size;
        const int32_t q = qweight[i * n_words + word];
        const int32_t z = qzeros[g * n_words + word];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float s = __half2float(scales[g * n + word * 8 + j]);
          const float w = static_cast<float>(awq_unpack(q, j) - awq_unpack(z, j)) * s;
          ws[kk][tw * 8 + j] = round_to_half(w);
        }
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) ws[kk][tw * 8 + j] = 0.0f;
      }
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kBlockK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[ty * 4 + i][kk];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t row = row0 + ty * 4 + i;
    if (row >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t col = col0 + tx + 16 * j;
      if (col >= n) continue;
      const float b = bias != nullptr ? __half2float(bias[col]) : 0.0f;
      y[row * n + col] = from_float<T>(acc[i][j] + b);
    }
  }
}

}  // namespace

void w4a16_gemm_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, DType dtype, cudaStream_t stream) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m == 0) return;
  const int64_t row_tiles = (m + kBlockM - 1) / kBlockM;
  if (row_tiles > 65535) {
    throw std::invalid_argument("w4a16_gemm (CUDA): M = " + std::to_string(m) +
                                " rows exceeds the supported maximum " +
                                std::to_string(65535 * kBlockM));
  }
  const dim3 grid(static_cast<unsigned>((n + kBlockN - 1) / kBlockN),
                  static_cast<unsigned>(row_tiles));
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    w4a16_gemm_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const T*>(x), qweight, qzeros, static_cast<const __half*>(scales),
        static_cast<const __half*>(bias), static_cast<T*>(y), m, k, n, group_size);
  });
  cuda_check_launch("w4a16_gemm_kernel launch");
}

}  // namespace vilau
