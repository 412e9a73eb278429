// Every float32 GEMV path this machine runs against the scalar reference, bit for bit (built by
// tests/ops/test_gemv_f32.py for aarch64 and run under qemu: the NEON path).
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gemv/gemv_f32.h"

int main() {
  const std::vector<std::string> isas = vilau::gemv_f32_isas();
  std::printf("isas:");
  for (const auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n");
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  int cases = 0, differ = 0;
  for (int64_t m = 1; m <= vilau::kGemvF32MaxM; ++m) {
    for (int64_t k : {32, 96, 1024}) {
      for (int64_t n : {1, 5, 37}) {
        std::vector<float> x(m * k), w(n * k), bias(n);
        for (auto& v : x) v = normal(rng);
        for (auto& v : w) v = normal(rng);
        for (auto& v : bias) v = normal(rng);
        std::vector<float> ref(m * n);
        vilau::gemv_f32_cpu(x.data(), w.data(), bias.data(), ref.data(), m, k, n, 2, "scalar");
        for (const auto& isa : isas) {
          std::vector<float> y(m * n);
          vilau::gemv_f32_cpu(x.data(), w.data(), bias.data(), y.data(), m, k, n, 2, isa);
          ++cases;
          if (std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) != 0) {
            ++differ;
            std::printf("differs: isa %s m %ld k %ld n %ld\n", isa.c_str(), long(m), long(k),
                        long(n));
          }
        }
      }
    }
  }
  std::printf("%d of %d cases differ\n", differ, cases);
  return differ ? 1 : 0;
}
