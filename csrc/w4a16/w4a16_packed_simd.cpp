// ISA paths of the packed-layout GEMV (w4a16.h): AVX-512 and AVX2 on x86-64 (per-function target
// attributes, chosen at run time), NEON on aarch64. Each returns the bits of tiles_scalar in
// w4a16_packed_cpu.cpp: the same float16-rounded table values, fused multiply-adds into the same
// 32 partial sums per (row, column), and the same reduction tree.
//
// AVX-512, per 32 weights of one column: one 16-byte load widened to 16 int32 lanes; vpermps
// reads only the low 4 bits of each index, so the low nibbles index the column's 16-float table
// directly and the high nibbles after one shift; two FMAs add them into the partial sums
// p[0..15] and p[16..31] (lanes = j). x's two vectors per block are loaded once for all columns
// of the pass, and each looked-up vector serves 2 rows.
#include "w4a16/w4a16_packed_simd.h"

#include "w4a16/w4a16_pack.h"

#include "common/x86_intrin.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vilau {
namespace w4a16_packed {

namespace {

//! Zero point and scale of (group g, column 8t + j) as floats.
inline void group_column(const int32_t* qzeros, const uint16_t* scales, int64_t g, int64_t n,
                         int64_t t, int j, float* zero, uint16_t* scale_bits) {
  *zero = static_cast<float>(awq_unpack(qzeros[g * (n / 8) + t], j));
  *scale_bits = scales[g * n + 8 * t + j];
}

}  // namespace

#if defined(__x86_64__) || defined(_M_X64)

#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VILAU_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace {

//! 4 lanes -> lane 0 = (v0 + v2) + (v1 + v3): the tree's last two steps.
VILAU_AVX2 inline float sum4(__m128 v) {
  const __m128 two = _mm_add_ps(v, _mm_movehl_ps(v, v));  // j + j+2
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}

//! Lane j + w of v moved to lane j (lanes j < w matter).
VILAU_AVX512 inline __m512 down512(__m512 v, int w) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  return _mm512_permutexvar_ps(_mm512_add_epi32(iota, _mm512_set1_epi32(w)), v);
}

VILAU_AVX512 inline float tree512(__m512 lo, __m512 hi) {
  __m512 s = _mm512_add_ps(lo, hi);  // p[j] + p[j + 16]
  for (int w = 8; w >= 1; w /= 2) s = _mm512_add_ps(s, down512(s, w));
  return _mm512_cvtss_f32(s);
}

//! round_to_half((q - zero) * scale), q = 0..15, exact product (see w4a16_cpu.cpp).
VILAU_AVX512 inline __m512 lut512(float zero, uint16_t scale_bits) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const float scale = _cvtsh_ss(scale_bits);
  const __m512 v = _mm512_mul_ps(_mm512_sub_ps(iota, _mm512_set1_ps(zero)), _mm512_set1_ps(scale));
  return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

//! Rows [0, R) of x (row stride k) times columns j0 .. j0 + C of tile t, over all of K.
template <int R, int C>
VILAU_AVX512 void pass512(const float* x, int64_t k, int64_t n, int64_t group_size,
                          const uint8_t* tile, const int32_t* qzeros, const uint16_t* scales,
                          int64_t t, int j0, float* out) {
  __m512 acc[R][C][2];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c][0] = acc[r][c][1] = _mm512_setzero_ps();
  const int64_t blocks_per_group = group_size / 32;
  for (int64_t g = 0; g < k / group_size; ++g) {
    __m512 lut[C];
    for (int c = 0; c < C; ++c) {
      float zero;
      uint16_t sb;
      group_column(qzeros, scales, g, n, t, j0 + c, &zero, &sb);
      lut[c] = lut512(zero, sb);
    }
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      const uint8_t* blk = tile + b * 128 + j0 * 16;
      __m512 xl[R], xh[R];
      for (int r = 0; r < R; ++r) {
        xl[r] = _mm512_loadu_ps(x + r * k + 32 * b);
        xh[r] = _mm512_loadu_ps(x + r * k + 32 * b + 16);
      }
      for (int c = 0; c < C; ++c) {
        const __m512i idx =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * c)));
        const __m512 lo = _mm512_permutexvar_ps(idx, lut[c]);  // low 4 bits only
        const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), lut[c]);
        for (int r = 0; r < R; ++r) {
          acc[r][c][0] = _mm512_fmadd_ps(lo, xl[r], acc[r][c][0]);
          acc[r][c][1] = _mm512_fmadd_ps(hi, xh[r], acc[r][c][1]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * n + 8 * t + j0 + c] = tree512(acc[r][c][0], acc[r][c][1]);
}

//! Two 8-entry halves of a column's table; blend on index bit 3 (the sign after << 28).
struct Lut256 {
  __m256 lo, hi;
};

VILAU_AVX2 inline __m256 lookup256(const Lut256& l, __m256i idx) {
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(l.lo, idx),
                          _mm256_permutevar8x32_ps(l.hi, idx),
                          _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

VILAU_AVX2 inline Lut256 lut256(float zero, uint16_t scale_bits) {
  const float scale = _cvtsh_ss(scale_bits);
  const __m256 z = _mm256_set1_ps(zero), s = _mm256_set1_ps(scale);
  const int rounding = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m256 lo = _mm256_mul_ps(_mm256_sub_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), z), s);
  const __m256 hi =
      _mm256_mul_ps(_mm256_sub_ps(_mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15), z), s);
  return {_mm256_cvtph_ps(_mm256_cvtps_ph(lo, rounding)),
          _mm256_cvtph_ps(_mm256_cvtps_ph(hi, rounding))};
}

//! acc[q] holds p[8q .. 8q + 7].
VILAU_AVX2 inline float tree256(const __m256* acc) {
  const __m256 s8 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
  return sum4(_mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)));
}

//! pass512 with 8-lane vectors: 4 accumulators per (row, column).
template <int R, int C>
VILAU_AVX2 void pass256(const float* x, int64_t k, int64_t n, int64_t group_size,
                        const uint8_t* tile, const int32_t* qzeros, const uint16_t* scales,
                        int64_t t, int j0, float* out) {
  __m256 acc[R][C][4];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c)
      for (int q = 0; q < 4; ++q) acc[r][c][q] = _mm256_setzero_ps();
  const int64_t blocks_per_group = group_size / 32;
  for (int64_t g = 0; g < k / group_size; ++g) {
    Lut256 lut[C];
    for (int c = 0; c < C; ++c) {
      float zero;
      uint16_t sb;
      group_column(qzeros, scales, g, n, t, j0 + c, &zero, &sb);
      lut[c] = lut256(zero, sb);
    }
    for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
      const uint8_t* blk = tile + b * 128 + j0 * 16;
      for (int c = 0; c < C; ++c) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 16 * c));
        const __m256i i0 = _mm256_cvtepu8_epi32(bytes);                     // k 0..7, 16..23
        const __m256i i1 = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));  // k 8..15, 24..31
        __m256 w[4];
        w[0] = lookup256(lut[c], i0);
        w[1] = lookup256(lut[c], i1);
        w[2] = lookup256(lut[c], _mm256_srli_epi32(i0, 4));
        w[3] = lookup256(lut[c], _mm256_srli_epi32(i1, 4));
        for (int r = 0; r < R; ++r) {
          for (int q = 0; q < 4; ++q) {
            acc[r][c][q] =
                _mm256_fmadd_ps(w[q], _mm256_loadu_ps(x + r * k + 32 * b + 8 * q), acc[r][c][q]);
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * n + 8 * t + j0 + c] = tree256(acc[r][c]);
}

}  // namespace

void tiles_avx512(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                  const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales,
                  int64_t t0, int64_t t1, float* out) {
  // Register budget (32 zmm): R rows x C columns x 2 sums + C tables + 2R x vectors. Measured
  // (cache-resident 4096 x 256, one thread): R = 1, C = 8: 0.047 ns per weight; R = 2, C = 4:
  // 0.030 per weight and row; R = 4, C = 2 was slower (0.032) and C = 4 at M = 1 too (0.048).
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = packed + t * k * 4;
    int64_t r = 0;
    for (; r + 2 <= m; r += 2) {
      for (int j = 0; j < 8; j += 4) {
        pass512<2, 4>(x + r * k, k, n, group_size, tile, qzeros, scales, t, j, out + r * n);
      }
    }
    if (r < m) pass512<1, 8>(x + r * k, k, n, group_size, tile, qzeros, scales, t, 0, out + r * n);
  }
}

void tiles_avx2(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales, int64_t t0,
                int64_t t1, float* out) {
  // 16 ymm: C columns x 4 sums x R rows + 2C table halves; x is read from memory.
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = packed + t * k * 4;
    int64_t r = 0;
    for (; r + 2 <= m; r += 2) {
      for (int j = 0; j < 8; ++j) {
        pass256<2, 1>(x + r * k, k, n, group_size, tile, qzeros, scales, t, j, out + r * n);
      }
    }
    if (r < m) {
      for (int j = 0; j < 8; j += 2) {
        pass256<1, 2>(x + r * k, k, n, group_size, tile, qzeros, scales, t, j, out + r * n);
      }
    }
  }
}

#endif  // x86-64

#if defined(__aarch64__)

namespace {

//! The table's bytes split into 4 planes (plane p, entry q = byte p of lut[q]) for vqtbl1q_u8.
inline uint8x16x4_t lut_planes(float zero, uint16_t scale_bits) {
  const float16x4_t h = vreinterpret_f16_u16(vdup_n_u16(scale_bits));
  const float32x4_t s = vdupq_n_f32(vgetq_lane_f32(vcvt_f32_f16(h), 0));
  const float32x4_t z = vdupq_n_f32(zero);
  float lut[16];
  for (int q = 0; q < 16; q += 4) {
    const float iota[4] = {float(q), float(q + 1), float(q + 2), float(q + 3)};
    const float32x4_t v = vmulq_f32(vsubq_f32(vld1q_f32(iota), z), s);  // exact
    vst1q_f32(lut + q, vcvt_f32_f16(vcvt_f16_f32(v)));  // round to float16 (to nearest, even)
  }
  return vld4q_u8(reinterpret_cast<const uint8_t*>(lut));  // de-interleaves bytes by 4
}

//! The 16 floats lut[idx[i]], i = 0..15, as 4 vectors of 4 (bytes gathered per plane, then
//! re-interleaved: bytes 0,1 then halves 01,23).
inline void lookup_neon(const uint8x16x4_t& pl, uint8x16_t idx, float32x4_t* w) {
  const uint8x16_t b0 = vqtbl1q_u8(pl.val[0], idx), b1 = vqtbl1q_u8(pl.val[1], idx);
  const uint8x16_t b2 = vqtbl1q_u8(pl.val[2], idx), b3 = vqtbl1q_u8(pl.val[3], idx);
  const uint16x8_t l01 = vreinterpretq_u16_u8(vzip1q_u8(b0, b1));
  const uint16x8_t h01 = vreinterpretq_u16_u8(vzip2q_u8(b0, b1));
  const uint16x8_t l23 = vreinterpretq_u16_u8(vzip1q_u8(b2, b3));
  const uint16x8_t h23 = vreinterpretq_u16_u8(vzip2q_u8(b2, b3));
  w[0] = vreinterpretq_f32_u16(vzip1q_u16(l01, l23));
  w[1] = vreinterpretq_f32_u16(vzip2q_u16(l01, l23));
  w[2] = vreinterpretq_f32_u16(vzip1q_u16(h01, h23));
  w[3] = vreinterpretq_f32_u16(vzip2q_u16(h01, h23));
}

}  // namespace

void tiles_neon(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales, int64_t t0,
                int64_t t1, float* out) {
  // One (row, column) at a time: 8 accumulators (acc[q] = p[4q .. 4q + 3]) + 4 table planes.
  const int64_t blocks_per_group = group_size / 32;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = packed + t * k * 4;
    for (int j = 0; j < 8; ++j) {
      for (int64_t r = 0; r < m; ++r) {
        const float* xr = x + r * k;
        float32x4_t acc[8];
        for (int q = 0; q < 8; ++q) acc[q] = vdupq_n_f32(0.0f);
        for (int64_t g = 0; g < k / group_size; ++g) {
          float zero;
          uint16_t sb;
          group_column(qzeros, scales, g, n, t, j, &zero, &sb);
          const uint8x16x4_t pl = lut_planes(zero, sb);
          for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
            const uint8x16_t v = vld1q_u8(tile + b * 128 + j * 16);
            float32x4_t w[8];
            lookup_neon(pl, vandq_u8(v, vdupq_n_u8(0xf)), w);
            lookup_neon(pl, vshrq_n_u8(v, 4), w + 4);
            for (int q = 0; q < 8; ++q) {
              acc[q] = vfmaq_f32(acc[q], w[q], vld1q_f32(xr + 32 * b + 4 * q));  // fused
            }
          }
        }
        // p[j] += p[j + 16], += 8, += 4, += 2, += 1
        const float32x4_t a0 = vaddq_f32(acc[0], acc[4]), a1 = vaddq_f32(acc[1], acc[5]);
        const float32x4_t a2 = vaddq_f32(acc[2], acc[6]), a3 = vaddq_f32(acc[3], acc[7]);
        const float32x4_t s4 = vaddq_f32(vaddq_f32(a0, a2), vaddq_f32(a1, a3));
        const float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));
        out[r * n + 8 * t + j] = vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
      }
    }
  }
}

#endif  // aarch64

}  // namespace w4a16_packed
}  // namespace vilau
