// CUDA W4A16 GEMV (decode, M <= kGemvMaxM).
//
// A block covers kWords packed words (8 * kWords output columns). Thread t owns word
// t % kWords and the K slice i = t / kWords, t / kWords + kSlices, ...; lanes of a warp read
// kWords consecutive words of 4 rows. Partial sums are reduced with shuffles inside a warp,
// then across warps in shared memory.
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int kThreads = 256;
constexpr int kWords = 8;                     //!< packed words per block
constexpr int kSlices = kThreads / kWords;    //!< K slices per block
constexpr int kWarps = kThreads / 32;
static_assert(32 % kWords == 0, "a warp must hold whole groups of kWords lanes");

template <class T, int M>
__global__ void __launch_bounds__(kThreads)
    w4a16_gemv_kernel(const T* __restrict__ x, const int32_t* __restrict__ qweight,
                      const int32_t* __restrict__ qzeros, const __half* __restrict__ scales,
                      const __half* __restrict__ bias, T* __restrict__ y, int64_t k, int64_t n,
                      int64_t group_size) {
  __shared__ float reduced[kWarps][kWords][M * 8];
  const int64_t n_words = n / 8;
  const int w = threadIdx.x % kWords;
  const int slice = threadIdx.x / kWords;
  const int64_t word = static_cast<int64_t>(blockIdx.x) * kWords + w;
  const bool active = word < n_words;

  float acc[M][8];
#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[r][j] = 0.0f;

  if (active) {
    int64_t group = -1;
    float zero[8], scale[8];
    for (int64_t i = slice; i < k; i += kSlices) {
      const int64_t g = i / group_size;
      if (g != group) {
        group = g;
        const int32_t z = qzeros[g * n_words + word];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          zero[j] = static_cast<float>(awq_unpack(z, j));
          scale[j] = __half2float(scales[g * n + word * 8 + j]);
        }
      }
      const int32_t q = qweight[i * n_words + word];
      float wv[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        wv[j] = round_to_half((static_cast<float>(awq_unpack(q, j)) - zero[j]) * scale[j]);
      }
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const float xv = to_float(x[r * k + i]);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r][j] += xv * wv[j];
      }
    }
  }

  // Lanes kWords apart hold the same word: fold them onto lanes 0..kWords-1 of the warp.
#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int offset = kWords; offset < 32; offset <<= 1)
        acc[r][j] += __shfl_xor_sync(0xffffffffu, acc[r][j], offset);

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane < kWords) {
#pragma unroll
    for (int r = 0; r < M; ++r)
#pragma unroll
      for (int j = 0; j < 8; ++j) reduced[warp][lane][r * 8 + j] = acc[r][j];
  }
  __syncthreads();

  for (int idx = threadIdx.x; idx < kWords * M * 8; idx += kThreads) {
    const int ow = idx / (M * 8);
    const int r = (idx / 8) % M;
    const int j = idx % 8;
    const int64_t out_word = static_cast<int64_t>(blockIdx.x) * kWords + ow;
    if (out_word >= n_words) continue;
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += reduced[v][ow][r * 8 + j];
    const int64_t col = out_word * 8 + j;
    if (bias != nullptr) sum += __half2float(bias[col]);
    y[r * n + col] = from_float<T>(sum);
  }
}

template <class T, int M>
void launch(const void* x, const int32_t* qweight, const int32_t* qzeros, const void* scales,
            const void* bias, void* y, int64_t k, int64_t n, int64_t group_size,
            cudaStream_t stream) {
  const int64_t blocks = (n / 8 + kWords - 1) / kWords;
  w4a16_gemv_kernel<T, M><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(x), qweight, qzeros, static_cast<const __half*>(scales),
      static_cast<const __half*>(bias), static_cast<T*>(y), k, n, group_size);
}

}  // namespace

void w4a16_gemv_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, DType dtype, cudaStream_t stream) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m > kGemvMaxM) {
    throw std::invalid_argument("w4a16_gemv: M = " + std::to_string(m) +
                                " rows exceeds kGemvMaxM = " + std::to_string(kGemvMaxM) +
                                "; use the GEMM path");
  }
  if (m == 0) return;
  static_assert(kGemvMaxM == 8, "the switch below instantiates M = 1..8");
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (m) {
      case 1: launch<T, 1>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 2: launch<T, 2>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 3: launch<T, 3>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 4: launch<T, 4>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 5: launch<T, 5>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 6: launch<T, 6>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      case 7: launch<T, 7>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
      default: launch<T, 8>(x, qweight, qzeros, scales, bias, y, k, n, group_size, stream); break;
    }
  });
  cuda_check_launch("w4a16_gemv_kernel launch");
}

}  // namespace vilau
