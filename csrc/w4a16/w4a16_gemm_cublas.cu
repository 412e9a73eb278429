// CUDA W4A16 GEMM for prefill (M >= kCublasMinM, float16 activations) on tensor cores: W_T is
// dequantized to float16 a tile of K rows at a time (<= 16 MiB, so the GEMM reads it back from
// L2) and cuBLAS multiplies it in float16 with float32 accumulation into a float32 buffer; one
// last kernel adds the bias and rounds once to float16. The float16 weights are the format's own
// (w4a16_dequant.cuh), so only the summation order differs from the other paths.
//
// Workspace (from the caller): float32 [M, N] sums, then float16 [tile rows, N] weights.
// Not for CUDA graph capture on first use: the per-thread, per-device cuBLAS handle is created
// (and allocates) on the first call.
#include <cublas_v2.h>

#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "w4a16/w4a16.h"

namespace vilau {

namespace {

constexpr int64_t kTileBytes = int64_t{16} << 20;  //!< float16 weights dequantized per GEMM
constexpr int kEpilogueThreads = 256;

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

//! Rows of W_T per tile: a multiple of 64 (tensor-core friendly), at most kTileBytes, <= K.
int64_t tile_rows(int64_t k, int64_t n) {
  const int64_t rows = std::max<int64_t>(64, kTileBytes / (2 * n) / 64 * 64);
  return std::min(rows, k);
}

void cublas_check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("w4a16_gemm_cublas: ") + what + " failed: " +
                             cublasGetStatusString(status));
  }
}

//! cuBLAS handle of this thread for the current device (handles are not thread-safe).
cublasHandle_t handle() {
  constexpr int kMaxDevices = 64;
  thread_local cublasHandle_t handles[kMaxDevices] = {};
  int device = 0;
  cuda_check(cudaGetDevice(&device), "w4a16_gemm_cublas: cudaGetDevice");
  if (device < 0 || device >= kMaxDevices) {
    throw std::runtime_error("w4a16_gemm_cublas: device " + std::to_string(device) +
                             " beyond the " + std::to_string(kMaxDevices) + " supported");
  }
  if (handles[device] == nullptr) cublas_check(cublasCreate(&handles[device]), "cublasCreate");
  return handles[device];
}

//! y[r, c] = float16(acc[r, c] + bias[c]): the one rounding of the output.
__global__ void bias_round_kernel(const float* __restrict__ acc, const __half* __restrict__ bias,
                                  __half* __restrict__ y, int64_t m, int64_t n) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * n) return;
  const float b = bias != nullptr ? __half2float(bias[idx % n]) : 0.0f;
  y[idx] = __float2half_rn(acc[idx] + b);
}

}  // namespace

int64_t w4a16_gemm_cublas_workspace_bytes(int64_t m, int64_t k, int64_t n) {
  return round_up(m * n * 4, 256) + round_up(tile_rows(k, n) * n * 2, 256);
}

void w4a16_gemm_cublas(const void* x, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                       int64_t n, int64_t group_size, cudaStream_t stream, void* workspace) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m == 0) return;
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX) {
    throw std::invalid_argument("w4a16_gemm_cublas: M, N, K = " + std::to_string(m) + ", " +
                                std::to_string(n) + ", " + std::to_string(k) +
                                " exceed cuBLAS's int sizes");
  }
  float* acc = static_cast<float*>(workspace);
  __half* w_t = reinterpret_cast<__half*>(static_cast<char*>(workspace) + round_up(m * n * 4, 256));
  const int64_t tile = tile_rows(k, n);
  cublasHandle_t h = handle();
  cublas_check(cublasSetStream(h, stream), "cublasSetStream");
  const float one = 1.0f;
  const float zero = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += tile) {
    const int64_t rows = std::min(tile, k - k0);
    w4a16_dequantize_rows_cuda(qweight, qzeros, scales, w_t, k0, rows, k, n, group_size,
                               DType::kFloat16, stream);
    // Row-major Y[M, N] += X[:, k0:k0+rows] @ W_T[k0:k0+rows, :] is, column-major,
    // Y^T[N, M] += W_T^T[N, rows] @ X^T[rows, M]: A = the W_T tile (ld N), B = x + k0 (ld K).
    cublas_check(
        cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                     static_cast<int>(rows), &one, w_t, CUDA_R_16F, static_cast<int>(n),
                     static_cast<const __half*>(x) + k0, CUDA_R_16F, static_cast<int>(k),
                     k0 == 0 ? &zero : &one, acc, CUDA_R_32F, static_cast<int>(n),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
  }
  const int64_t blocks = (m * n + kEpilogueThreads - 1) / kEpilogueThreads;
  bias_round_kernel<<<static_cast<unsigned>(blocks), kEpilogueThreads, 0, stream>>>(
      acc, static_cast<const __half*>(bias), static_cast<__half*>(y), m, n);
  cuda_check_launch("w4a16 bias_round_kernel launch");
}

}  // namespace vilau
