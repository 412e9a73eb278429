// CPU W4A16 GEMV on the packed (k-contiguous) layout of w4a16.h: the repack, the scalar
// reference every ISA path of w4a16_packed_simd.cpp returns the bits of, and the driver
// (OpenMP over contiguous ranges of 8-column tiles, static).
//
// Why a second layout: on AutoAWQ's layout the SIMD GEMV spends ~9 vector ops per 8 weights
// unpacking, converting and rounding each weight. Here a weight is a 4-bit index into a
// 16-entry table per (group, column) that holds the float16-rounded (q - zero) * scale, so the
// per-weight work is one lookup (a permute) and one fused multiply-add.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cpu_isa.h"
#include "common/float_cpu.h"
#include "common/threads.h"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_cpu_simd.h"
#include "w4a16/w4a16_pack.h"
#include "w4a16/w4a16_packed_simd.h"

namespace vilau {

namespace {

[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }

void check_k32(const char* op, int64_t k) {
  if (k % 32 != 0) {
    bad(std::string(op) + ": in_features K = " + std::to_string(k) +
        " must be a multiple of 32 for the packed layout");
  }
}

//! The 16 weights a code stands for in (group g, column c): round_to_half((q - zero) * scale);
//! the product is exact in float32, as in w4a16_cpu.cpp.
void column_lut(const int32_t* qzeros, const Half* scales, int64_t g, int64_t n, int64_t c,
                float* lut) {
  const float zero = static_cast<float>(awq_unpack(qzeros[g * (n / 8) + c / 8], c % 8));
  const float scale = to_float(scales[g * n + c]);
  for (int q = 0; q < 16; ++q) lut[q] = round_to_half((q - zero) * scale);
}

//! The fixed tree over the 32 partial sums: p[j] += p[j + w] for w = 16, 8, 4, 2, 1.
float tree_sum(float* p) {
  for (int w = 16; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) p[j] = p[j] + p[j + w];
  return p[0];
}

//! The reference path (TilesFn): one column and one row at a time, std::fma per term.
void tiles_scalar(const float* x, int64_t m, int64_t k, int64_t n, int64_t group_size,
                  const uint8_t* packed, const int32_t* qzeros, const uint16_t* scales,
                  int64_t t0, int64_t t1, float* out) {
  const int64_t blocks = k / 32;
  const Half* s = reinterpret_cast<const Half*>(scales);
  std::vector<float> lut(16 * (k / group_size));
  for (int64_t t = t0; t < t1; ++t) {
    for (int64_t j = 0; j < 8; ++j) {
      const int64_t col = 8 * t + j;
      for (int64_t g = 0; g < k / group_size; ++g) column_lut(qzeros, s, g, n, col, &lut[16 * g]);
      for (int64_t r = 0; r < m; ++r) {
        const float* xr = x + r * k;
        float p[32] = {};
        for (int64_t b = 0; b < blocks; ++b) {
          const float* l = &lut[16 * (32 * b / group_size)];
          const uint8_t* bytes = packed + ((t * blocks + b) * 8 + j) * 16;
          for (int i = 0; i < 16; ++i) {
            p[i] = std::fma(l[bytes[i] & 0xf], xr[32 * b + i], p[i]);
            p[16 + i] = std::fma(l[bytes[i] >> 4], xr[32 * b + 16 + i], p[16 + i]);
          }
        }
        out[r * n + col] = tree_sum(p);
      }
    }
  }
}

w4a16_packed::TilesFn packed_tiles_fn(const std::string& isa) {
  const std::string name = cpu_isa("w4a16_linear_packed", isa);
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512") return w4a16_packed::tiles_avx512;
  if (name == "avx2") return w4a16_packed::tiles_avx2;
#endif
#if defined(__aarch64__)
  if (name == "neon") return w4a16_packed::tiles_neon;
#endif
  return tiles_scalar;
}

template <class T>
void linear_packed(w4a16_packed::TilesFn fn, const T* x, const uint8_t* packed,
                   const int32_t* qzeros, const uint16_t* scales, const Half* bias, T* y,
                   int64_t m, int64_t k, int64_t n, int64_t group_size, int num_threads) {
  std::vector<float> xf(m * k), sums(m * n);
  for (int64_t i = 0; i < m * k; ++i) xf[i] = to_float(x[i]);
  const int64_t tiles = n / 8;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, tiles)));
#pragma omp parallel num_threads(threads)
  {
    // One contiguous range of tiles per thread: its bytes are one run of memory.
    int64_t t0 = 0, t1 = 0;
    thread_share(tiles, &t0, &t1);
    if (t1 > t0) {
      fn(xf.data(), m, k, n, group_size, packed, qzeros, scales, t0, t1, sums.data());
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t c = 8 * t0; c < 8 * t1; ++c) {
          const float b = bias ? to_float(bias[c]) : 0.0f;
          y[r * n + c] = from_float<T>(sums[r * n + c] + b);
        }
      }
    }
  }
}

}  // namespace

void w4a16_repack_cpu(const int32_t* qweight, uint8_t* packed, int64_t k, int64_t n,
                      int num_threads) {
  w4a16_check_sizes(0, k, n, 1);
  check_k32("w4a16_repack", k);
  check_num_threads("w4a16_repack", num_threads);
  const int64_t tiles = n / 8;
  const int64_t blocks = k / 32;
  // Block-major: the 32 rows of a block are read as whole rows of qweight.
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t t = 0; t < tiles; ++t) {
      uint8_t* dst = packed + (t * blocks + b) * 128;
      for (int64_t i = 0; i < 16; ++i) {
        const int32_t lo = qweight[(32 * b + i) * tiles + t];
        const int32_t hi = qweight[(32 * b + 16 + i) * tiles + t];
        for (int j = 0; j < 8; ++j) {
          dst[j * 16 + i] = static_cast<uint8_t>(awq_unpack(lo, j) | (awq_unpack(hi, j) << 4));
        }
      }
    }
  }
}

std::vector<std::string> w4a16_packed_cpu_isas() { return cpu_isas(); }

void w4a16_linear_packed_cpu(const void* x, const uint8_t* packed, const int32_t* qzeros,
                             const void* scales, const void* bias, void* y, int64_t m,
                             int64_t k, int64_t n, int64_t group_size, DType dtype,
                             int num_threads, const std::string& isa) {
  w4a16_check_sizes(m, k, n, group_size);
  if (group_size % 32 != 0) {
    bad("w4a16_linear_packed: group_size = " + std::to_string(group_size) +
        " must be a multiple of 32 (use w4a16_linear_cpu on the AutoAWQ layout)");
  }
  check_num_threads("w4a16_linear_packed", num_threads);
  const w4a16_packed::TilesFn fn = packed_tiles_fn(isa);
  if (m == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    linear_packed(fn, static_cast<const T*>(x), packed, qzeros,
                  static_cast<const uint16_t*>(scales), static_cast<const Half*>(bias),
                  static_cast<T*>(y), m, k, n, group_size, num_threads);
  });
}

}  // namespace vilau
