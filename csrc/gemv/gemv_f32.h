// Float32 GEMV for decoding on the CPU: y[M, N] = x[M, K] @ W[N, K]^T + bias[N], W row-major as
// torch.nn.Linear stores it, for the few rows of x a decode step has (M <= kGemvF32MaxM).
//
// Why: one token of a float LLM reads every weight once; the GEMV must run at memory bandwidth.
// The BLAS this was measured against (torch 2.13's MKL sgemv) reads 16-17 GB/s at M = 1 with one
// thread or two on the development CPU, where two threads copy at 28 GB/s (bench/RESULTS.md).
//
// Summation order (every instruction-set path returns the scalar reference's bits): for output
// (r, n), 32 partial sums p[j] = fma(W[n, k], x[r, k], p[j]) over k = j, j + 32, j + 64, ...
// ascending (one rounding per term); then the tree p[j] + p[j + 16] (j < 16), then the same
// halving with strides 8, 4, 2, 1; then + bias[n]. Needs K % 32 == 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vilau {

//! Largest M the GEMV serves; callers use BLAS above it.
constexpr int64_t kGemvF32MaxM = 4;

//! @throws std::invalid_argument naming the bad size (1 <= M <= kGemvF32MaxM, K >= 32 with
//!         K % 32 == 0, N >= 1).
void gemv_f32_check_sizes(int64_t m, int64_t k, int64_t n);

//! Paths this machine runs, fastest first; the last is "scalar", the reference.
//! Possible names: "avx512" (AVX-512F), "avx2" (AVX2 + FMA), "neon" (aarch64), "scalar".
std::vector<std::string> gemv_f32_isas();

//! y = x @ W^T + bias (bias may be null), threads over blocks of output rows.
//! @param isa an entry of gemv_f32_isas() or "auto" (the first).
//! @throws std::invalid_argument on bad sizes, num_threads < 1 or an isa not available here.
void gemv_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa = "auto");

}  // namespace vilau
