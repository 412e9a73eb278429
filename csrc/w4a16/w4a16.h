// W4A16 linear layers on AutoAWQ "GEMM" packed weights: 4-bit weights, float activations.
//
// Sizes: M rows of x, K = in_features, N = out_features, G = group size along K.
// Buffers (row-major, contiguous), exactly as AutoAWQ's WQLinear_GEMM stores them:
//   qweight int32   [K, N/8]   nibble k (bits 4k..4k+3) of word c = code of output column
//                              8c + {0, 2, 4, 6, 1, 3, 5, 7}[k]  (see w4a16_pack.h)
//   qzeros  int32   [K/G, N/8] zero points, same packing
//   scales  float16 [K/G, N]
//   bias    float16 [N] or null
// W_T[i, o] = (code[i, o] - zero[i / G, o]) * scale[i / G, o];  y[M, N] = x[M, K] @ W_T + bias.
// The format forces K % G == 0 and N % 8 == 0; nothing else is required (G need not divide
// by 8, K need not be a power of two). x and y share one float dtype; sums are float32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vilau {

//! Largest M served by the GEMV (decode) path; larger M takes the tiled GEMM (prefill) path.
//! Every caller that chooses a path uses this constant.
constexpr int64_t kGemvMaxM = 8;

//! Smallest M that takes the cuBLAS tensor-core path on CUDA (float16 x only); M in
//! (kGemvMaxM, kCublasMinM) and other dtypes take the tiled GEMM kernel.
constexpr int64_t kCublasMinM = 17;

//! Checks M, K, N and G against the format.
//! @throws std::invalid_argument naming the bad value (M >= 0, K >= 1, N >= 8 with N % 8 == 0,
//!         G >= 1 with K % G == 0).
void w4a16_check_sizes(int64_t m, int64_t k, int64_t n, int64_t group_size);

//! y = x @ W_T + bias, choosing GEMV (M <= kGemvMaxM) or GEMM.
//! @param x [M, K] of @p dtype;  @param y [M, N] of @p dtype;  @param bias fp16 [N] or nullptr
//! @throws std::invalid_argument on bad sizes or num_threads < 1.
void w4a16_linear_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                      const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                      int64_t n, int64_t group_size, DType dtype, int num_threads);

//! Instruction-set paths of the CPU GEMV that this machine can run, fastest first; the last
//! is always "scalar", the portable reference every other path is tested against.
//! Possible names: "avx512" (AVX-512F/BW/VL + F16C + FMA), "avx2" (AVX2 + F16C + FMA), "neon"
//! (aarch64), "scalar".
std::vector<std::string> w4a16_cpu_isas();

//! GEMV path of w4a16_linear_cpu; requires M <= kGemvMaxM. @p isa names one entry of
//! w4a16_cpu_isas(), or "auto" for the first.
//! @throws std::invalid_argument on bad sizes or an isa this machine cannot run.
void w4a16_gemv_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                    const void* scales, const void* bias, void* y, int64_t m, int64_t k, int64_t n,
                    int64_t group_size, DType dtype, int num_threads,
                    const std::string& isa = "auto");

//! GEMM path of w4a16_linear_cpu: each weight group is unpacked once per tile of rows.
void w4a16_gemm_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                    const void* scales, const void* bias, void* y, int64_t m, int64_t k, int64_t n,
                    int64_t group_size, DType dtype, int num_threads);

//! W_T [K, N] of @p dtype from the packed buffers; (code - zero) * scale is exact in float32,
//! so a float16 W_T equals AutoAWQ's float16 dequantization bit for bit.
void w4a16_dequantize_cpu(const int32_t* qweight, const int32_t* qzeros, const void* scales,
                          void* w_t, int64_t k, int64_t n, int64_t group_size, DType dtype,
                          int num_threads);

// ---- CPU k-contiguous ("packed") layout: repacked once at load, read by a lookup-table GEMV.
//
// packed uint8 [N/8 tiles][K/32 blocks][8 columns][16 bytes]: byte i of (tile t, block b,
// column j) = code(32b + i, 8t + j) | code(32b + 16 + i, 8t + j) << 4. A tile's bytes are one
// contiguous run of K * 4 bytes, so a thread owning a range of tiles streams memory in order.
// Needs K % 32 == 0; the GEMV on it needs G % 32 == 0 (a block never straddles groups).
//
// Summation order of the packed GEMV (every ISA path returns these bits): for row r and column
// n, 32 partial sums p[j] = fma(W_T[k, n], x[r, k], p[j]) over k = j, j + 32, ... ascending
// (one rounding per term), then the tree p[j] += p[j + 16] (j < 16), += p[j + 8] (j < 8), += 4,
// += 2, += 1; then + bias (float16 as float), rounded once to x's dtype.

//! Bytes of the packed layout: K * N / 2.
inline int64_t w4a16_packed_bytes(int64_t k, int64_t n) { return k * n / 2; }

//! Repacks AutoAWQ qweight int32 [K, N/8] into the packed layout (@p packed: K * N / 2 bytes).
//! @throws std::invalid_argument if K % 32 != 0, N % 8 != 0 or num_threads < 1.
void w4a16_repack_cpu(const int32_t* qweight, uint8_t* packed, int64_t k, int64_t n,
                      int num_threads);

//! Instruction-set paths of the packed GEMV on this machine, fastest first, "scalar" last (the
//! reference). Names: "avx512" (AVX-512F/BW/VL + F16C + FMA), "avx2", "neon", "scalar".
std::vector<std::string> w4a16_packed_cpu_isas();

//! y[M, N] = x[M, K] @ W_T + bias on the packed layout (any M >= 0; rows are served in pairs
//! that share each looked-up weight vector). qzeros, scales, bias as above.
//! @throws std::invalid_argument on bad sizes, G % 32 != 0, num_threads < 1 or an unknown isa.
void w4a16_linear_packed_cpu(const void* x, const uint8_t* packed, const int32_t* qzeros,
                             const void* scales, const void* bias, void* y, int64_t m,
                             int64_t k, int64_t n, int64_t group_size, DType dtype,
                             int num_threads, const std::string& isa = "auto");

#ifdef VILAU_WITH_CUDA
//! Bytes of device workspace that w4a16_linear_cuda uses to run at full speed for these sizes
//! on the current device (0 when it needs none): split-K partial sums of the GEMV, or the
//! cuBLAS path's float32 sums and float16 weight tile.
//! @throws std::invalid_argument on bad sizes.
int64_t w4a16_linear_cuda_workspace_bytes(int64_t m, int64_t k, int64_t n, int64_t group_size,
                                          DType dtype);

//! CUDA w4a16_linear_cpu on @p stream (device pointers). @p workspace: device memory of
//! @p workspace_bytes (>= w4a16_linear_cuda_workspace_bytes for full speed; with less, or
//! nullptr, the same result comes from kernels that need none: GEMV without split-K, tiled GEMM).
//! @throws std::invalid_argument on bad sizes; std::runtime_error if a launch or cuBLAS fails.
void w4a16_linear_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                       int64_t n, int64_t group_size, DType dtype, cudaStream_t stream,
                       void* workspace = nullptr, int64_t workspace_bytes = 0);

//! Workspace of w4a16_gemv_cuda's split-K plan (0 for one split).
int64_t w4a16_gemv_cuda_workspace_bytes(int64_t m, int64_t k, int64_t n, int64_t group_size);

//! GEMV kernel (M <= kGemvMaxM): 16-byte weight loads, K split over blocks so every SM streams
//! (see w4a16_gemv_cuda.cu for the layout, the alignment it needs and its bytes floor).
void w4a16_gemv_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, DType dtype, cudaStream_t stream,
                     void* workspace = nullptr, int64_t workspace_bytes = 0);

//! Tiled GEMM kernel (64 x 64 output tiles, weights dequantized into shared memory on load).
void w4a16_gemm_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, DType dtype, cudaStream_t stream);

#ifdef VILAU_WITH_CUBLAS
//! Workspace of w4a16_gemm_cublas: float32 [M, N] + float16 [tile rows, N], 256-byte aligned.
int64_t w4a16_gemm_cublas_workspace_bytes(int64_t m, int64_t k, int64_t n);

//! float16 GEMM on tensor cores: W_T dequantized tile by tile into @p workspace (of at least
//! w4a16_gemm_cublas_workspace_bytes), cuBLAS fp16 x fp16 -> fp32, bias, one rounding.
//! @throws std::runtime_error if cuBLAS fails.
void w4a16_gemm_cublas(const void* x, const int32_t* qweight, const int32_t* qzeros,
                       const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                       int64_t n, int64_t group_size, cudaStream_t stream, void* workspace);
#endif

//! CUDA w4a16_dequantize_cpu on @p stream.
void w4a16_dequantize_cuda(const int32_t* qweight, const int32_t* qzeros, const void* scales,
                           void* w_t, int64_t k, int64_t n, int64_t group_size, DType dtype,
                           cudaStream_t stream);

//! Rows [k0, k0 + rows) of W_T into w_t [rows, N] (row i at w_t + (i - k0) * N).
//! @throws std::invalid_argument on bad sizes or rows outside [0, K).
void w4a16_dequantize_rows_cuda(const int32_t* qweight, const int32_t* qzeros,
                                const void* scales, void* w_t, int64_t k0, int64_t rows,
                                int64_t k, int64_t n, int64_t group_size, DType dtype,
                                cudaStream_t stream);
#endif

}  // namespace vilau
