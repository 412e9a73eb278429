// CPU paths of the float32 GEMV (see gemv_f32.h for the summation order every path keeps).
// x86-64 paths are compiled with per-function target attributes and chosen at run time, so the
// library stays baseline x86-64; NEON is part of every aarch64 CPU.
//
// Each path computes a block of R output rows for all M rows of x at once: the M x R x 32
// partial sums stay in registers while W's R rows stream through, and x (K floats per row, a few
// KiB) stays in L1. R is chosen so the accumulators fit the register file.
#include "gemv/gemv_f32.h"

#include "common/cpu_isa.h"
#include "common/threads.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "common/x86_intrin.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vilau {

namespace {

constexpr int kLanes = 32;  //!< partial sums per output (the order in gemv_f32.h)

//! The reference: rows [n0, n1) of y for all M rows of x.
void rows_scalar(const float* x, const float* w, const float* bias, float* y, int64_t m,
                 int64_t k, int64_t n, int64_t n0, int64_t n1) {
  for (int64_t o = n0; o < n1; ++o) {
    const float* wr = w + o * k;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      float p[kLanes] = {};
      for (int64_t kk = 0; kk < k; kk += kLanes) {
        for (int j = 0; j < kLanes; ++j) p[j] = std::fma(wr[kk + j], xr[kk + j], p[j]);
      }
      for (int half = kLanes / 2; half >= 1; half /= 2) {
        for (int j = 0; j < half; ++j) p[j] = p[j] + p[j + half];
      }
      y[r * n + o] = bias ? p[0] + bias[o] : p[0];
    }
  }
}

#if defined(__x86_64__) || defined(_M_X64)

#define VILAU_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define VILAU_AVX2 __attribute__((target("avx2,fma")))

//! Sum of 8 lanes as (a[j] + a[j + 4]), then (+2), then (+1).
VILAU_AVX2 inline float reduce8(__m256 a) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

template <int M, int R>
VILAU_AVX512 void block_avx512(const float* x, const float* w, int64_t k, float* out) {
  __m512 lo[M][R], hi[M][R];
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < R; ++i) lo[r][i] = hi[r][i] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < k; kk += kLanes) {
    __m512 xl[M], xh[M];
    for (int r = 0; r < M; ++r) {
      xl[r] = _mm512_loadu_ps(x + r * k + kk);
      xh[r] = _mm512_loadu_ps(x + r * k + kk + 16);
    }
    for (int i = 0; i < R; ++i) {
      const __m512 wl = _mm512_loadu_ps(w + i * k + kk);
      const __m512 wh = _mm512_loadu_ps(w + i * k + kk + 16);
      for (int r = 0; r < M; ++r) {
        lo[r][i] = _mm512_fmadd_ps(wl, xl[r], lo[r][i]);
        hi[r][i] = _mm512_fmadd_ps(wh, xh[r], hi[r][i]);
      }
    }
  }
  for (int r = 0; r < M; ++r) {
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_add_ps(lo[r][i], hi[r][i]);  // p[j] + p[j + 16]
      const __m256 s8 = _mm256_add_ps(
          _mm512_castps512_ps256(a),
          _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));  // AVX-512F only
      out[r * R + i] = reduce8(s8);
    }
  }
}

template <int M, int R>
VILAU_AVX2 void block_avx2(const float* x, const float* w, int64_t k, float* out) {
  __m256 acc[M][R][4];  // lanes 0-7, 8-15, 16-23, 24-31 of the 32 partial sums
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < R; ++i)
      for (int q = 0; q < 4; ++q) acc[r][i][q] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < k; kk += kLanes) {
    for (int i = 0; i < R; ++i) {
      for (int q = 0; q < 4; ++q) {
        const __m256 wv = _mm256_loadu_ps(w + i * k + kk + 8 * q);
        for (int r = 0; r < M; ++r) {
          acc[r][i][q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * k + kk + 8 * q), acc[r][i][q]);
        }
      }
    }
  }
  for (int r = 0; r < M; ++r) {
    for (int i = 0; i < R; ++i) {
      const __m256 a0 = _mm256_add_ps(acc[r][i][0], acc[r][i][2]);  // p[j] + p[j + 16], j < 8
      const __m256 a1 = _mm256_add_ps(acc[r][i][1], acc[r][i][3]);  // j = 8..15
      out[r * R + i] = reduce8(_mm256_add_ps(a0, a1));              // + 8, then 4, 2, 1
    }
  }
}

#endif  // x86-64

#if defined(__aarch64__)

template <int M, int R>
void block_neon(const float* x, const float* w, int64_t k, float* out) {
  float32x4_t acc[M][R][8];  // 8 quarters of the 32 partial sums
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < R; ++i)
      for (int q = 0; q < 8; ++q) acc[r][i][q] = vdupq_n_f32(0.0f);
  for (int64_t kk = 0; kk < k; kk += kLanes) {
    for (int i = 0; i < R; ++i) {
      for (int q = 0; q < 8; ++q) {
        const float32x4_t wv = vld1q_f32(w + i * k + kk + 4 * q);
        for (int r = 0; r < M; ++r) {
          acc[r][i][q] = vfmaq_f32(acc[r][i][q], wv, vld1q_f32(x + r * k + kk + 4 * q));
        }
      }
    }
  }
  for (int r = 0; r < M; ++r) {
    for (int i = 0; i < R; ++i) {
      float32x4_t a[4];
      for (int q = 0; q < 4; ++q) a[q] = vaddq_f32(acc[r][i][q], acc[r][i][q + 4]);  // +16
      const float32x4_t b0 = vaddq_f32(a[0], a[2]), b1 = vaddq_f32(a[1], a[3]);       // +8
      const float32x4_t s4 = vaddq_f32(b0, b1);                                         // +4
      const float32x2_t s2 = vadd_f32(vget_low_f32(s4), vget_high_f32(s4));             // +2
      out[r * R + i] = vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);                     // +1
    }
  }
}

#endif  // aarch64

using BlockFn = void (*)(const float*, const float*, int64_t, float*);

constexpr int kMaxBlockOutputs = 8;  //!< M x R of every plan below

struct Plan {
  BlockFn block;  //!< R rows of W for all M rows of x; nullptr: the scalar reference
  int rows;       //!< R
};

Plan plan_for(const std::string& isa, int64_t m) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == "avx512") {
    // 32 zmm: M x R x 2 accumulators + 2M x vectors. M = 1: 8 rows in flight read ~25% faster
    // than 4 on the development CPU (2 threads, 2026-12-01); a 1 KiB software prefetch did not.
    switch (m) {
      case 1: return {&block_avx512<1, 8>, 8};
      case 2: return {&block_avx512<2, 4>, 4};
      case 3: return {&block_avx512<3, 2>, 2};
      default: return {&block_avx512<4, 2>, 2};
    }
  }
  if (isa == "avx2") {  // 16 ymm: M x R x 4 accumulators
    switch (m) {
      case 1: return {&block_avx2<1, 2>, 2};
      case 2: return {&block_avx2<2, 1>, 1};
      case 3: return {&block_avx2<3, 1>, 1};
      default: return {&block_avx2<4, 1>, 1};
    }
  }
#endif
#if defined(__aarch64__)
  if (isa == "neon") {  // 32 q registers: M x R x 8 accumulators
    switch (m) {
      case 1: return {&block_neon<1, 2>, 2};
      case 2: return {&block_neon<2, 1>, 1};
      case 3: return {&block_neon<3, 1>, 1};
      default: return {&block_neon<4, 1>, 1};
    }
  }
#endif
  (void)m;
  return {nullptr, 1};
}

}  // namespace

void gemv_f32_check_sizes(int64_t m, int64_t k, int64_t n) {
  if (m < 1 || m > kGemvF32MaxM) {
    throw std::invalid_argument("gemv_f32: M = " + std::to_string(m) + " rows of x; the GEMV " +
                                "serves 1.." + std::to_string(kGemvF32MaxM) + " (use BLAS)");
  }
  if (k < kLanes || k % kLanes) {
    throw std::invalid_argument("gemv_f32: K = " + std::to_string(k) +
                                " must be a positive multiple of 32");
  }
  if (n < 1) throw std::invalid_argument("gemv_f32: N = " + std::to_string(n) + " must be >= 1");
}

std::vector<std::string> gemv_f32_isas() { return cpu_isas(); }

void gemv_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa) {
  gemv_f32_check_sizes(m, k, n);
  check_num_threads("gemv_f32", num_threads);
  const Plan plan = plan_for(cpu_isa("gemv_f32", isa), m);
  const int64_t R = plan.rows;
  const int64_t blocks = n / R;
  // Contiguous row ranges per thread (static schedule): each thread streams its part of W.
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t b = 0; b <= blocks; ++b) {
    const int64_t n0 = b * R, n1 = std::min(n, n0 + R);
    if (n0 >= n1) continue;
    if (plan.block == nullptr || n1 - n0 < R) {
      rows_scalar(x, w, bias, y, m, k, n, n0, n1);
      continue;
    }
    float out[kMaxBlockOutputs];
    plan.block(x, w + n0 * k, k, out);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < R; ++i) {
        const float v = out[r * R + i];
        y[r * n + n0 + i] = bias ? v + bias[n0 + i] : v;
      }
    }
  }
}

}  // namespace vilau
