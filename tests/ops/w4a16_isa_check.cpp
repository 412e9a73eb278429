// The NEON GEMV path against the scalar reference, bit for bit, built for aarch64 and run under
// qemu by tests/ops/test_w4a16_neon_qemu.py (x86 CI machines have no NEON to run it on); the
// same for the packed-layout GEMV (w4a16_linear_packed_cpu).
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>
#include "common/float_cpu.h"
#include "w4a16/w4a16.h"
using namespace vilau;
int main() {
  std::mt19937 rng(1);
  int bad = 0, cases = 0;
  const int shapes[][3] = {{128, 8, 64}, {192, 24, 64}, {256, 136, 128}, {384, 520, 128}, {512, 1032, 32}};
  for (auto& s : shapes) {
    const int64_t k = s[0], n = s[1], g = s[2];
    std::vector<int32_t> qw(k * n / 8), qz(k / g * n / 8);
    std::vector<Half> sc(k / g * n), bias(n);
    for (auto& v : qw) v = static_cast<int32_t>(rng());
    for (auto& v : qz) v = static_cast<int32_t>(rng());
    std::uniform_real_distribution<float> u(0.001f, 0.02f), xn(-1.f, 1.f);
    for (auto& v : sc) v = from_float<Half>(u(rng));
    for (auto& v : bias) v = from_float<Half>(xn(rng) * 0.1f);
    for (int64_t m = 1; m <= 8; ++m) {
      std::vector<float> x(m * k), y0(m * n), y1(m * n);
      for (auto& v : x) v = xn(rng);
      w4a16_gemv_cpu(x.data(), qw.data(), qz.data(), sc.data(), bias.data(), y0.data(), m, k, n, g, DType::kFloat32, 2, "scalar");
      w4a16_gemv_cpu(x.data(), qw.data(), qz.data(), sc.data(), bias.data(), y1.data(), m, k, n, g, DType::kFloat32, 2, "neon");
      ++cases;
      if (std::memcmp(y0.data(), y1.data(), y0.size() * 4) != 0) { ++bad; std::printf("diff k=%ld n=%ld m=%ld\n", (long)k, (long)n, (long)m); }
    }
  }
  // The packed layout's NEON path against its scalar reference (fma per term, 32-way tree):
  // K a multiple of 32 (not a power of two in one shape), G a multiple of 32, every dtype.
  int pbad = 0, pcases = 0;
  const int pshapes[][3] = {{32, 8, 32}, {96, 24, 96}, {256, 136, 128}, {384, 520, 64}, {1024, 4104, 128}};
  for (auto& s : pshapes) {
    const int64_t k = s[0], n = s[1], g = s[2];
    std::vector<int32_t> qw(k * n / 8), qz(k / g * n / 8);
    std::vector<Half> sc(k / g * n), bias(n);
    for (auto& v : qw) v = static_cast<int32_t>(rng());
    for (auto& v : qz) v = static_cast<int32_t>(rng());
    std::uniform_real_distribution<float> u(0.001f, 0.02f), xn(-1.f, 1.f);
    for (auto& v : sc) v = from_float<Half>(u(rng));
    for (auto& v : bias) v = from_float<Half>(xn(rng) * 0.1f);
    std::vector<uint8_t> packed(w4a16_packed_bytes(k, n));
    w4a16_repack_cpu(qw.data(), packed.data(), k, n, 2);
    for (int64_t m = 1; m <= 9; ++m) {
      for (int dt = 0; dt < 3; ++dt) {
        const DType dtype = dt == 0 ? DType::kFloat32 : (dt == 1 ? DType::kFloat16 : DType::kBFloat16);
        const size_t elem = dt == 0 ? 4 : 2;
        std::vector<float> xf(m * k);
        for (auto& v : xf) v = xn(rng);
        std::vector<uint16_t> xh(m * k);
        for (int64_t i = 0; i < m * k; ++i) {
          xh[i] = dt == 1 ? from_float<Half>(xf[i]).bits : from_float<BFloat16>(xf[i]).bits;
        }
        const void* x = dt == 0 ? static_cast<const void*>(xf.data()) : xh.data();
        std::vector<uint8_t> y0(m * n * elem), y1(m * n * elem);
        const Half* b = m % 2 ? bias.data() : nullptr;
        w4a16_linear_packed_cpu(x, packed.data(), qz.data(), sc.data(), b, y0.data(), m, k, n, g, dtype, 2, "scalar");
        w4a16_linear_packed_cpu(x, packed.data(), qz.data(), sc.data(), b, y1.data(), m, k, n, g, dtype, 2, "neon");
        ++pcases;
        if (y0 != y1) { ++pbad; std::printf("packed diff k=%ld n=%ld m=%ld dtype=%d\n", (long)k, (long)n, (long)m, dt); }
      }
    }
  }
  std::vector<std::string> pisas = w4a16_packed_cpu_isas();
  std::printf("packed isas:"); for (auto& i : pisas) std::printf(" %s", i.c_str());
  std::printf("\n%d of %d packed cases differ\n", pbad, pcases);
  bad += pbad;
  std::vector<std::string> isas = w4a16_cpu_isas();
  std::printf("isas:"); for (auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n%d of %d cases differ\n", bad, cases);
  return bad != 0;
}
