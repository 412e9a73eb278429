// CPU paths of the float32-activation GEMV, with float32 weights (gemv_f32_cpu), 16-bit ones
// (gemv_w16_cpu) or int8 codes with a scale per row (gemv_w8_cpu); see gemv_f32.h for the
// summation order every path keeps.
// x86-64 paths are compiled with per-function target attributes and chosen at run time, so the
// library stays baseline x86-64; NEON is part of every aarch64 CPU.
//
// Each path computes a block of R output rows for all M rows of x at once: the M x R x 32
// partial sums stay in registers while W's R rows stream through, and x (K floats per row, a few
// KiB) stays in L1. R is chosen so the accumulators fit the register file.
//
// One template serves every weight type T (float, Half, BFloat16, int8_t): only the load of a
// vector of weights differs (load16 / load8 from common/widen_x86.h, load4 below: a float32
// load, or a 16-bit or 8-bit load converted to float32 in registers, which is exact), so the
// blocks, the tree and the plans are shared and a 16-bit or int8 weight gives the bits of its
// float32 upcast. The int8 GEMV's scale per row is applied once per output, after the sum
// (finish()), on every path alike.
#include "gemv/gemv_f32.h"

#include "common/checks.h"
#include "common/cpu_isa.h"
#include "common/dtype.h"
#include "common/float_cpu.h"
#include "common/threads.h"
#include "common/widen_x86.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/x86_intrin.h"
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace vilau {

namespace {

constexpr int kLanes = 32;  //!< partial sums per output (the order in gemv_f32.h)

//! Output @p o from its sum @p s: times row_scale[o] (int8 weights; null: none), then + bias[o]
//! (null: none), one rounding each. Every path ends here, so they agree on this part too (the
//! file is built with -ffp-contract=off: a fused multiply-add would round once, not twice).
inline float finish(float s, const float* row_scale, const float* bias, int64_t o) {
  const float scaled = row_scale ? s * row_scale[o] : s;
  return bias ? scaled + bias[o] : scaled;
}

//! The reference: rows [n0, n1) of y for all M rows of x (to_float: exact, float_cpu.h).
template <class T>
void rows_scalar(const float* x, const T* w, const float* row_scale, const float* bias, float* y,
                 int64_t m, int64_t k, int64_t n, int64_t n0, int64_t n1) {
  for (int64_t o = n0; o < n1; ++o) {
    const T* wr = w + o * k;
    for (int64_t r = 0; r < m; ++r) {
      const float* xr = x + r * k;
      float p[kLanes] = {};
      for (int64_t kk = 0; kk < k; kk += kLanes) {
        for (int j = 0; j < kLanes; ++j) p[j] = std::fma(to_float(wr[kk + j]), xr[kk + j], p[j]);
      }
      for (int half = kLanes / 2; half >= 1; half /= 2) {
        for (int j = 0; j < half; ++j) p[j] = p[j] + p[j + half];
      }
      y[r * n + o] = finish(p[0], row_scale, bias, o);
    }
  }
}

#if defined(__x86_64__) || defined(_M_X64)

// cpu_has_avx2() (the "avx2" path) includes F16C, and cpu_has_avx512() includes cpu_has_avx2().
#define VILAU_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define VILAU_AVX2 __attribute__((target("avx2,fma,f16c")))

using widen::load16;
using widen::load8;

//! Sum of 8 lanes as (a[j] + a[j + 4]), then (+2), then (+1).
VILAU_AVX2 inline float reduce8(__m256 a) {
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

//! Prefetch: also fetch the same place in the rows of the next block (the next R rows of W,
//! which the same thread reads next; R = 1: the next row). See plan_for for where it pays.
template <class T, int M, int R, bool Prefetch = false>
VILAU_AVX512 void block_avx512(const float* x, const T* w, int64_t k, float* out) {
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
      if (Prefetch) {  // a hint: past the end of W it does not fault
        const char* next = reinterpret_cast<const char*>(w + (R + i) * k + kk);
        _mm_prefetch(next, _MM_HINT_T0);
        if (sizeof(T) * kLanes > 64) _mm_prefetch(next + 64, _MM_HINT_T0);
      }
      const __m512 wl = load16(w + i * k + kk);
      const __m512 wh = load16(w + i * k + kk + 16);
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

template <class T, int M, int R>
VILAU_AVX2 void block_avx2(const float* x, const T* w, int64_t k, float* out) {
  __m256 acc[M][R][4];  // lanes 0-7, 8-15, 16-23, 24-31 of the 32 partial sums
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < R; ++i)
      for (int q = 0; q < 4; ++q) acc[r][i][q] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < k; kk += kLanes) {
    for (int i = 0; i < R; ++i) {
      for (int q = 0; q < 4; ++q) {
        const __m256 wv = load8(w + i * k + kk + 8 * q);
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

//! 4 consecutive weights as float32: a load, or a 16-bit load widened exactly.
inline float32x4_t load4(const float* p) { return vld1q_f32(p); }
inline float32x4_t load4(const Half* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p))));
}
inline float32x4_t load4(const BFloat16* p) {  // bf16 bits << 16 are the float32 bits
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(reinterpret_cast<const uint16_t*>(p)), 16));
}
inline float32x4_t load4(const int8_t* p) {
  // A 4-byte load (vld1_s8 would read 8 bytes, past the end of W at its last weights), then
  // int8 -> int16 -> int32 -> float32, all exact.
  int32_t bytes;
  std::memcpy(&bytes, p, sizeof(bytes));
  const int16x8_t h = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes)));
  return vcvtq_f32_s32(vmovl_s16(vget_low_s16(h)));
}

template <class T, int M, int R>
void block_neon(const float* x, const T* w, int64_t k, float* out) {
  float32x4_t acc[M][R][8];  // 8 quarters of the 32 partial sums
  for (int r = 0; r < M; ++r)
    for (int i = 0; i < R; ++i)
      for (int q = 0; q < 8; ++q) acc[r][i][q] = vdupq_n_f32(0.0f);
  for (int64_t kk = 0; kk < k; kk += kLanes) {
    for (int i = 0; i < R; ++i) {
      for (int q = 0; q < 8; ++q) {
        const float32x4_t wv = load4(w + i * k + kk + 4 * q);
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

template <class T>
using BlockFn = void (*)(const float*, const T*, int64_t, float*);

constexpr int kMaxBlockOutputs = 8;  //!< M x R of every plan below

template <class T>
struct Plan {
  BlockFn<T> block;  //!< R rows of W for all M rows of x; nullptr: the scalar reference
  int rows;          //!< R
};

//! Rows of W at most this long (bytes) are read one at a time at M = 1: see plan_for.
constexpr int64_t kShortRowBytes = 4096;

// The same plans for every weight type: 16-bit weights are widened in registers before the FMAs,
// so they need no more accumulators, and R rows in flight still means R streams of W.
template <class T>
Plan<T> plan_for(const std::string& isa, int64_t m, int64_t k) {
#if defined(__x86_64__) || defined(_M_X64)
  if (isa == "avx512") {
    // 32 zmm: M x R x 2 accumulators + 2M x vectors. M = 1: 8 rows in flight read ~25% faster
    // than 4 on the development CPU (2 threads, 2026-12-01) on 7B rows (8-44 KiB); a 1 KiB
    // software prefetch did not. Rows of <= 4 KiB (a 150M model's K = 1024 layers and lm_head,
    // float32 or 16-bit) are too short for the hardware prefetcher to run ahead of 8 streams of
    // <= 64 lines; there one row at a time, with the next row prefetched (one sequential
    // stream), read 15-80% faster than 8 rows (throwaway harness, 2026-12-02: 24-31 GB/s
    // against 17-26), while on 7B rows it was 10-25% slower.
    const bool short_rows = k * static_cast<int64_t>(sizeof(T)) <= kShortRowBytes;
    switch (m) {
      case 1:
        return short_rows ? Plan<T>{&block_avx512<T, 1, 1, true>, 1}
                          : Plan<T>{&block_avx512<T, 1, 8>, 8};
      case 2:  // a CFG pair: 16-bit short rows as at M = 1 (an image of the 150M model in
               // bfloat16 took 0.43-0.48 s against 0.48-0.56, 2026-12-02); float32 short rows
               // were slower that way, and long rows no faster end to end
        return sizeof(T) == 2 && short_rows ? Plan<T>{&block_avx512<T, 2, 1, true>, 1}
                                            : Plan<T>{&block_avx512<T, 2, 4>, 4};
      case 3: return {&block_avx512<T, 3, 2>, 2};
      default: return {&block_avx512<T, 4, 2>, 2};
    }
  }
  if (isa == "avx2") {  // 16 ymm: M x R x 4 accumulators
    switch (m) {
      case 1: return {&block_avx2<T, 1, 2>, 2};
      case 2: return {&block_avx2<T, 2, 1>, 1};
      case 3: return {&block_avx2<T, 3, 1>, 1};
      default: return {&block_avx2<T, 4, 1>, 1};
    }
  }
#endif
#if defined(__aarch64__)
  if (isa == "neon") {  // 32 q registers: M x R x 8 accumulators
    switch (m) {
      case 1: return {&block_neon<T, 1, 2>, 2};
      case 2: return {&block_neon<T, 2, 1>, 1};
      case 3: return {&block_neon<T, 3, 1>, 1};
      default: return {&block_neon<T, 4, 1>, 1};
    }
  }
#endif
  (void)m;
  (void)k;
  return {nullptr, 1};
}

void check_sizes(const char* op, int64_t m, int64_t k, int64_t n) {
  const std::string name(op);
  if (m < 1 || m > kGemvF32MaxM) {
    throw std::invalid_argument(name + ": M = " + std::to_string(m) + " rows of x; the GEMV " +
                                "serves 1.." + std::to_string(kGemvF32MaxM) + " (use BLAS)");
  }
  if (k < kLanes || k % kLanes) {
    throw std::invalid_argument(name + ": K = " + std::to_string(k) +
                                " must be a positive multiple of 32");
  }
  if (n < 1) throw std::invalid_argument(name + ": N = " + std::to_string(n) + " must be >= 1");
}

//! Every entry point: checks, then threads over blocks of R output rows. row_scale: the int8
//! GEMV's scale per output row, null for float weights.
template <class T>
void gemv(const char* op, const float* x, const T* w, const float* row_scale, const float* bias,
          float* y, int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
  check_not_null(op, x, "x");
  check_not_null(op, w, "w");
  check_not_null(op, y, "y");
  check_sizes(op, m, k, n);
  check_num_threads(op, num_threads);
  const Plan<T> plan = plan_for<T>(cpu_isa(op, isa), m, k);
  const int64_t R = plan.rows;
  const int64_t blocks = n / R;
  // Contiguous row ranges per thread (static schedule): each thread streams its part of W.
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t b = 0; b <= blocks; ++b) {
    const int64_t n0 = b * R, n1 = std::min(n, n0 + R);
    if (n0 >= n1) continue;
    if (plan.block == nullptr || n1 - n0 < R) {
      rows_scalar(x, w, row_scale, bias, y, m, k, n, n0, n1);
      continue;
    }
    float out[kMaxBlockOutputs];
    plan.block(x, w + n0 * k, k, out);
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t i = 0; i < R; ++i) {
        y[r * n + n0 + i] = finish(out[r * R + i], row_scale, bias, n0 + i);
      }
    }
  }
}

}  // namespace

void gemv_f32_check_sizes(int64_t m, int64_t k, int64_t n) { check_sizes("gemv_f32", m, k, n); }

std::vector<std::string> gemv_f32_isas() { return cpu_isas(); }

void gemv_f32_cpu(const float* x, const float* w, const float* bias, float* y, int64_t m,
                  int64_t k, int64_t n, int num_threads, const std::string& isa) {
  gemv("gemv_f32", x, w, nullptr, bias, y, m, k, n, num_threads, isa);
}

void gemv_w16_cpu(const float* x, const uint16_t* w, DType w_dtype, const float* bias, float* y,
                  int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
  // Half and BFloat16 hold exactly a uint16_t (float_cpu.h), as the other kernels read them.
  switch (w_dtype) {
    case DType::kFloat16:
      gemv("gemv_w16", x, reinterpret_cast<const Half*>(w), nullptr, bias, y, m, k, n,
           num_threads, isa);
      return;
    case DType::kBFloat16:
      gemv("gemv_w16", x, reinterpret_cast<const BFloat16*>(w), nullptr, bias, y, m, k, n,
           num_threads, isa);
      return;
    default:
      throw std::invalid_argument(std::string("gemv_w16: weight dtype ") + dtype_name(w_dtype) +
                                  " is not a 16-bit float (float16 or bfloat16; float32 weights: "
                                  "gemv_f32_cpu)");
  }
}

void gemv_w8_cpu(const float* x, const int8_t* w, const float* row_scale, const float* bias,
                 float* y, int64_t m, int64_t k, int64_t n, int num_threads,
                 const std::string& isa) {
  check_not_null("gemv_w8", row_scale, "row_scale");  // null would mean float weights below
  gemv("gemv_w8", x, w, row_scale, bias, y, m, k, n, num_threads, isa);
}

}  // namespace vilau
