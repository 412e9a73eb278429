// Every W4A8 and W8A8 GEMV path this machine lists against the scalar reference, bit for bit,
// built for aarch64 and run under qemu by tests/ops/test_w4a8_neon_qemu.py (the NEON paths;
// x86 CI machines have none to run them on). Random layers over several K, N, G and M = 1..9,
// with and without bias, activation blocks at +-127, a zero block and a NaN block, the extreme
// codes (4-bit 0 and 15, 8-bit -128 and 127) and a float16 subnormal scale.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "w4a8/w4a8.h"
using namespace vilau;

namespace {

//! Row r of x [M, K]: random, except (by r) blocks of +-1 (xq = +-127), a zero block, a NaN block.
void fill_x(std::mt19937& rng, std::vector<float>& x, int64_t m, int64_t k, bool nan_row) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& v : x) v = u(rng);
  for (int64_t r = 0; r < m; ++r) {
    float* xr = x.data() + r * k;
    const int64_t b = r % (k / 32);
    if (r % 3 == 1) {  // +-127 everywhere in the block, and across the whole row for r = 1
      for (int64_t i = (r == 1 ? 0 : 32 * b); i < (r == 1 ? k : 32 * b + 32); ++i) {
        xr[i] = (rng() & 1) ? 1.0f : -1.0f;
      }
    } else if (r % 3 == 2) {
      std::fill(xr + 32 * b, xr + 32 * b + 32, 0.0f);
    }
  }
  if (nan_row && m > 2) x[2 * k + 5] = std::numeric_limits<float>::quiet_NaN();
}

int w4a8_cases(std::mt19937& rng, const std::vector<std::string>& isas, int* cases) {
  int bad = 0;
  const int shapes[][3] = {{32, 16, 32}, {64, 32, 32}, {96, 48, 96}, {256, 64, 128},
                           {384, 80, 64}, {512, 32, 128}};
  for (auto& sh : shapes) {
    const int64_t k = sh[0], n = sh[1], g = sh[2];
    std::vector<int32_t> qw(k * n / 8), qz(k / g * n / 8);
    std::vector<uint16_t> sc(k / g * n), bias(n);
    for (auto& v : qw) v = static_cast<int32_t>(rng());
    for (auto& v : qz) v = static_cast<int32_t>(rng());
    for (int64_t i = 0; i < k; ++i) {  // columns 0..7: every code 15; zero points of 0 and 15
      qw[i * n / 8] = -1;
    }
    qz[0] = 0;
    if (qz.size() > static_cast<size_t>(n / 8)) qz[n / 8] = -1;
    std::uniform_real_distribution<float> us(0.001f, 0.02f), ub(-0.1f, 0.1f);
    for (auto& v : sc) v = from_float<Half>(us(rng)).bits;
    sc[1] = 0x0001;  // the smallest float16 subnormal
    for (auto& v : bias) v = from_float<Half>(ub(rng)).bits;
    std::vector<uint8_t> codes(w4a8_codes_bytes(k, n)), zeros(w4a8_group_params(k, n, g));
    std::vector<uint16_t> scales(w4a8_group_params(k, n, g));
    w4a8_repack_cpu(qw.data(), qz.data(), sc.data(), codes.data(), zeros.data(), scales.data(),
                    k, n, g, 2);
    for (int64_t m = 1; m <= 9; ++m) {
      std::vector<float> x(m * k);
      fill_x(rng, x, m, k, m == 5 || m == 9);
      std::vector<int8_t> xq(m * k);
      std::vector<float> d(m * k / 32);
      std::vector<int32_t> s(m * k / 32);
      w4a8_quantize_x(x.data(), xq.data(), d.data(), s.data(), m, k);
      const uint16_t* b = m % 2 ? bias.data() : nullptr;
      std::vector<float> y0(m * n);
      w4a8_gemv_cpu(xq.data(), d.data(), s.data(), codes.data(), zeros.data(), scales.data(), b,
                    y0.data(), m, k, n, g, 2, "scalar");
      for (const auto& isa : isas) {
        if (isa == "scalar") continue;
        std::vector<float> y1(m * n, -1.0f);
        w4a8_gemv_cpu(xq.data(), d.data(), s.data(), codes.data(), zeros.data(), scales.data(),
                      b, y1.data(), m, k, n, g, 2, isa);
        ++*cases;
        if (std::memcmp(y0.data(), y1.data(), y0.size() * sizeof(float)) != 0) {
          ++bad;
          std::printf("w4a8 %s differs: k=%ld n=%ld g=%ld m=%ld\n", isa.c_str(), (long)k,
                      (long)n, (long)g, (long)m);
        }
      }
    }
  }
  return bad;
}

int w8a8_cases(std::mt19937& rng, const std::vector<std::string>& isas, int* cases) {
  int bad = 0;
  const int shapes[][2] = {{32, 16}, {64, 17}, {96, 40}, {256, 100}, {512, 33}};
  for (auto& sh : shapes) {
    const int64_t k = sh[0], n = sh[1];
    std::vector<int8_t> w(n * k);
    for (auto& v : w) v = static_cast<int8_t>(rng() & 0xff);  // -128..127
    std::fill(w.begin(), w.begin() + k, int8_t{-128});         // row 0: every code -128
    std::fill(w.begin() + k, w.begin() + 2 * k, int8_t{127});   // row 1: every code 127
    std::vector<float> scale(n), bias(n);
    std::uniform_real_distribution<float> us(0.001f, 0.02f), ub(-0.1f, 0.1f);
    for (auto& v : scale) v = us(rng);
    for (auto& v : bias) v = ub(rng);
    std::vector<uint8_t> codes8(w8a8_padded_rows(n) * k);
    w8a8_repack_cpu(w.data(), codes8.data(), n, k, 2);
    for (int64_t m = 1; m <= 9; ++m) {
      std::vector<float> x(m * k);
      fill_x(rng, x, m, k, m == 5 || m == 9);
      std::vector<int8_t> xq(m * k);
      std::vector<float> d(m * k / 32);
      std::vector<int32_t> s(m * k / 32);
      w4a8_quantize_x(x.data(), xq.data(), d.data(), s.data(), m, k);
      const float* b = m % 2 ? nullptr : bias.data();
      std::vector<float> y0(m * n);
      w8a8_gemv_cpu(xq.data(), d.data(), s.data(), codes8.data(), scale.data(), b, y0.data(), m,
                    k, n, 2, "scalar");
      for (const auto& isa : isas) {
        if (isa == "scalar") continue;
        std::vector<float> y1(m * n, -1.0f);
        w8a8_gemv_cpu(xq.data(), d.data(), s.data(), codes8.data(), scale.data(), b, y1.data(),
                      m, k, n, 2, isa);
        ++*cases;
        if (std::memcmp(y0.data(), y1.data(), y0.size() * sizeof(float)) != 0) {
          ++bad;
          std::printf("w8a8 %s differs: k=%ld n=%ld m=%ld\n", isa.c_str(), (long)k, (long)n,
                      (long)m);
        }
      }
    }
  }
  return bad;
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  const std::vector<std::string> isas = w4a8_cpu_isas();
  std::printf("w4a8 isas:");
  for (const auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n");
  int cases = 0, cases8 = 0;
  const int bad = w4a8_cases(rng, isas, &cases);
  std::printf("w4a8: %d of %d cases differ\n", bad, cases);
  const int bad8 = w8a8_cases(rng, isas, &cases8);
  std::printf("w8a8: %d of %d cases differ\n", bad8, cases8);
  return bad + bad8 != 0;
}
