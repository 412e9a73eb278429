// Float32 GEMM for prefill on the CPU: y[M, N] = x[M, K] @ W[N, K]^T + bias[N], W row-major as
// torch.nn.Linear stores it, for any number of rows of x (a prompt, an image's positions). x, bias
// and y are float32; W is float32 (gemm_f32_cpu), float16 / bfloat16 (gemm_w16_cpu) or AWQ
// 4-bit codes dequantized to their float16 values while packed (gemm_awq_cpu).
//
// Why: a prefill is compute-bound (~2 flops per weight per row), and torch 2.13's BLAS (MKL
// sgemm) ran the 150M LLaMA's layer shapes at 130-167 GFLOP/s on the development CPU, whose two
// cores issue 230 GFLOP/s of float32 FMAs (bench/RESULTS.md). The decode GEMV (csrc/gemv) reads
// W once for a few rows; here every weight meets every row, so W is repacked per block.
//
// Blocking (GotoBLAS-style, one level): each thread owns a contiguous range of 32-column panels
// of y. Per block of kKC values of k and kNC columns, W's rows are transposed (and widened from
// 16 bits, which is exact) into a thread-local buffer of [panel][k][32] floats, which stays in
// L2; then for every MR rows of x a register tile of MR x 32 sums takes the block's k in order.
// Between k blocks the tile's sums wait in y: a float32 store and load are exact.
//
// Summation order (every instruction-set path returns the scalar reference's bits): for output
// (r, n), a = +0, then a = fma(x[r, k], W[n, k], a) for k = 0, 1, ..., K - 1 (one rounding per
// term), then y = a + bias[n] (one rounding; no bias: y = a). The order does not depend on M, on
// the row's place in x or on the threads, so a row of a batch gets the bits it gets alone.
// It is not the decode GEMV's order (32 interleaved partial sums): a prompt's last row and the
// same row decoded alone agree to rounding, not to the bit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace vilau {

//! @throws std::invalid_argument naming the bad size (M, K, N >= 1).
void gemm_f32_check_sizes(int64_t m, int64_t k, int64_t n);

//! Paths this machine runs, fastest first; the last is "scalar", the reference (cpu_isas()).
std::vector<std::string> gemm_f32_isas();

//! y = x @ W^T + bias (bias may be null); threads over 32-column panels of y.
//! @param isa an entry of gemm_f32_isas() or "auto" (the first).
//! @throws std::invalid_argument on a null x, w or y, bad sizes, num_threads < 1 or an isa not
//!         available here.
void gemm_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa = "auto");

//! y = x @ float32(W)^T + bias with W [N, K] in 16 bits: the bits of gemm_f32_cpu on W.float().
//! @param w the weights' bit patterns, row-major, of type @p w_dtype.
//! @param w_dtype DType::kFloat16 (IEEE binary16, subnormals included) or DType::kBFloat16.
//! @throws std::invalid_argument as gemm_f32_cpu (named "gemm_w16"), or on a w_dtype that is
//!         not 16-bit.
void gemm_w16_cpu(const float* x, const uint16_t* w, DType w_dtype, const float* bias, float* y,
                  int64_t m, int64_t k, int64_t n, int num_threads,
                  const std::string& isa = "auto");

//! y = x @ W_T + bias with W_T [K, N] in the AutoAWQ GEMM format (csrc/w4a16/w4a16.h: qweight
//! int32 [K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N]), each weight dequantized
//! to its float16 value while a panel is packed: the bits of gemm_f32_cpu on the transpose of
//! w4a16_dequantize_cpu's float32 output, without that [K, N] copy.
//! @param scales the float16 scales' bit patterns.
//! @throws std::invalid_argument as gemm_f32_cpu (named "gemm_awq"), or on sizes the format
//!         does not allow (w4a16_check_sizes: N % 8, K % G).
void gemm_awq_cpu(const float* x, const int32_t* qweight, const int32_t* qzeros,
                  const uint16_t* scales, const float* bias, float* y, int64_t m, int64_t k,
                  int64_t n, int64_t group_size, int num_threads,
                  const std::string& isa = "auto");

}  // namespace vilau
