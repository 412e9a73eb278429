// CPU paths of the float32-activation GEMM (gemm_f32.h): packing, register tiles per instruction
// set, the scalar reference, and the driver that blocks and threads them.
// x86-64 paths are compiled with per-function target attributes and chosen at run time, so the
// library stays baseline x86-64; NEON is part of every aarch64 CPU. Built with
// -ffp-contract=off: the bias add must round on its own, as in the reference.
#include "gemm/gemm_f32.h"

#include "common/cpu_isa.h"
#include "common/dtype.h"
#include "common/float_cpu.h"
#include "common/threads.h"

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

//! The reference: rows [0, m) x columns [n0, n1) of y, in the order of gemm_f32.h.
template <class T>
void gemm_scalar(const float* x, const T* w, const float* bias, float* y, int64_t m, int64_t k,
                 int64_t n, int64_t n0, int64_t n1) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t o = n0; o < n1; ++o) {
      float a = 0.0f;
      for (int64_t i = 0; i < k; ++i) a = std::fma(x[r * k + i], to_float(w[o * k + i]), a);
      y[r * n + o] = bias ? a + bias[o] : a;
    }
  }
}

//! Panel of W's rows [n0, n0 + 32) at k [k0, k0 + kc) into dst[kk * 32 + c] (float32, exact),
//! columns at or past n as zeros. The portable packer; the AVX-512 one below transposes 16 x 16
//! tiles in registers and falls back to this at the edges.
template <class T>
void pack_panel_scalar(const T* w, int64_t k, int64_t n, int64_t n0, int64_t k0, int kc,
                       float* dst) {
  for (int c = 0; c < kNR; ++c) {
    const int64_t col = n0 + c;
    if (col >= n) {
      for (int kk = 0; kk < kc; ++kk) dst[kk * kNR + c] = 0.0f;
      continue;
    }
    const T* src = w + col * k + k0;
    for (int kk = 0; kk < kc; ++kk) dst[kk * kNR + c] = to_float(src[kk]);
  }
}

// ------------------------------------------------------------------------------ x86-64 paths

#if defined(__x86_64__) || defined(_M_X64)

#define VILAU_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))

//! 16 consecutive weights as float32: a load, or a 16-bit load widened exactly.
VILAU_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
VILAU_AVX512 inline __m512 load16(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
VILAU_AVX512 inline __m512 load16(const BFloat16* p) {  // bf16 bits << 16 are the float32 bits
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}

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
VILAU_AVX512 void pack_panel_avx512(const T* w, int64_t k, int64_t n, int64_t n0, int64_t k0,
                                    int kc, float* dst) {
  if (n0 + kNR > n || kc % 16) {  // an edge panel: the portable packer
    pack_panel_scalar(w, k, n, n0, k0, kc, dst);
    return;
  }
  for (int c = 0; c < kNR; c += 16) {
    for (int kk = 0; kk < kc; kk += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = load16(w + (n0 + c + i) * k + k0 + kk);
      transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (kk + i) * kNR + c, r[i]);
    }
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
template <class T>
using PackFn = void (*)(const T*, int64_t, int64_t, int64_t, int64_t, int, float*);

constexpr int kMaxMR = 8;

//! One path: its packer and its tiles for 1..mr rows (tiles[i]: i + 1 rows).
template <class T>
struct Path {
  PackFn<T> pack;
  TileFn tiles[kMaxMR];
  int mr;
};

template <class T, template <int> class Tiles>
Path<T> path_of(PackFn<T> pack, int mr) {
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

template <class T>
Path<T> path_for(const std::string& isa) {
#if defined(__x86_64__) || defined(_M_X64)
  // 32 zmm: 2 x 8 sums + 2 weights + 1 broadcast. 8 rows ran 5-25% faster than 10 or 12
  // (100 x K x N, 7B and 150M shapes, 2 threads, 2026-12-02).
  if (isa == "avx512") return path_of<T, Avx512Tiles>(&pack_panel_avx512<T>, 8);
  if (isa == "avx2") return path_of<T, Avx2Tiles>(&pack_panel_scalar<T>, 6);
#endif
#if defined(__aarch64__)
  if (isa == "neon") return path_of<T, NeonTiles>(&pack_panel_scalar<T>, 6);
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

void check_not_null(const char* op, const void* p, const char* name) {
  if (p == nullptr) throw std::invalid_argument(std::string(op) + ": " + name + " is null");
}

//! Rows [r0, r0 + rows) of y at panel column n0 over one k block. A full panel is written in
//! place; a panel that N cuts goes through a 32-column scratch tile (the packed columns past N
//! are zeros, their sums are dropped) so no path reads or writes past y or bias.
template <class T>
void run_tile(const Path<T>& path, const float* x, int64_t k, const float* block, int kc,
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

template <class T>
void gemm(const char* op, const float* x, const T* w, const float* bias, float* y, int64_t m,
          int64_t k, int64_t n, int num_threads, const std::string& isa) {
  check_not_null(op, x, "x");
  check_not_null(op, w, "w");
  check_not_null(op, y, "y");
  check_sizes(op, m, k, n);
  check_num_threads(op, num_threads);
  const Path<T> path = path_for<T>(cpu_isa(op, isa));
  const int64_t panels = (n + kNR - 1) / kNR;
#pragma omp parallel num_threads(num_threads)
  {
    int64_t p_begin, p_end;  // this thread's panels: contiguous, so it streams its part of W
    thread_share(panels, &p_begin, &p_end);
    if (path.pack == nullptr) {
      gemm_scalar(x, w, bias, y, m, k, n, p_begin * kNR, std::min(n, p_end * kNR));
    } else if (p_begin < p_end) {
      thread_local std::vector<float> block;  // [kNC / 32 panels][kKC][32], reused across calls
      block.resize(static_cast<size_t>(kNC) * kKC);
      for (int64_t pc = p_begin; pc < p_end; pc += kNC / kNR) {
        const int64_t pe = std::min(p_end, pc + kNC / kNR);
        for (int64_t k0 = 0; k0 < k; k0 += kKC) {
          const int kc = static_cast<int>(std::min<int64_t>(kKC, k - k0));
          const bool last = k0 + kc == k;
          for (int64_t p = pc; p < pe; ++p) {
            path.pack(w, k, n, p * kNR, k0, kc, block.data() + (p - pc) * kKC * kNR);
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

}  // namespace

void gemm_f32_check_sizes(int64_t m, int64_t k, int64_t n) { check_sizes("gemm_f32", m, k, n); }

std::vector<std::string> gemm_f32_isas() { return cpu_isas(); }

void gemm_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa) {
  gemm("gemm_f32", x, w, bias, y, m, k, n, num_threads, isa);
}

void gemm_w16_cpu(const float* x, const uint16_t* w, DType w_dtype, const float* bias, float* y,
                  int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
  switch (w_dtype) {  // Half and BFloat16 hold exactly a uint16_t (float_cpu.h)
    case DType::kFloat16:
      gemm("gemm_w16", x, reinterpret_cast<const Half*>(w), bias, y, m, k, n, num_threads, isa);
      return;
    case DType::kBFloat16:
      gemm("gemm_w16", x, reinterpret_cast<const BFloat16*>(w), bias, y, m, k, n, num_threads,
           isa);
      return;
    default:
      throw std::invalid_argument(std::string("gemm_w16: weight dtype ") + dtype_name(w_dtype) +
                                  " is not a 16-bit float (float16 or bfloat16; float32 weights: "
                                  "gemm_f32_cpu)");
  }
}

}  // namespace vilau
