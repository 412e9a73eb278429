// Tile kernels of the CPU packed-layout W4A16 GEMV (internal to csrc/w4a16; layout and summation
// order in w4a16.h, the scalar reference in w4a16_packed_cpu.cpp).
#pragma once

#include <cstdint>

namespace vilau {
namespace w4a16_packed {

//! Signature shared by the ISA paths: for column tiles [t0, t1) and rows [0, m), writes the
//! tree-reduced float32 sum (bias not added) of (row r, column c) to out[r * n + c].
//! @p x is float32 [m, k]; qzeros / scales (float16 bits) as in w4a16.h.
using TilesFn = void (*)(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                         const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales,
                         int64_t t0, int64_t t1, float* out);

#if defined(__x86_64__) || defined(_M_X64)
void tiles_avx512(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                  const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales,
                  int64_t t0, int64_t t1, float* out);
void tiles_avx2(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales, int64_t t0,
                int64_t t1, float* out);
#endif

#if defined(__aarch64__)
void tiles_neon(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales, int64_t t0,
                int64_t t1, float* out);
#endif

}  // namespace w4a16_packed
}  // namespace vilau
