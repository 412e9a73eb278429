// CPU paths of the float32-activation GEMM (gemm_f32.h): the weight sources and their packers,
// register tiles per instruction set, the scalar reference, and the driver that blocks and
// threads them. A source is where W's values come from: a dense [N, K] matrix (Dense<T>) or the
// AutoAWQ GEMM format (Awq, dequantized while packed); the tiles only ever see packed float32.
// x86-64 paths are compiled with per-function target attributes and chosen at run time, so the
// library stays baseline x86-64; NEON is part of every aarch64 CPU. Built with
// -ffp-contract=off: the bias add must round on its own, as in the reference.
#include "gemm/gemm_f32.h"

#include "common/checks.h"
#include "common/cpu_isa.h"
#include "common/dtype.h"
#include "common/float_cpu.h"
#include "common/threads.h"
#include "common/widen_x86.h"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_pack.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/x86_intrin.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vilau {

namespace {

constexpr int kNR = 32;   //!< columns of y per packed panel and register tile
constexpr int kKC = 256;  //!< values of k per packed block
constexpr int kNC = 128;  //!< columns per packed block: 4 panels, 128 KiB of float32 (L2)
// Measured on the development CPU (AVX-512, 2 threads, 100 x 1024 x 2816 and 7B shapes): KC 256 /
// NC 128 and KC 512 / NC 256 ran 180-200 GFLOP/s, KC 128 or NC 512 lost 10-40%.

//! W [N, K] row-major of T (float, Half, BFloat16): W[o, i] = w[o * k + i].
template <class T>
struct Dense {
  const T* w;
  int64_t k, n;
  float at(int64_t o, int64_t i) const { return to_float(w[o * k + i]); }
};

//! The AutoAWQ GEMM format (w4a16.h): W[o, i] = W_T[i, o] = round_to_half((code - zero) *
//! scale), the float16 weight the format defines, as w4a16_dequantize_cpu writes it.
struct Awq {
  const int32_t* qweight;  //!< [K, N / 8]
  const int32_t* qzeros;   //!< [K / G, N / 8]
  const Half* scales;      //!< [K / G, N]
  int64_t k, n, group_size;
  float at(int64_t o, int64_t i) const {
    const int64_t g = i / group_size;
    const int code = awq_unpack(qweight[i * (n / 8) + o / 8], static_cast<int>(o % 8));
    const int zero = awq_unpack(qzeros[g * (n / 8) + o / 8], static_cast<int>(o % 8));
    return round_to_half(static_cast<float>(code - zero) * to_float(scales[g * n + o]));
  }
};

//! The reference: rows [0, m) x columns [n0, n1) of y, in the order of gemm_f32.h.
template <class Src>
void gemm_scalar(const float* x, const Src& src, const float* bias, float* y, int64_t m,
                 int64_t n0, int64_t n1) {
  const int64_t k = src.k, n = src.n;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t o = n0; o < n1; ++o) {
      float a = 0.0f;
      for (int64_t i = 0; i < k; ++i) a = std::fma(x[r * k + i], src.at(o, i), a);
      y[r * n + o] = bias ? a + bias[o] : a;
    }
  }
}

//! Panel of W's rows [n0, n0 + 32) at k [k0, k0 + kc) into dst[kk * 32 + c] (float32, exact),
//! columns at or past N as zeros. The portable packer; the AVX-512 ones below do 16 values an
//! instruction and fall back to this at the edges.
template <class Src>
void pack_panel_scalar(const Src& src, int64_t n0, int64_t k0, int kc, float* dst) {
  for (int c = 0; c < kNR; ++c) {
    const int64_t col = n0 + c;
    for (int kk = 0; kk < kc; ++kk) dst[kk * kNR + c] = col < src.n ? src.at(col, k0 + kk) : 0.0f;
  }
}

// ------------------------------------------------------------------------------ x86-64 paths

#if defined(__x86_64__) || defined(_M_X64)

#define VILAU_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))

using widen::load16;

//! r[i] holds row i of a 16 x 16 tile; afterwards r[j] holds its column j.
VILAU_AVX512 inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // r[4q + j] now holds, in each 128-bit lane L, column 4L + j of rows 4q..4q+3; gather the lanes.
  for (int j = 0; j < 4; ++j) {
    const __m512 ab_lo = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    const __m512 ab_hi = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    const __m512 cd_lo = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    const __m512 cd_hi = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    t[j] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);
    t[j + 4] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);
    t[j + 8] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xDD);
    t[j + 12] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

template <class T>
VILAU_AVX512 void pack_panel_avx512(const Dense<T>& src, int64_t n0, int64_t k0, int kc,
                                    float* dst) {
  if (n0 + kNR > src.n || kc % 16) {  // an edge panel: the portable packer
    pack_panel_scalar(src, n0, k0, kc, dst);
    return;
  }
  for (int c = 0; c < kNR; c += 16) {
    for (int kk = 0; kk < kc; kk += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = load16(src.w + (n0 + c + i) * src.k + k0 + kk);
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (kk + i) * kNR + c, r[i]);
    }
  }
}

//! 16 codes as float32: lane l takes word which[l] of @p words and its nibble at shifts[l].
VILAU_AVX512 inline __m512 awq_codes16(__m128i words, __m512i which, __m512i shifts) {
  const __m512i v = _mm512_permutexvar_epi32(which, _mm512_castsi128_si512(words));
  return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(v, shifts), _mm512_set1_epi32(0xf)));
}

//! AWQ panel: per k, the panel's 4 packed words give 32 codes (each lane shifts its word by its
//! column's nibble offset), (code - zero) * scale as fma(code, scale, -(zero * scale)) (exact:
//! both products fit in 4 + 11 bits), then rounded to float16 and back, as Awq::at.
VILAU_AVX512 void pack_panel_avx512(const Awq& src, int64_t n0, int64_t k0, int kc, float* dst) {
  if (n0 + kNR > src.n) {
    pack_panel_scalar(src, n0, k0, kc, dst);
    return;
  }
  const int64_t nw = src.n / 8, w0 = n0 / 8;
  // Lane l of half h reads word 2h + l / 8 of the panel's 4 (the column 16h + l).
  const __m512i lo_words = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const __m512i hi_words = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m512i shifts =
      _mm512_setr_epi32(0, 16, 4, 20, 8, 24, 12, 28, 0, 16, 4, 20, 8, 24, 12, 28);
  int64_t g_loaded = -1;
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, nzs0 = s0, nzs1 = s0;  // scale, -(zero * scale)
  for (int kk = 0; kk < kc; ++kk) {
    const int64_t i = k0 + kk, g = i / src.group_size;
    if (g != g_loaded) {
      const __m128i z = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src.qzeros + g * nw + w0));
      const __m256i* sp = reinterpret_cast<const __m256i*>(src.scales + g * src.n + n0);
      s0 = _mm512_cvtph_ps(_mm256_loadu_si256(sp));
      s1 = _mm512_cvtph_ps(_mm256_loadu_si256(sp + 1));
      const __m512 zero = _mm512_setzero_ps();
      nzs0 = _mm512_sub_ps(zero, _mm512_mul_ps(awq_codes16(z, lo_words, shifts), s0));
      nzs1 = _mm512_sub_ps(zero, _mm512_mul_ps(awq_codes16(z, hi_words, shifts), s1));
      g_loaded = g;
    }
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src.qweight + i * nw + w0));
    const __m512 v0 = _mm512_fmadd_ps(awq_codes16(q, lo_words, shifts), s0, nzs0);
    const __m512 v1 = _mm512_fmadd_ps(awq_codes16(q, hi_words, shifts), s1, nzs1);
    constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    _mm512_storeu_ps(dst + kk * kNR, _mm512_cvtph_ps(_mm512_cvtps_ph(v0, kRound)));
    _mm512_storeu_ps(dst + kk * kNR + 16, _mm512_cvtph_ps(_mm512_cvtps_ph(v1, kRound)));
  }
}

//! Tile of MR rows x 32 columns: c[r, :] (+)= x[r, :kc] @ panel, + bias (last block only).
template <int MR>
VILAU_AVX512 void tile_avx512(const float* x, int64_t ldx, const float* p, int kc, float* c,
                              int64_t ldc, const float* bias, bool first) {
  __m512 a0[MR], a1[MR];
  for (int r = 0; r < MR; ++r) {
    a0[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc);
    a1[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc + 16);
  }
  for (int kk = 0; kk < kc; ++kk) {
    const __m512 w0 = _mm512_loadu_ps(p + kk * kNR);
    const __m512 w1 = _mm512_loadu_ps(p + kk * kNR + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * ldx + kk]);
      a0[r] = _mm512_fmadd_ps(xb, w0, a0[r]);
      a1[r] = _mm512_fmadd_ps(xb, w1, a1[r]);
    }
  }
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < MR; ++r) {  // no bias: stored as they are (a + 0 would turn -0 into +0)
    _mm512_storeu_ps(c + r * ldc, bias ? _mm512_add_ps(a0[r], b0) : a0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, bias ? _mm512_add_ps(a1[r], b1) : a1[r]);
  }
}

//! Tile of MR rows x 16 columns (half a panel: @p p points at its column 0 or 16).
template <int MR>
VILAU_AVX2 void half_tile_avx2(const float* x, int64_t ldx, const float* p, int kc, float* c,
                               int64_t ldc, const float* bias, bool first) {
  __m256 a0[MR], a1[MR];
  for (int r = 0; r < MR; ++r) {
    a0[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc);
    a1[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8);
  }
  for (int kk = 0; kk < kc; ++kk) {
    const __m256 w0 = _mm256_loadu_ps(p + kk * kNR);
    const __m256 w1 = _mm256_loadu_ps(p + kk * kNR + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 xb = _mm256_set1_ps(x[r * ldx + kk]);
      a0[r] = _mm256_fmadd_ps(xb, w0, a0[r]);
      a1[r] = _mm256_fmadd_ps(xb, w1, a1[r]);
    }
  }
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(c + r * ldc, bias ? _mm256_add_ps(a0[r], b0) : a0[r]);
    _mm256_storeu_ps(c + r * ldc + 8, bias ? _mm256_add_ps(a1[r], b1) : a1[r]);
  }
}

template <int MR>
VILAU_AVX2 void tile_avx2(const float* x, int64_t ldx, const float* p, int kc, float* c,
                          int64_t ldc, const float* bias, bool first) {
  half_tile_avx2<MR>(x, ldx, p, kc, c, ldc, bias, first);
  half_tile_avx2<MR>(x, ldx, p + 16, kc, c + 16, ldc, bias ? bias + 16 : nullptr, first);
}

#endif  // x86-64

// ------------------------------------------------------------------------------ aarch64 path

#if defined(__aarch64__)

//! Tile of MR rows x 16 columns (half a panel), 4 q registers a row.
template <int MR>
void half_tile_neon(const float* x, int64_t ldx, const float* p, int kc, float* c, int64_t ldc,
                    const float* bias, bool first) {
  float32x4_t a[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) {
      a[r][q] = first ? vdupq_n_f32(0.0f) : vld1q_f32(c + r * ldc + 4 * q);
    }
  for (int kk = 0; kk < kc; ++kk) {
    float32x4_t wv[4];
    for (int q = 0; q < 4; ++q) wv[q] = vld1q_f32(p + kk * kNR + 4 * q);
    for (int r = 0; r < MR; ++r) {
      const float32x4_t xb = vdupq_n_f32(x[r * ldx + kk]);
      for (int q = 0; q < 4; ++q) a[r][q] = vfmaq_f32(a[r][q], xb, wv[q]);  // a + xb * w, fused
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < 4; ++q) {
      const float32x4_t v = bias ? vaddq_f32(a[r][q], vld1q_f32(bias + 4 * q)) : a[r][q];
      vst1q_f32(c + r * ldc + 4 * q, v);
    }
  }
}

template <int MR>
void tile_neon(const float* x, int64_t ldx, const float* p, int kc, float* c, int64_t ldc,
               const float* bias, bool first) {
  half_tile_neon<MR>(x, ldx, p, kc, c, ldc, bias, first);
  half_tile_neon<MR>(x, ldx, p + 16, kc, c + 16, ldc, bias ? bias + 16 : nullptr, first);
}

#endif  // aarch64

// ------------------------------------------------------------------------------ the driver

using TileFn = void (*)(const float*, int64_t, const float*, int, float*, int64_t, const float*,
                        bool);
template <class Src>
using PackFn = void (*)(const Src&, int64_t, int64_t, int, float*);

constexpr int kMaxMR = 8;

//! One path: its packer and its tiles for 1..mr rows (tiles[i]: i + 1 rows).
template <class Src>
struct Path {
  PackFn<Src> pack;  //!< nullptr: the scalar reference
  TileFn tiles[kMaxMR];
  int mr;
};

template <class Src, template <int> class Tiles>
Path<Src> path_of(PackFn<Src> pack, int mr) {
  return {pack,
          {Tiles<1>::fn, Tiles<2>::fn, Tiles<3>::fn, Tiles<4>::fn, Tiles<5>::fn, Tiles<6>::fn,
           Tiles<7>::fn, Tiles<8>::fn},
          mr};
}

#if defined(__x86_64__) || defined(_M_X64)
template <int R>
struct Avx512Tiles {
  static constexpr TileFn fn = &tile_avx512<R>;
};
template <int R>
struct Avx2Tiles {  // 16 ymm: 2R sums + 2 weights + 1 broadcast, R <= 6
  static constexpr TileFn fn = R <= 6 ? &tile_avx2<R <= 6 ? R : 6> : nullptr;
};
#endif
#if defined(__aarch64__)
template <int R>
struct NeonTiles {  // 32 q: 4R sums + 4 weights + 1 broadcast, R <= 6
  static constexpr TileFn fn = R <= 6 ? &tile_neon<R <= 6 ? R : 6> : nullptr;
};
#endif

template <class Src>
Path<Src> path_for(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  // 32 zmm: 2 x 8 sums + 2 weights + 1 broadcast. 8 rows ran 5-25% faster than 10 or 12
  // (100 x K x N, 7B and 150M shapes, 2 threads, 2026-12-02).
  if (isa == "avx512") {
    return path_of<Src, Avx512Tiles>([](const Src& src, int64_t n0, int64_t k0, int kc,
                                        float* dst) { pack_panel_avx512(src, n0, k0, kc, dst); },
                                     8);
  }
  if (isa == "avx2") return path_of<Src, Avx2Tiles>(&pack_panel_scalar<Src>, 6);
#endif
#if defined(__aarch64__)
  if (isa == "neon") return path_of<Src, NeonTiles>(&pack_panel_scalar<Src>, 6);
#endif
  (void)isa;
  return {nullptr, {}, 0};
}

void check_sizes(const char* op, int64_t m, int64_t k, int64_t n) {
  const std::string name(op);
  if (m < 1) throw std::invalid_argument(name + ": M = " + std::to_string(m) + " must be >= 1");
  if (k < 1) throw std::invalid_argument(name + ": K = " + std::to_string(k) + " must be >= 1");
  if (n < 1) throw std::invalid_argument(name + ": N = " + std::to_string(n) + " must be >= 1");
}

//! Rows [r0, r0 + rows) of y at panel column n0 over one k block. A full panel is written in
//! place; a panel that N cuts goes through a 32-column scratch tile (the packed columns past N
//! are zeros, their sums are dropped) so no path reads or writes past y or bias.
template <class Src>
void run_tile(const Path<Src>& path, const float* x, int64_t k, const float* block, int kc,
              float* y, int64_t n, int64_t r0, int rows, int64_t n0, int64_t k0,
              const float* bias, bool last) {
  const TileFn tile = path.tiles[rows - 1];
  const float* xr = x + r0 * k + k0;
  const bool first = k0 == 0;
  const float* b = last ? bias : nullptr;
  if (n0 + kNR <= n) {
    tile(xr, k, block, kc, y + r0 * n + n0, n, b ? b + n0 : nullptr, first);
    return;
  }
  const int cols = static_cast<int>(n - n0);
  float scratch[kMaxMR * kNR] = {};
  float bpad[kNR] = {};
  if (b) std::memcpy(bpad, b + n0, cols * sizeof(float));
  if (!first) {
    for (int r = 0; r < rows; ++r) {
      std::memcpy(scratch + r * kNR, y + (r0 + r) * n + n0, cols * sizeof(float));
    }
  }
  tile(xr, k, block, kc, scratch, kNR, b ? bpad : nullptr, first);
  for (int r = 0; r < rows; ++r) {
    std::memcpy(y + (r0 + r) * n + n0, scratch + r * kNR, cols * sizeof(float));
  }
}

//! Every entry point after its checks: threads over panels, blocks over k and columns.
template <class Src>
void gemm(const char* op, const float* x, const Src& src, const float* bias, float* y,
          int64_t m, int num_threads, const std::string& isa) {
  const int64_t k = src.k, n = src.n;
  const Path<Src> path = path_for<Src>(cpu_isa(op, isa));
  const int64_t panels = (n + kNR - 1) / kNR;
#pragma omp parallel num_threads(num_threads)
  {
    int64_t p_begin, p_end;  // this thread's panels: contiguous, so it streams its part of W
    thread_share(panels, &p_begin, &p_end);
    if (path.pack == nullptr) {
      gemm_scalar(x, src, bias, y, m, p_begin * kNR, std::min(n, p_end * kNR));
    } else if (p_begin < p_end) {
      thread_local std::vector<float> block;  // [kNC / 32 panels][kKC][32], reused across calls
      block.resize(static_cast<size_t>(kNC) * kKC);
      for (int64_t pc = p_begin; pc < p_end; pc += kNC / kNR) {
        const int64_t pe = std::min(p_end, pc + kNC / kNR);
        for (int64_t k0 = 0; k0 < k; k0 += kKC) {
          const int kc = static_cast<int>(std::min<int64_t>(kKC, k - k0));
          const bool last = k0 + kc == k;
          for (int64_t p = pc; p < pe; ++p) {
            path.pack(src, p * kNR, k0, kc, block.data() + (p - pc) * kKC * kNR);
          }
          // Rows outer: x's MR rows of this k block stay in L1 while the panels stream from L2.
          for (int64_t r0 = 0; r0 < m; r0 += path.mr) {
            const int rows = static_cast<int>(std::min<int64_t>(path.mr, m - r0));
            for (int64_t p = pc; p < pe; ++p) {
              run_tile(path, x, k, block.data() + (p - pc) * kKC * kNR, kc, y, n, r0, rows,
                       p * kNR, k0, bias, last);
            }
          }
        }
      }
    }
  }
}

//! The checks every dense entry point makes, then gemm.
template <class T>
void gemm_dense(const char* op, const float* x, const T* w, const float* bias, float* y,
                int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
  check_not_null(op, x, "x");
  check_not_null(op, w, "w");
  check_not_null(op, y, "y");
  check_sizes(op, m, k, n);
  check_num_threads(op, num_threads);
  gemm(op, x, Dense<T>{w, k, n}, bias, y, m, num_threads, isa);
}

}  // namespace

void gemm_f32_check_sizes(int64_t m, int64_t k, int64_t n) { check_sizes("gemm_f32", m, k, n); }

std::vector<std::string> gemm_f32_isas() { return cpu_isas(); }

void gemm_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa) {
  gemm_dense("gemm_f32", x, w, bias, y, m, k, n, num_threads, isa);
}

void gemm_w16_cpu(const float* x, const uint16_t* w, DType w_dtype, const float* bias, float* y,
                  int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
  switch (w_dtype) {  // Half and BFloat16 hold exactly a uint16_t (float_cpu.h)
    case DType::kFloat16:
      gemm_dense("gemm_w16", x, reinterpret_cast<const Half*>(w), bias, y, m, k, n, num_threads,
                 isa);
      return;
    case DType::kBFloat16:
      gemm_dense("gemm_w16", x, reinterpret_cast<const BFloat16*>(w), bias, y, m, k, n,
                 num_threads, isa);
      return;
    default:
      throw std::invalid_argument(std::string("gemm_w16: weight dtype ") + dtype_name(w_dtype) +
                                  " is not a 16-bit float (float16 or bfloat16; float32 weights: "
                                  "gemm_f32_cpu)");
  }
}

void gemm_awq_cpu(const float* x, const int32_t* qweight, const int32_t* qzeros,
                  const uint16_t* scales, const float* bias, float* y, int64_t m, int64_t k,
                  int64_t n, int64_t group_size, int num_threads, const std::string& isa) {
  const char* op = "gemm_awq";
  check_not_null(op, x, "x");
  check_not_null(op, qweight, "qweight");
  check_not_null(op, qzeros, "qzeros");
  check_not_null(op, scales, "scales");
  check_not_null(op, y, "y");
  check_sizes(op, m, k, n);
  w4a16_check_sizes(m, k, n, group_size);
  check_num_threads(op, num_threads);
  const Awq src{qweight, qzeros, reinterpret_cast<const Half*>(scales), k, n, group_size};
  gemm(op, x, src, bias, y, m, num_threads, isa);
}

}  // namespace vilau
