// x86-64 paths of the W4A8 and W8A8 GEMVs (w4a8.h), chosen at run time: AVX-512 VNNI and AVX2.
// The integer dot products are exact, so only the float epilogue has an order to keep: per block
// fma(float(D), d, a), per group fma(a, scale, acc), as the scalar reference in w4a8_cpu.cpp.
//
// A 64-byte chunk of the layout holds 4 k-consecutive codes of 16 columns in each nibble half, so
// one lane of a 512-bit vector is one output column: vpdpbusd multiplies the chunk's low nibbles
// (unsigned) by 4 broadcast int8 activations and adds the 4 products into that column's int32
// sum. Per 128 weights of a column that is a load, two ands, a shift and two vpdpbusd, against
// the W4A16 packed GEMV's 8 lookups and 8 float FMAs.
#include "w4a8/w4a8_simd.h"

#include "common/cpu_isa.h"
#include "common/x86_intrin.h"
#include "w4a8/w4a8.h"
#include "w4a8/w4a8_tiles.h"

namespace vilau {
namespace w4a8 {

#if defined(__x86_64__) || defined(_M_X64)

bool cpu_has_avx512_vnni() {
  return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
}

#define VILAU_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

//! Rows [0, R) of one tile (16 columns) over all of K; out at (row 0, the tile's first column).
template <int R>
VILAU_VNNI void pass_vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t k,
                          int64_t n, int64_t group_size, const uint8_t* tile,
                          const uint8_t* zeros, const uint16_t* scales, float* out) {
  const int64_t blocks = k / kW4A8Block, bpg = group_size / kW4A8Block;
  const __m512i low = _mm512_set1_epi8(0x0f);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < k / group_size; ++g) {
    const __m512i z =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + 16 * g)));
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      __m512i lo[4], hi[4];
      for (int c = 0; c < 4; ++c) {
        const __m512i v = _mm512_loadu_si512(tile + (4 * b + c) * 64);
        lo[c] = _mm512_and_si512(v, low);
        hi[c] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* x = xq + r * k + kW4A8Block * b;
        __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
          i0 = _mm512_dpbusd_epi32(i0, lo[c], _mm512_set1_epi32(four(x + 8 * c)));
          i1 = _mm512_dpbusd_epi32(i1, hi[c], _mm512_set1_epi32(four(x + 8 * c + 4)));
        }
        const __m512i D = _mm512_sub_epi32(
            _mm512_add_epi32(i0, i1), _mm512_mullo_epi32(z, _mm512_set1_epi32(s[r * blocks + b])));
        a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D), _mm512_set1_ps(d[r * blocks + b]), a[r]);
      }
    }
    const __m512 scale = _mm512_cvtph_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + 16 * g)));
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(a[r], scale, acc[r]);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + r * n, acc[r]);
}

//! pass_vnni with 256-bit vectors: lanes 0-7 of a chunk's first 32 bytes are columns 0-7, the
//! second 32 bytes columns 8-15. The 4 products of a lane come from vpmaddubsw (u8 x s8 pairs to
//! int16) and vpmaddwd by ones; a block's 8 pair sums stay below 8 * 2 * 15 * 127 = 30480, so they
//! are added in int16 before the one widening.
template <int R>
VILAU_AVX2 void pass_avx2(const int8_t* xq, const float* d, const int32_t* s, int64_t k,
                          int64_t n, int64_t group_size, const uint8_t* tile,
                          const uint8_t* zeros, const uint16_t* scales, float* out) {
  const int64_t blocks = k / kW4A8Block, bpg = group_size / kW4A8Block;
  const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < k / group_size; ++g) {
    __m256i z[2];
    for (int h = 0; h < 2; ++h) {
      z[h] = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(zeros + 16 * g + 8 * h)));
    }
    __m256 a[R][2];
    for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      __m256i p[R][2];
      for (int r = 0; r < R; ++r) p[r][0] = p[r][1] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        for (int h = 0; h < 2; ++h) {
          const uint8_t* half = tile + (4 * b + c) * 64 + 32 * h;
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half));
          const __m256i lo = _mm256_and_si256(v, low);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
          for (int r = 0; r < R; ++r) {
            const int8_t* x = xq + r * k + kW4A8Block * b + 8 * c;
            p[r][h] = _mm256_add_epi16(
                p[r][h], _mm256_add_epi16(
                             _mm256_maddubs_epi16(lo, _mm256_set1_epi32(four(x))),
                             _mm256_maddubs_epi16(hi, _mm256_set1_epi32(four(x + 4)))));
          }
        }
      }
      for (int r = 0; r < R; ++r) {
        const __m256i sb = _mm256_set1_epi32(s[r * blocks + b]);
        const __m256 db = _mm256_set1_ps(d[r * blocks + b]);
        for (int h = 0; h < 2; ++h) {
          const __m256i D = _mm256_sub_epi32(_mm256_madd_epi16(p[r][h], ones),
                                             _mm256_mullo_epi32(z[h], sb));
          a[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(D), db, a[r][h]);
        }
      }
    }
    for (int h = 0; h < 2; ++h) {
      const __m256 scale = _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 16 * g + 8 * h)));
      for (int r = 0; r < R; ++r) acc[r][h] = _mm256_fmadd_ps(a[r][h], scale, acc[r][h]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out + r * n, acc[r][0]);
    _mm256_storeu_ps(out + r * n + 8, acc[r][1]);
  }
}

//! The W8A8 pass (rows [0, R) of one 16-row tile): a chunk's bytes are the codes w + 128 of 4
//! k-consecutive weights of each of the tile's 16 rows; vpdpbusd sums (w + 128) * xq, so the
//! block's sum is that minus 128 * s[b].
template <int R>
VILAU_VNNI void pass8_vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t k,
                           const uint8_t* tile, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  __m512 a[R];
  for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i v[8];
    for (int c = 0; c < 8; ++c) v[c] = _mm512_loadu_si512(tile + (8 * b + c) * 64);
    for (int r = 0; r < R; ++r) {
      const int8_t* x = xq + r * k + kW4A8Block * b;
      __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
      for (int c = 0; c < 8; c += 2) {
        i0 = _mm512_dpbusd_epi32(i0, v[c], _mm512_set1_epi32(four(x + 4 * c)));
        i1 = _mm512_dpbusd_epi32(i1, v[c + 1], _mm512_set1_epi32(four(x + 4 * c + 4)));
      }
      const __m512i D = _mm512_sub_epi32(_mm512_add_epi32(i0, i1),
                                         _mm512_set1_epi32(128 * s[r * blocks + b]));
      a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(D), _mm512_set1_ps(d[r * blocks + b]), a[r]);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + r * ldo, a[r]);
}

//! pass8_vnni with 256-bit vectors. vpmaddubsw needs one unsigned operand and saturates pairs at
//! int16: it multiplies |w| (the code xor 0x80 is w as int8; |w| <= 128) by xq carrying w's sign
//! (vpsignb), so a pair is at most 2 * 128 * 127 = 32512, and the block's sum is D itself.
template <int R>
VILAU_AVX2 void pass8_avx2(const int8_t* xq, const float* d, const int32_t* /*s*/, int64_t k,
                           const uint8_t* tile, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  __m256 a[R][2];
  for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      for (int h = 0; h < 2; ++h) {
        const __m256i w = _mm256_xor_si256(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + (8 * b + c) * 64 + 32 * h)),
            flip);
        const __m256i aw = _mm256_abs_epi8(w);
        for (int r = 0; r < R; ++r) {
          const __m256i x = _mm256_set1_epi32(four(xq + r * k + kW4A8Block * b + 4 * c));
          const __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w));
          acc[r][h] = _mm256_add_epi32(acc[r][h], _mm256_madd_epi16(p, ones));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const __m256 db = _mm256_set1_ps(d[r * blocks + b]);
      for (int h = 0; h < 2; ++h) {
        a[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][h]), db, a[r][h]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm256_storeu_ps(out + r * ldo, a[r][0]);
    _mm256_storeu_ps(out + r * ldo + 8, a[r][1]);
  }
}

}  // namespace

void tiles_avx512vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                      int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                      const uint16_t* scales, int64_t t0, int64_t t1, float* out) {
  tiles<4, pass_vnni<1>, pass_vnni<4>>(xq, d, s, m, k, n, group_size, codes, zeros, scales, t0,
                                       t1, out);
}

void tiles_avx2(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                const uint16_t* scales, int64_t t0, int64_t t1, float* out) {
  tiles<2, pass_avx2<1>, pass_avx2<2>>(xq, d, s, m, k, n, group_size, codes, zeros, scales, t0,
                                       t1, out);
}

void tiles8_avx512vnni(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                       const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo) {
  tiles8<4, pass8_vnni<1>, pass8_vnni<4>>(xq, d, s, m, k, codes8, t0, t1, out, ldo);
}

void tiles8_avx2(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                 const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo) {
  tiles8<2, pass8_avx2<1>, pass8_avx2<2>>(xq, d, s, m, k, codes8, t0, t1, out, ldo);
}

#endif  // x86-64

}  // namespace w4a8
}  // namespace vilau
