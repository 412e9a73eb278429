// Tile kernels of the CPU W4A8 and W8A8 GEMVs (internal to csrc/w4a8; arithmetic and layout in
// w4a8.h, the scalar reference in w4a8_cpu.cpp): "avx512vnni" and "avx2" on x86-64,
// "neon-dotprod" (only where cpu_has_dotprod()) and "neon" on aarch64.
#pragma once

#include <cstdint>

namespace vilau {
namespace w4a8 {

//! Signature shared by the ISA paths: for 16-column tiles [t0, t1) and rows [0, m), writes acc
//! of w4a8.h (bias not added) of (row r, column c) to out[r * n + c].
using TilesFn = void (*)(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                         int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                         const uint16_t* scales, int64_t t0, int64_t t1, float* out);

//! The W8A8 paths: for 16-row tiles [t0, t1) and rows [0, m), writes a of w4a8.h (before the
//! scale) of (row r, output c) to out[r * ldo + c].
using Tiles8Fn = void (*)(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                          const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo);

#if defined(__x86_64__) || defined(_M_X64)
bool cpu_has_avx512_vnni();
void tiles8_avx512vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                       const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo);
void tiles8_avx2(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                 const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo);
void tiles_avx512vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                      int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                      const uint16_t* scales, int64_t t0, int64_t t1, float* out);
void tiles_avx2(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                const uint16_t* scales, int64_t t0, int64_t t1, float* out);
#endif

#if defined(__aarch64__)
bool cpu_has_dotprod();  //!< Armv8.2 dot product (getauxval(AT_HWCAP) & HWCAP_ASIMDDP)
void tiles_neon_dotprod(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                        int64_t n, int64_t group_size, const uint8_t* codes,
                        const uint8_t* zeros, const uint16_t* scales, int64_t t0, int64_t t1,
                        float* out);
void tiles8_neon_dotprod(const int8_t* xq, const float* d, const int32_t* s, int64_t m,
                         int64_t k, const uint8_t* codes8, int64_t t0, int64_t t1, float* out,
                         int64_t ldo);
//! Plain Armv8.0 NEON (every aarch64 CPU): smull / smlal products, reduced once per block.
void tiles_neon(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                const uint16_t* scales, int64_t t0, int64_t t1, float* out);
void tiles8_neon(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                 const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo);
#endif

}  // namespace w4a8
}  // namespace vilau
