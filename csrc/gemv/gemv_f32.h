// Float32 GEMV for decoding on the CPU: y[M, N] = x[M, K] @ W[N, K]^T + bias[N], W row-major as
// torch.nn.Linear stores it, for the few rows of x a decode step has (M <= kGemvF32MaxM).
// x, bias and y are float32; W is float32 (gemv_f32_cpu), float16 / bfloat16 (gemv_w16_cpu) or
// int8 codes with one float32 scale per output row (gemv_w8_cpu).
//
// Why: one token of a float LLM reads every weight once; the GEMV must run at memory bandwidth.
// The BLAS this was measured against (torch 2.13's MKL sgemv) reads 16-17 GB/s at M = 1 with one
// thread or two on the development CPU, where two threads copy at 28 GB/s (bench/RESULTS.md).
//
// Summation order (every instruction-set path returns the scalar reference's bits): for output
// (r, n), 32 partial sums p[j] = fma(W[n, k], x[r, k], p[j]) over k = j, j + 32, j + 64, ...
// ascending (one rounding per term); then the tree p[j] + p[j + 16] (j < 16), then the same
// halving with strides 8, 4, 2, 1; then + bias[n]. Needs K % 32 == 0.
//
// 16-bit weights: every float16 and bfloat16 value is exact in float32, and gemv_w16_cpu widens
// each weight to float32 in registers before the same FMAs in the same order, so its result has
// exactly the bits of gemv_f32_cpu on the upcast weights (W.float()), on every path. It reads
// half the bytes, which is what a decode step's time is made of.
//
// int8 weights with a scale per row (an lm_head quantized per output row, a quarter of the float32
// bytes): every int8 is exact in float32 too, so gemv_w8_cpu widens the codes the same way and
// its sums S are gemv_f32_cpu's bits on the codes as float32; the row's scale then multiplies S
// and the bias is added, one rounding each: y = (S * scale[n]) + bias[n].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace vilau {

//! Largest M the GEMV serves; callers use BLAS above it.
constexpr int64_t kGemvF32MaxM = 4;

//! @throws std::invalid_argument naming the bad size (1 <= M <= kGemvF32MaxM, K >= 32 with
//!         K % 32 == 0, N >= 1).
void gemv_f32_check_sizes(int64_t m, int64_t k, int64_t n);

//! Paths this machine runs, fastest first; the last is "scalar", the reference. The same list
//! serves gemv_f32_cpu, gemv_w16_cpu and gemv_w8_cpu (cpu_isas() in common/cpu_isa.h).
//! Possible names: "avx512" (AVX-512F/BW/VL), "avx2" (AVX2 + FMA + F16C), "neon" (aarch64),
//! "scalar".
std::vector<std::string> gemv_f32_isas();

//! y = x @ W^T + bias (bias may be null), threads over blocks of output rows.
//! @param isa an entry of gemv_f32_isas() or "auto" (the first).
//! @throws std::invalid_argument on bad sizes, num_threads < 1 or an isa not available here.
void gemv_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa = "auto");

//! y = x @ float32(W)^T + bias with W [N, K] in 16 bits: the bits of gemv_f32_cpu on W.float().
//! @param w the weights' bit patterns, row-major, of type @p w_dtype.
//! @param w_dtype DType::kFloat16 (IEEE binary16, subnormals included) or DType::kBFloat16.
//! @param isa an entry of gemv_f32_isas() or "auto" (the first).
//! @throws std::invalid_argument on a w_dtype that is not 16-bit, bad sizes (as
//!         gemv_f32_check_sizes, named "gemv_w16"), num_threads < 1 or an isa not available here.
void gemv_w16_cpu(const float* x, const uint16_t* w, DType w_dtype, const float* bias, float* y,
                  int64_t m, int64_t k, int64_t n, int num_threads,
                  const std::string& isa = "auto");

//! y[r, n] = (S[r, n] * row_scale[n]) + bias[n], each operation rounded to float32, where S is
//! the bits of gemv_f32_cpu (no bias) on the codes as float32: W = diag(row_scale) float32(w).
//! @param w the int8 codes [N, K], row-major (any int8 value; quantizers use -127..127).
//! @param row_scale [N], the float32 scale of each row of W.
//! @param bias [N] or null (no add).
//! @param isa an entry of gemv_f32_isas() or "auto" (the first).
//! @throws std::invalid_argument on a null x, w, row_scale or y, bad sizes (as
//!         gemv_f32_check_sizes, named "gemv_w8"), num_threads < 1 or an isa not available here.
void gemv_w8_cpu(const float* x, const int8_t* w, const float* row_scale, const float* bias,
                 float* y, int64_t m, int64_t k, int64_t n, int num_threads,
                 const std::string& isa = "auto");

}  // namespace vilau
