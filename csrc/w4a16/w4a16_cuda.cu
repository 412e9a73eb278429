// CUDA W4A16: path choice (GEMV, cuBLAS GEMM or tiled GEMM), workspace sizes and the dequantize
// kernel.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_dequant.cuh"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int kDequantThreads = 256;

//! One thread per packed word of rows [k0, k0 + rows) of qweight: writes its 8 columns of W_T
//! (row i of W_T at w_t + (i - k0) * n). @p vec: scales and w_t are 16-byte aligned, so the
//! 8 scales are one load and 8 float16 weights one store.
template <class T>
__global__ void w4a16_dequantize_kernel(const int32_t* __restrict__ qweight,
                                        const int32_t* __restrict__ qzeros,
                                        const __half* __restrict__ scales, T* __restrict__ w_t,
                                        int64_t k0, int64_t rows, int64_t n, int64_t group_size,
                                        bool vec) {
  const int64_t n_words = n / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * n_words) return;
  const int64_t i = k0 + idx / n_words;
  const int64_t word = idx % n_words;
  const int64_t g = i / group_size;
  const __half* s = scales + g * n + word * 8;
  __half2 zero[4], scale[4], w[4];
  awq_word_to_half2(static_cast<uint32_t>(qzeros[g * n_words + word]), zero);
  if (vec) {
    const uint4 sv = *reinterpret_cast<const uint4*>(s);
    scale[0] = *reinterpret_cast<const __half2*>(&sv.x);
    scale[1] = *reinterpret_cast<const __half2*>(&sv.y);
    scale[2] = *reinterpret_cast<const __half2*>(&sv.z);
    scale[3] = *reinterpret_cast<const __half2*>(&sv.w);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) scale[j] = __halves2half2(s[2 * j], s[2 * j + 1]);
  }
  awq_dequant_word(static_cast<uint32_t>(qweight[i * n_words + word]), zero, scale, w);
  T* out = w_t + (i - k0) * n + word * 8;
  if constexpr (std::is_same_v<T, __half>) {
    if (vec) {
      uint4 v;
      v.x = *reinterpret_cast<const uint32_t*>(&w[0]);
      v.y = *reinterpret_cast<const uint32_t*>(&w[1]);
      v.z = *reinterpret_cast<const uint32_t*>(&w[2]);
      v.w = *reinterpret_cast<const uint32_t*>(&w[3]);
      *reinterpret_cast<uint4*>(out) = v;
      return;
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __half22float2(w[j]);
    out[2 * j] = from_float<T>(f.x);
    out[2 * j + 1] = from_float<T>(f.y);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

#ifdef VILAU_WITH_CUBLAS
//! The cuBLAS path serves float16 activations from kCublasMinM rows on. (bfloat16 and float32
//! would need the float16 weights converted: their GEMM stays the tiled kernel.) Built without
//! cuBLAS (see CMakeLists.txt; _C.build_info()["cublas"]) the GEMM is always the tiled kernel.
bool use_cublas(int64_t m, DType dtype) { return m >= kCublasMinM && dtype == DType::kFloat16; }
#endif

}  // namespace

int64_t w4a16_linear_cuda_workspace_bytes(int64_t m, int64_t k, int64_t n, int64_t group_size,
                                          DType dtype) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m == 0) return 0;
  if (m <= kGemvMaxM) return w4a16_gemv_cuda_workspace_bytes(m, k, n, group_size);
#ifdef VILAU_WITH_CUBLAS
  if (use_cublas(m, dtype)) return w4a16_gemm_cublas_workspace_bytes(m, k, n);
#else
  (void)dtype;
#endif
  return 0;
}

void w4a16_linear_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                       int64_t n, int64_t group_size, DType dtype, cudaStream_t stream,
                       void* workspace, int64_t workspace_bytes) {
  if (m <= kGemvMaxM) {
    w4a16_gemv_cuda(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, stream,
                    workspace, workspace_bytes);
#ifdef VILAU_WITH_CUBLAS
  } else if (use_cublas(m, dtype) && workspace != nullptr &&
             workspace_bytes >= w4a16_gemm_cublas_workspace_bytes(m, k, n)) {
    w4a16_gemm_cublas(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, stream,
                      workspace);
#endif
  } else {
    w4a16_gemm_cuda(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, stream);
  }
}

void w4a16_dequantize_rows_cuda(const int32_t* qweight, const int32_t* qzeros,
                                const void* scales, void* w_t, int64_t k0, int64_t rows,
                                int64_t k, int64_t n, int64_t group_size, DType dtype,
                                cudaStream_t stream) {
  w4a16_check_sizes(0, k, n, group_size);
  if (k0 < 0 || rows < 0 || k0 + rows > k) {
    throw std::invalid_argument("w4a16_dequantize: rows [" + std::to_string(k0) + ", " +
                                std::to_string(k0 + rows) + ") are outside K = " +
                                std::to_string(k));
  }
  if (rows == 0) return;
  const int64_t words = rows * (n / 8);
  const int64_t blocks = (words + kDequantThreads - 1) / kDequantThreads;
  const bool vec = aligned16(scales) && aligned16(w_t);
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    w4a16_dequantize_kernel<T><<<static_cast<unsigned>(blocks), kDequantThreads, 0, stream>>>(
        qweight, qzeros, static_cast<const __half*>(scales), static_cast<T*>(w_t), k0, rows, n,
        group_size, vec);
  });
  cuda_check_launch("w4a16_dequantize_kernel launch");
}

void w4a16_dequantize_cuda(const int32_t* qweight, const int32_t* qzeros, const void* scales,
                           void* w_t, int64_t k, int64_t n, int64_t group_size, DType dtype,
                           cudaStream_t stream) {
  w4a16_dequantize_rows_cuda(qweight, qzeros, scales, w_t, 0, k, k, n, group_size, dtype,
                             stream);
}

}  // namespace vilau
