// The row-pass drivers shared by the W4A8 / W8A8 ISA paths (w4a8_x86.cpp, w4a8_neon.cpp):
// every tile of a thread's range, the rows of x in passes of the widest kernel a path has, then
// one row at a time. Internal to csrc/w4a8.
#pragma once

#include <cstdint>
#include <cstring>

#include "w4a8/w4a8.h"

namespace vilau {
namespace w4a8 {

//! Activations k .. k + 3 of a row as one int32 (for a broadcast).
inline int32_t four(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

//! Every 16-row tile of [t0, t1), rows of x in passes of up to @p Max (W8A8).
template <int Max,
          void (*P1)(const int8_t*, const float*, const int32_t*, int64_t, const uint8_t*, float*,
                     int64_t),
          void (*PMax)(const int8_t*, const float*, const int32_t*, int64_t, const uint8_t*,
                       float*, int64_t)>
void tiles8(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
            const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = codes8 + t * k * 16;
    int64_t r = 0;
    for (; r + Max <= m; r += Max) {
      PMax(xq + r * k, d + r * blocks, s + r * blocks, k, tile, out + r * ldo + 16 * t, ldo);
    }
    for (; r < m; ++r) {
      P1(xq + r * k, d + r * blocks, s + r * blocks, k, tile, out + r * ldo + 16 * t, ldo);
    }
  }
}

//! Every tile of [t0, t1), rows in passes of up to @p Max.
template <int Max, void (*P1)(const int8_t*, const float*, const int32_t*, int64_t, int64_t,
                              int64_t, const uint8_t*, const uint8_t*, const uint16_t*, float*),
          void (*PMax)(const int8_t*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                       const uint8_t*, const uint8_t*, const uint16_t*, float*)>
void tiles(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k, int64_t n,
           int64_t group_size, const uint8_t* codes, const uint8_t* zeros, const uint16_t* scales,
           int64_t t0, int64_t t1, float* out) {
  const int64_t groups = k / group_size, blocks = k / kW4A8Block;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = codes + t * k * 8;
    const uint8_t* z = zeros + t * groups * 16;
    const uint16_t* sc = scales + t * groups * 16;
    int64_t r = 0;
    for (; r + Max <= m; r += Max) {
      PMax(xq + r * k, d + r * blocks, s + r * blocks, k, n, group_size, tile, z, sc,
           out + r * n + 16 * t);
    }
    for (; r < m; ++r) {
      P1(xq + r * k, d + r * blocks, s + r * blocks, k, n, group_size, tile, z, sc,
         out + r * n + 16 * t);
    }
  }
}

}  // namespace w4a8
}  // namespace vilau
