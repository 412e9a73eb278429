// CPU W4A8 GEMV (w4a8.h): size checks, the repack, the activation quantizer, the scalar
// reference every ISA path (w4a8_x86.cpp, w4a8_neon.cpp) returns the bits of, and the driver.
#include "w4a8/w4a8.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common/cpu_isa.h"
#include "common/float_cpu.h"
#include "common/threads.h"
#include "w4a16/w4a16_pack.h"
#include "w4a8/w4a8_simd.h"

namespace vilau {

namespace {

[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }

//! The reference path (TilesFn): one column and one row at a time, integer sums, std::fma.
void tiles_scalar(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                  int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                  const uint16_t* scales, int64_t t0, int64_t t1, float* out) {
  const int64_t groups = k / group_size, blocks = k / kW4A8Block;
  const int64_t blocks_per_group = group_size / kW4A8Block;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = codes + t * k * 8;
    for (int64_t i = 0; i < 16; ++i) {
      for (int64_t r = 0; r < m; ++r) {
        const int8_t* xr = xq + r * k;
        float acc = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
          const int32_t zero = zeros[(t * groups + g) * 16 + i];
          float a = 0.0f;
          for (int64_t b = g * blocks_per_group; b < (g + 1) * blocks_per_group; ++b) {
            int32_t dot = 0;
            for (int64_t c = 4 * b; c < 4 * b + 4; ++c) {  // the block's 4 chunks of 8
              const uint8_t* bytes = tile + (c * 16 + i) * 4;
              for (int j = 0; j < 4; ++j) {
                dot += (bytes[j] & 0xf) * xr[8 * c + j] + (bytes[j] >> 4) * xr[8 * c + 4 + j];
              }
            }
            const int32_t D = dot - zero * s[r * blocks + b];
            a = std::fma(static_cast<float>(D), d[r * blocks + b], a);
          }
          const Half scale{scales[(t * groups + g) * 16 + i]};
          acc = std::fma(a, to_float(scale), acc);
        }
        out[r * n + 16 * t + i] = acc;
      }
    }
  }
}

//! The W8A8 reference (Tiles8Fn).
void tiles8_scalar(const int8_t* xq, const float* d, const int32_t* /*s*/, int64_t m, int64_t k,
                   const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* tile = codes8 + t * k * 16;
    for (int64_t i = 0; i < 16; ++i) {
      for (int64_t r = 0; r < m; ++r) {
        float a = 0.0f;
        for (int64_t b = 0; b < blocks; ++b) {
          int32_t dot = 0;
          for (int64_t c = 8 * b; c < 8 * b + 8; ++c) {  // the block's 8 chunks of 4
            const uint8_t* bytes = tile + (c * 16 + i) * 4;
            for (int j = 0; j < 4; ++j) dot += (bytes[j] - 128) * xq[r * k + 4 * c + j];
          }
          a = std::fma(static_cast<float>(dot), d[r * blocks + b], a);
        }
        out[r * ldo + 16 * t + i] = a;
      }
    }
  }
}

std::string isa_name(const char* op, const std::string& isa) {
  return pick_isa(op, isa, w4a8_cpu_isas());
}

w4a8::TilesFn tiles_fn(const std::string& isa) {
  const std::string name = isa_name("w4a8_gemv", isa);
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512vnni") return w4a8::tiles_avx512vnni;
  if (name == "avx2") return w4a8::tiles_avx2;
#endif
#if defined(__aarch64__)
  if (name == "neon-dotprod") return w4a8::tiles_neon_dotprod;
  if (name == "neon") return w4a8::tiles_neon;
#endif
  return tiles_scalar;
}

w4a8::Tiles8Fn tiles8_fn(const std::string& isa) {
  const std::string name = isa_name("w8a8_gemv", isa);
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512vnni") return w4a8::tiles8_avx512vnni;
  if (name == "avx2") return w4a8::tiles8_avx2;
#endif
#if defined(__aarch64__)
  if (name == "neon-dotprod") return w4a8::tiles8_neon_dotprod;
  if (name == "neon") return w4a8::tiles8_neon;
#endif
  return tiles8_scalar;
}

void check_w8a8(const char* op, int64_t m, int64_t k, int64_t n) {
  if (m < 0 || n < 1 || k < kW4A8Block || k % kW4A8Block) {
    bad(std::string(op) + ": needs M >= 0, N >= 1 and K a multiple of 32 (M = " +
        std::to_string(m) + ", K = " + std::to_string(k) + ", N = " + std::to_string(n) + ")");
  }
}

}  // namespace

void w4a8_check_sizes(int64_t m, int64_t k, int64_t n, int64_t group_size) {
  const std::string sizes = " (M = " + std::to_string(m) + ", K = " + std::to_string(k) +
                            ", N = " + std::to_string(n) + ", G = " + std::to_string(group_size) +
                            ")";
  if (m < 0) bad("w4a8: M must be >= 0" + sizes);
  if (k < kW4A8Block || k % kW4A8Block) bad("w4a8: K must be a multiple of 32" + sizes);
  if (n < 16 || n % 16) bad("w4a8: N must be a multiple of 16" + sizes);
  if (group_size < kW4A8Block || group_size % kW4A8Block || k % group_size) {
    bad("w4a8: G must be a multiple of 32 that divides K" + sizes);
  }
}

std::vector<std::string> w4a8_cpu_isas() {
  std::vector<std::string> isas;
#if defined(__x86_64__) || defined(_M_X64)
  if (w4a8::cpu_has_avx512_vnni()) isas.push_back("avx512vnni");
  if (cpu_has_avx2()) isas.push_back("avx2");
#endif
#if defined(__aarch64__)
  if (w4a8::cpu_has_dotprod()) isas.push_back("neon-dotprod");
  isas.push_back("neon");  // part of every aarch64 CPU
#endif
  isas.push_back("scalar");
  return isas;
}

void w4a8_repack_cpu(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     uint8_t* codes, uint8_t* zeros, uint16_t* scales_out, int64_t k, int64_t n,
                     int64_t group_size, int num_threads) {
  w4a8_check_sizes(0, k, n, group_size);
  check_num_threads("w4a8_repack", num_threads);
  const int64_t words = n / 8, groups = k / group_size;
  auto code = [&](int64_t row, int64_t col) {
    return static_cast<uint8_t>(awq_unpack(qweight[row * words + col / 8], col % 8));
  };
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t t = 0; t < n / 16; ++t) {
    uint8_t* tile = codes + t * k * 8;
    for (int64_t c = 0; c < k / 8; ++c) {
      for (int64_t i = 0; i < 16; ++i) {
        for (int j = 0; j < 4; ++j) {
          tile[(c * 16 + i) * 4 + j] = static_cast<uint8_t>(
              code(8 * c + j, 16 * t + i) | code(8 * c + 4 + j, 16 * t + i) << 4);
        }
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t col = 16 * t + i;
        zeros[(t * groups + g) * 16 + i] =
            static_cast<uint8_t>(awq_unpack(qzeros[g * words + col / 8], col % 8));
        scales_out[(t * groups + g) * 16 + i] = scales[g * n + col];
      }
    }
  }
}

void w4a8_quantize_x(const float* x, int8_t* xq, float* d, int32_t* s, int64_t m, int64_t k) {
  if (m < 0 || k < kW4A8Block || k % kW4A8Block) {
    bad("w4a8_quantize_x: K = " + std::to_string(k) + " must be a multiple of 32 (M = " +
        std::to_string(m) + ")");
  }
  const int64_t blocks = k / kW4A8Block;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < blocks; ++b) {
      const float* xb = x + r * k + b * kW4A8Block;
      int8_t* qb = xq + r * k + b * kW4A8Block;
      float amax = 0.0f;  // NaN if the block holds one (std::max would skip it)
      for (int64_t i = 0; i < kW4A8Block; ++i) {
        const float a = std::fabs(xb[i]);
        if (a > amax || std::isnan(a)) amax = std::isnan(amax) ? amax : a;
      }
      int32_t sum = 0;
      if (std::isfinite(amax) && amax > 0.0f) {
        const float inv = 127.0f / amax;
        for (int64_t i = 0; i < kW4A8Block; ++i) {
          const float q = std::nearbyint(xb[i] * inv);
          qb[i] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, q)));
          sum += qb[i];
        }
      } else {
        std::fill(qb, qb + kW4A8Block, int8_t{0});
      }
      d[r * blocks + b] = std::isfinite(amax) ? amax / 127.0f : amax;
      s[r * blocks + b] = sum;
    }
  }
}

void w4a8_gemv_parts_cpu(const int8_t* xq, const float* d, const int32_t* s,
                         const W4A8Part* parts, int num_parts, float* y, int64_t m, int64_t k,
                         int64_t group_size, int num_threads, const std::string& isa) {
  if (num_parts < 1) bad("w4a8_gemv: num_parts = " + std::to_string(num_parts) + " must be >= 1");
  int64_t ldy = 0, tiles = 0;
  for (int p = 0; p < num_parts; ++p) {
    w4a8_check_sizes(m, k, parts[p].n, group_size);
    if (!parts[p].codes || !parts[p].zeros || !parts[p].scales) {
      bad("w4a8_gemv: part " + std::to_string(p) + " has a null buffer");
    }
    ldy += parts[p].n;
  }
  tiles = ldy / 16;
  check_num_threads("w4a8_gemv", num_threads);
  const w4a8::TilesFn fn = tiles_fn(isa);
  if (m == 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, tiles)));
#pragma omp parallel num_threads(threads)
  {
    int64_t t0 = 0, t1 = 0;
    thread_share(tiles, &t0, &t1);  // one contiguous run of weight bytes per part and thread
    int64_t first = 0;              // the part's first tile among all parts' tiles
    for (int p = 0; p < num_parts; ++p) {
      const W4A8Part& part = parts[p];
      const int64_t a = std::max(t0, first) - first;
      const int64_t b = std::min(t1, first + part.n / 16) - first;
      float* out = y + 16 * first;  // the part's first column; rows are ldy apart
      if (b > a) {
        fn(xq, d, s, m, k, ldy, group_size, part.codes, part.zeros, part.scales, a, b, out);
        if (part.bias) {
          for (int64_t r = 0; r < m; ++r) {
            for (int64_t c = 16 * a; c < 16 * b; ++c) {
              out[r * ldy + c] += to_float(Half{part.bias[c]});
            }
          }
        }
      }
      first += part.n / 16;
    }
  }
}

void w4a8_gemv_cpu(const int8_t* xq, const float* d, const int32_t* s, const uint8_t* codes,
                   const uint8_t* zeros, const uint16_t* scales, const uint16_t* bias, float* y,
                   int64_t m, int64_t k, int64_t n, int64_t group_size, int num_threads,
                   const std::string& isa) {
  const W4A8Part part{codes, zeros, scales, bias, n};
  w4a8_gemv_parts_cpu(xq, d, s, &part, 1, y, m, k, group_size, num_threads, isa);
}

void w8a8_repack_cpu(const int8_t* w, uint8_t* codes8, int64_t n, int64_t k, int num_threads) {
  check_w8a8("w8a8_repack", 0, k, n);
  check_num_threads("w8a8_repack", num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t t = 0; t < w8a8_padded_rows(n) / 16; ++t) {
    uint8_t* tile = codes8 + t * k * 16;
    for (int64_t c = 0; c < k / 4; ++c) {
      for (int64_t i = 0; i < 16; ++i) {
        const int64_t row = 16 * t + i;
        for (int j = 0; j < 4; ++j) {
          const int v = row < n ? w[row * k + 4 * c + j] : 0;
          tile[(c * 16 + i) * 4 + j] = static_cast<uint8_t>(v + 128);
        }
      }
    }
  }
}

void w8a8_gemv_cpu(const int8_t* xq, const float* d, const int32_t* s, const uint8_t* codes8,
                   const float* scale, const float* bias, float* y, int64_t m, int64_t k,
                   int64_t n, int num_threads, const std::string& isa) {
  check_w8a8("w8a8_gemv", m, k, n);
  check_num_threads("w8a8_gemv", num_threads);
  const w4a8::Tiles8Fn fn = tiles8_fn(isa);
  if (m == 0) return;
  // Whole tiles write their sums straight into y (row stride N) and are scaled there; only a
  // last tile that N cuts (its padding rows) goes through a small buffer.
  const int64_t tiles = w8a8_padded_rows(n) / 16, whole = n / 16;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, tiles)));
#pragma omp parallel num_threads(threads)
  {
    int64_t t0 = 0, t1 = 0;
    thread_share(tiles, &t0, &t1);
    if (std::min(t1, whole) > t0) fn(xq, d, s, m, k, codes8, t0, std::min(t1, whole), y, n);
    std::vector<float> cut;  // [M, 16]: the sums of the cut tile
    if (t1 > whole && whole >= t0) {
      cut.resize(m * 16);
      fn(xq, d, s, m, k, codes8 + whole * k * 16, 0, 1, cut.data(), 16);
    }
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 16 * t0; c < std::min(n, 16 * t1); ++c) {
        const float a = c < 16 * whole ? y[r * n + c] : cut[r * 16 + c - 16 * whole];
        const float v = a * scale[c];
        y[r * n + c] = bias ? v + bias[c] : v;
      }
    }
  }
}

W4A8Quantized w4a8_quantize_into(const float* x, int64_t m, int64_t k,
                                 std::vector<int8_t>& scratch) {
  const int64_t blocks = m * (k / kW4A8Block);
  // xq, then d and s (4-byte aligned: M * K is a multiple of 32)
  scratch.resize(m * k + blocks * (sizeof(float) + sizeof(int32_t)));
  int8_t* xq = scratch.data();
  float* d = reinterpret_cast<float*>(xq + m * k);
  int32_t* s = reinterpret_cast<int32_t*>(d + blocks);
  w4a8_quantize_x(x, xq, d, s, m, k);
  return {xq, d, s};
}

void w4a8_linear_cpu(const float* x, const uint8_t* codes, const uint8_t* zeros,
                     const uint16_t* scales, const uint16_t* bias, float* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, int num_threads, std::vector<int8_t>& scratch,
                     const std::string& isa) {
  w4a8_check_sizes(m, k, n, group_size);
  const W4A8Quantized q = w4a8_quantize_into(x, m, k, scratch);
  w4a8_gemv_cpu(q.xq, q.d, q.s, codes, zeros, scales, bias, y, m, k, n, group_size, num_threads,
                isa);
}

}  // namespace vilau
