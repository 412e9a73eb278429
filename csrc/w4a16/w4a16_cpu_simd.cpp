// SIMD paths of the CPU W4A16 GEMV: AVX2 and AVX-512 on x86-64 (chosen at run time, compiled
// with per-function target attributes so the rest of the library stays baseline x86-64), NEON on
// aarch64. Semantics and summation order: see w4a16_cpu_simd.h.
//
// Loop order: for each group of G rows, for each pass of kRowBlock rows, for each block of W
// packed words, the M x W vector accumulators stay in registers over the pass's rows; a row's
// cache line (16 words) is reused by the following blocks while the pass's lines sit in L1. Per 8 weights and row of x: broadcast a
// packed word, shift each lane by its column's nibble offset, mask, convert, one FMA for
// (code - zero) * scale (exact: see below), round to float16 and back (F16C), then multiply-add
// into each row of x. W independent words per block hide the add latency at M = 1.
//
// Exactness of the dequantization: code * scale and zero * scale have at most 4 + 11 bits, so
// fma(code, scale, -(zero * scale)) is (code - zero) * scale exactly, as the scalar path computes.
#include "w4a16/w4a16_cpu_simd.h"

#include <algorithm>

#include "common/x86_intrin.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vilau {
namespace w4a16_simd {

namespace {

//! Packed words per register block: enough independent accumulators at small M, and at most
//! 8 (AVX2: 16 registers) accumulators in all.
constexpr int block_words(int m) { return m <= 2 ? 4 : (m <= 4 ? 2 : 1); }

//! Rows per pass of the register blocks over one cache line's words. Rows a power-of-two
//! stride apart (N = 4096: 2 KiB) share 2 of the 64 L1 sets; a short pass keeps its lines (8 of
//! the 16 ways) in L1 until the line's last block has used them. Whole groups (128 rows) per
//! pass evicted every line before the next block came, and reread it from L2 4 times.
constexpr int64_t kRowBlock = 8;

}  // namespace

#if defined(__x86_64__) || defined(_M_X64)

#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))
#define VILAU_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace {

//! Right-shift of lane j that brings column 8c + j of a packed word to bits 0..3 (w4a16_pack.h:
//! nibble {0, 4, 1, 5, 2, 6, 3, 7}[j]).
#define VILAU_AWQ_SHIFTS 0, 16, 4, 20, 8, 24, 12, 28

VILAU_AVX2 inline __m256 codes8(int32_t word, __m256i shifts, __m256i mask) {
  const __m256i c = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), mask);
  return _mm256_cvtepi32_ps(c);
}

//! Scales and -(zero * scale) of group g for the chunk's columns, as floats, into s and nzs.
VILAU_AVX2 void group_params_avx2(const int32_t* qzeros, const uint16_t* scales, int64_t g,
                                  int64_t n, int64_t word0, int64_t words, float* s,
                                  float* nzs) {
  const __m256i shifts = _mm256_setr_epi32(VILAU_AWQ_SHIFTS);
  const __m256i mask = _mm256_set1_epi32(0xf);
  const int32_t* zrow = qzeros + g * (n / 8) + word0;
  const uint16_t* srow = scales + g * n + word0 * 8;
  for (int64_t w = 0; w < words; ++w) {
    const __m256 sc =
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(srow + w * 8)));
    const __m256 z = codes8(zrow[w], shifts, mask);
    _mm256_storeu_ps(s + w * 8, sc);
    _mm256_storeu_ps(nzs + w * 8, _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, sc)));
  }
}

//! acc[r, 8W columns] += x[r, G rows] @ W_T[G rows, 8W columns] for one block of W words.
template <int M, int W>
VILAU_AVX2 inline void block_avx2(const float* xg, int64_t k, const int32_t* q, int64_t nw,
                                  int64_t rows, const float* s, const float* nzs, float* acc,
                                  int64_t ld_acc) {
  const __m256i shifts = _mm256_setr_epi32(VILAU_AWQ_SHIFTS);
  const __m256i mask = _mm256_set1_epi32(0xf);
  __m256 a[M][W];
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < W; ++j) a[r][j] = _mm256_loadu_ps(acc + r * ld_acc + j * 8);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t* qi = q + i * nw;
    __m256 wv[W];
    for (int j = 0; j < W; ++j) {
      const __m256 v = _mm256_fmadd_ps(codes8(qi[j], shifts, mask), _mm256_loadu_ps(s + j * 8),
                                       _mm256_loadu_ps(nzs + j * 8));
      wv[j] = _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (int r = 0; r < M; ++r) {
      const __m256 xv = _mm256_broadcast_ss(xg + r * k + i);
      for (int j = 0; j < W; ++j) a[r][j] = _mm256_add_ps(a[r][j], _mm256_mul_ps(xv, wv[j]));
    }
  }
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < W; ++j) _mm256_storeu_ps(acc + r * ld_acc + j * 8, a[r][j]);
}

template <int M>
VILAU_AVX2 void chunk_avx2(const float* x, int64_t k, int64_t n, int64_t group_size,
                           const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                           int64_t word0, int64_t words, float* acc, int64_t ld_acc,
                           float* scratch, int64_t g0, int64_t g1) {
  constexpr int W = block_words(M);
  const int64_t nw = n / 8;
  float* s = scratch;
  float* nzs = scratch + 8 * words;
  for (int64_t g = g0; g < g1; ++g) {
    group_params_avx2(qzeros, scales, g, n, word0, words, s, nzs);
    const int32_t* qg = qweight + g * group_size * nw + word0;
    const float* xg = x + g * group_size;
    for (int64_t r0 = 0; r0 < group_size; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, group_size - r0);
      const int32_t* qr = qg + r0 * nw;
      int64_t w = 0;
      for (; w + W <= words; w += W) {
        block_avx2<M, W>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                         ld_acc);
      }
      for (; w < words; ++w) {
        block_avx2<M, 1>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                         ld_acc);
      }
    }
  }
}

//! Lanes 0..7 hold packed word p[0], lanes 8..15 p[1], each shifted to its column's nibble.
VILAU_AVX512 inline __m512 codes16(const int32_t* p, __m512i spread, __m512i shifts,
                                   __m512i mask) {
  const __m512i pair =
      _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m512i words = _mm512_permutexvar_epi32(spread, pair);
  return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(words, shifts), mask));
}

//! block_avx2 with 16-column vectors: W vectors = 2W packed words.
template <int M, int W>
VILAU_AVX512 inline void block_avx512(const float* xg, int64_t k, const int32_t* q, int64_t nw,
                                      int64_t rows, const float* s, const float* nzs, float* acc,
                                      int64_t ld_acc) {
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i shifts =
      _mm512_setr_epi32(0, 16, 4, 20, 8, 24, 12, 28, 0, 16, 4, 20, 8, 24, 12, 28);
  const __m512i mask = _mm512_set1_epi32(0xf);
  __m512 a[M][W];
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < W; ++j) a[r][j] = _mm512_loadu_ps(acc + r * ld_acc + j * 16);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t* qi = q + i * nw;
    __m512 wv[W];
    for (int j = 0; j < W; ++j) {
      const __m512 v = _mm512_fmadd_ps(codes16(qi + 2 * j, spread, shifts, mask),
                                       _mm512_loadu_ps(s + j * 16), _mm512_loadu_ps(nzs + j * 16));
      wv[j] = _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    for (int r = 0; r < M; ++r) {
      const __m512 xv = _mm512_set1_ps(xg[r * k + i]);
      for (int j = 0; j < W; ++j) a[r][j] = _mm512_add_ps(a[r][j], _mm512_mul_ps(xv, wv[j]));
    }
  }
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < W; ++j) _mm512_storeu_ps(acc + r * ld_acc + j * 16, a[r][j]);
}

template <int M>
VILAU_AVX512 void chunk_avx512(const float* x, int64_t k, int64_t n, int64_t group_size,
                               const int32_t* qweight, const int32_t* qzeros,
                               const uint16_t* scales, int64_t word0, int64_t words, float* acc,
                               int64_t ld_acc, float* scratch, int64_t g0, int64_t g1) {
  constexpr int W = block_words(M);  // 16-column vectors per block (32 registers)
  const int64_t nw = n / 8;
  float* s = scratch;
  float* nzs = scratch + 8 * words;
  for (int64_t g = g0; g < g1; ++g) {
    group_params_avx2(qzeros, scales, g, n, word0, words, s, nzs);
    const int32_t* qg = qweight + g * group_size * nw + word0;
    const float* xg = x + g * group_size;
    for (int64_t r0 = 0; r0 < group_size; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, group_size - r0);
      const int32_t* qr = qg + r0 * nw;
      int64_t w = 0;
      for (; w + 2 * W <= words; w += 2 * W) {
        block_avx512<M, W>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                           ld_acc);
      }
      for (; w + 2 <= words; w += 2) {
        block_avx512<M, 1>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                           ld_acc);
      }
      for (; w < words; ++w) {  // an odd last word
        block_avx2<M, 1>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                         ld_acc);
      }
    }
  }
}


//! Rows [i0, i1) of W_T, all N columns, into out (row i at out + (i - i0) * N): float32, or
//! float16 bits when @p half_out. scratch: 2 * N floats.
VILAU_AVX2 void dequant_rows_avx2_impl(const int32_t* qweight, const int32_t* qzeros,
                                       const uint16_t* scales, int64_t i0, int64_t i1, int64_t n,
                                       int64_t group_size, void* out, bool half_out,
                                       float* scratch) {
  const __m256i shifts = _mm256_setr_epi32(VILAU_AWQ_SHIFTS);
  const __m256i mask = _mm256_set1_epi32(0xf);
  const int64_t nw = n / 8;
  float* s = scratch;
  float* nzs = scratch + n;
  int64_t group = -1;
  for (int64_t i = i0; i < i1; ++i) {
    if (i / group_size != group) {
      group = i / group_size;
      group_params_avx2(qzeros, scales, group, n, 0, nw, s, nzs);
    }
    const int32_t* row = qweight + i * nw;
    for (int64_t w = 0; w < nw; ++w) {
      const __m256 v = _mm256_fmadd_ps(codes8(row[w], shifts, mask), _mm256_loadu_ps(s + 8 * w),
                                       _mm256_loadu_ps(nzs + 8 * w));
      const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (half_out) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) +
                                                    (i - i0) * n + 8 * w), h);
      } else {
        _mm256_storeu_ps(static_cast<float*>(out) + (i - i0) * n + 8 * w, _mm256_cvtph_ps(h));
      }
    }
  }
}

}  // namespace

void dequant_rows_avx2(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                       int64_t i0, int64_t i1, int64_t n, int64_t group_size, void* out,
                       bool half_out, float* scratch) {
  dequant_rows_avx2_impl(qweight, qzeros, scales, i0, i1, n, group_size, out, half_out,
                         scratch);
}


#define VILAU_DISPATCH_M(fn)                                                               \
  switch (m) {                                                                             \
    case 1: fn<1>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 2: fn<2>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 3: fn<3>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 4: fn<4>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 5: fn<5>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 6: fn<6>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    case 7: fn<7>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                  scratch, g0, g1); break;                                                         \
    default: fn<8>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc, ld_acc, \
                   scratch, g0, g1); break;                                                        \
  }

void gemv_chunk_avx2(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                     const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                     int64_t g0, int64_t g1) {
  VILAU_DISPATCH_M(chunk_avx2)
}

void gemv_chunk_avx512(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                       const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                       int64_t word0, int64_t words, float* acc, int64_t ld_acc,
                       float* scratch, int64_t g0, int64_t g1) {
  VILAU_DISPATCH_M(chunk_avx512)
}

#endif  // x86-64

#if defined(__aarch64__)

namespace {

//! Columns 8c + 0..3 (lo) and 8c + 4..7 (hi) of a packed word, as floats.
inline void codes8_neon(int32_t word, float32x4_t* lo, float32x4_t* hi) {
  static const int32_t kShiftLo[4] = {0, -16, -4, -20};  // negative: vshlq shifts right
  static const int32_t kShiftHi[4] = {-8, -24, -12, -28};
  const uint32x4_t v = vdupq_n_u32(static_cast<uint32_t>(word));
  const uint32x4_t mask = vdupq_n_u32(0xf);
  *lo = vcvtq_f32_u32(vandq_u32(vshlq_u32(v, vld1q_s32(kShiftLo)), mask));
  *hi = vcvtq_f32_u32(vandq_u32(vshlq_u32(v, vld1q_s32(kShiftHi)), mask));
}

//! Round to float16 (FPCR default: to nearest, ties to even) and back.
inline float32x4_t round_to_half_neon(float32x4_t v) { return vcvt_f32_f16(vcvt_f16_f32(v)); }

template <int M, int W>
inline void block_neon(const float* xg, int64_t k, const int32_t* q, int64_t nw, int64_t rows,
                       const float* s, const float* nzs, float* acc, int64_t ld_acc) {
  float32x4_t a[M][2 * W];
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < 2 * W; ++j) a[r][j] = vld1q_f32(acc + r * ld_acc + j * 4);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t* qi = q + i * nw;
    float32x4_t wv[2 * W];
    for (int j = 0; j < W; ++j) {
      float32x4_t lo, hi;
      codes8_neon(qi[j], &lo, &hi);
      // vfmaq_f32(c, a, b) = c + a * b, one rounding: exact here (see the file comment)
      wv[2 * j] = round_to_half_neon(
          vfmaq_f32(vld1q_f32(nzs + 8 * j), lo, vld1q_f32(s + 8 * j)));
      wv[2 * j + 1] = round_to_half_neon(
          vfmaq_f32(vld1q_f32(nzs + 8 * j + 4), hi, vld1q_f32(s + 8 * j + 4)));
    }
    for (int r = 0; r < M; ++r) {
      const float32x4_t xv = vdupq_n_f32(xg[r * k + i]);
      for (int j = 0; j < 2 * W; ++j) a[r][j] = vaddq_f32(a[r][j], vmulq_f32(xv, wv[j]));
    }
  }
  for (int r = 0; r < M; ++r)
    for (int j = 0; j < 2 * W; ++j) vst1q_f32(acc + r * ld_acc + j * 4, a[r][j]);
}

template <int M>
void chunk_neon(const float* x, int64_t k, int64_t n, int64_t group_size,
                const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                int64_t g0, int64_t g1) {
  constexpr int W = block_words(M) > 2 ? 2 : block_words(M);  // 32 registers of 4 lanes
  const int64_t nw = n / 8;
  float* s = scratch;
  float* nzs = scratch + 8 * words;
  for (int64_t g = g0; g < g1; ++g) {
    const int32_t* zrow = qzeros + g * nw + word0;
    const uint16_t* srow = scales + g * n + word0 * 8;
    for (int64_t w = 0; w < words; ++w) {
      float32x4_t zlo, zhi;
      codes8_neon(zrow[w], &zlo, &zhi);
      const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(srow + w * 8));
      const float32x4_t slo = vcvt_f32_f16(vget_low_f16(h));
      const float32x4_t shi = vcvt_f32_f16(vget_high_f16(h));
      vst1q_f32(s + 8 * w, slo);
      vst1q_f32(s + 8 * w + 4, shi);
      vst1q_f32(nzs + 8 * w, vnegq_f32(vmulq_f32(zlo, slo)));
      vst1q_f32(nzs + 8 * w + 4, vnegq_f32(vmulq_f32(zhi, shi)));
    }
    const int32_t* qg = qweight + g * group_size * nw + word0;
    const float* xg = x + g * group_size;
    for (int64_t r0 = 0; r0 < group_size; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, group_size - r0);
      const int32_t* qr = qg + r0 * nw;
      int64_t w = 0;
      for (; w + W <= words; w += W) {
        block_neon<M, W>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                         ld_acc);
      }
      for (; w < words; ++w) {
        block_neon<M, 1>(xg + r0, k, qr + w, nw, rows, s + 8 * w, nzs + 8 * w, acc + 8 * w,
                         ld_acc);
      }
    }
  }
}

}  // namespace

void gemv_chunk_neon(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                     const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     int64_t word0, int64_t words, float* acc, int64_t ld_acc, float* scratch,
                     int64_t g0, int64_t g1) {
  switch (m) {
    case 1: chunk_neon<1>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 2: chunk_neon<2>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 3: chunk_neon<3>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 4: chunk_neon<4>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 5: chunk_neon<5>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 6: chunk_neon<6>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    case 7: chunk_neon<7>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                          ld_acc, scratch, g0, g1); break;
    default: chunk_neon<8>(x, k, n, group_size, qweight, qzeros, scales, word0, words, acc,
                           ld_acc, scratch, g0, g1); break;
  }
}

#endif  // aarch64

}  // namespace w4a16_simd
}  // namespace vilau
