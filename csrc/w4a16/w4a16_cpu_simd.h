// SIMD column-chunk kernels of the CPU W4A16 GEMV (internal to csrc/w4a16; see w4a16_cpu.cpp).
//
// Every path computes, for the output columns of packed words [word0, word0 + words):
//   acc[r * ld_acc + c] += sum_i x[r * k + i] * W_T[i, 8 * word0 + c],   r < m <= kGemvMaxM,
// with W_T = round_to_half((code - zero) * scale) as in the scalar reference, rows i summed in
// ascending order, one float32 multiply and one add per term (no fused multiply-add: the build
// compiles these files with -ffp-contract=off). The dequantized weight is exact in float32 before
// its one rounding to float16, so every path returns the scalar path's bits, except for weights
// beyond the float16 range (|(code - zero) * scale| > 65504: hardware conversion gives inf, the
// scalar rounding a large finite value; no real checkpoint has scales > 4000).
#pragma once

#include <cstdint>

namespace vilau {
namespace w4a16_simd {

//! Signature shared by the paths: adds the rows of groups [g0, g1) to acc. @p scratch holds
//! 16 * words floats.
using ChunkFn = void (*)(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                         const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                         int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                         int64_t g0, int64_t g1);

#if defined(__x86_64__) || defined(_M_X64)
void gemv_chunk_avx2(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                     const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                     int64_t g0, int64_t g1);
void gemv_chunk_avx512(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                       const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                       int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                       int64_t g0, int64_t g1);
//! Rows [i0, i1) of W_T (all N columns) into out, row i at out + (i - i0) * N: float32, or
//! float16 bits if @p half_out; bitwise w4a16_dequantize_cpu's values. Needs AVX2 + F16C + FMA.
//! @p scratch holds 2 * N floats.
void dequant_rows_avx2(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                       int64_t i0, int64_t i1, int64_t n, int64_t group_size, void* out,
                       bool half_out, float* scratch);
#endif

#if defined(__aarch64__)
void gemv_chunk_neon(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                     const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                     int64_t g0, int64_t g1);
#endif

}  // namespace w4a16_simd
}  // namespace vilau
