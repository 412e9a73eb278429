// The NEON GEMV path against the scalar reference, bit for bit, built for aarch64 and run under
// qemu by tests/ops/test_w4a16_neon_qemu.py (x86 CI machines have no NEON to run it on).
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
  std::vector<std::string> isas = w4a16_cpu_isas();
  std::printf("isas:"); for (auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n%d of %d cases differ\n", bad, cases);
  return bad != 0;
}
