// CUDA W4A16: path choice (GEMV or GEMM) and the dequantize kernel.
#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int kDequantThreads = 256;

//! One thread per packed word of qweight: writes its 8 columns of W_T.
template <class T>
__global__ void w4a16_dequantize_kernel(const int32_t* __restrict__ qweight,
                                        const int32_t* __restrict__ qzeros,
                                        const __half* __restrict__ scales, T* __restrict__ w_t,
                                        int64_t k, int64_t n, int64_t group_size) {
  const int64_t n_words = n / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= k * n_words) return;
  const int64_t i = idx / n_words;
  const int64_t word = idx % n_words;
  const int64_t g = i / group_size;
  const int32_t q = qweight[idx];
  const int32_t z = qzeros[g * n_words + word];
  for (int j = 0; j < 8; ++j) {
    const int64_t col = word * 8 + j;
    const float s = __half2float(scales[g * n + col]);
    const float w = static_cast<float>(awq_unpack(q, j) - awq_unpack(z, j)) * s;
    w_t[i * n + col] = from_float<T>(round_to_half(w));
  }
}

}  // namespace

void w4a16_linear_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                       int64_t n, int64_t group_size, DType dtype, cudaStream_t stream) {
  if (m <= kGemvMaxM) {
    w4a16_gemv_cuda(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, stream);
  } else {
    w4a16_gemm_cuda(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, stream);
  }
}

void w4a16_dequantize_cuda(const int32_t* qweight, const int32_t* qzeros, const void* scales,
                           void* w_t, int64_t k, int64_t n, int64_t group_size, DType dtype,
                           cudaStream_t stream) {
  w4a16_check_sizes(0, k, n, group_size);
  const int64_t words = k * (n / 8);
  const int64_t blocks = (words + kDequantThreads - 1) / kDequantThreads;
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    w4a16_dequantize_kernel<T><<<static_cast<unsigned>(blocks), kDequantThreads, 0, stream>>>(
        qweight, qzeros, static_cast<const __half*>(scales), static_cast<T*>(w_t), k, n,
        group_size);
  });
  cuda_check_launch("w4a16_dequantize_kernel launch");
}

}  // namespace vilau
