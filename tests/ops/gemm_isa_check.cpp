// Every float32 GEMM path this machine runs against the scalar reference, bit for bit, with and
// without bias, over shapes that cut the register tiles, the panels and the k blocks; and every
// path of the 16-bit-weight GEMM against the float32 scalar reference on the upcast weights
// (built by tests/ops/test_gemm_f32.py for aarch64 and run under qemu: the NEON path).
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "gemm/gemm_f32.h"

int main() {
  const std::vector<std::string> isas = vilau::gemm_f32_isas();
  std::printf("isas:");
  for (const auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n");
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  int cases = 0, differ = 0, w16_cases = 0, w16_differ = 0;
  for (int64_t m : {1, 5, 7, 13}) {
    for (int64_t k : {1, 16, 300}) {
      for (int64_t n : {1, 32, 45, 130}) {
        std::vector<float> x(m * k), w(n * k), bias(n);
        for (auto& v : x) v = normal(rng);
        for (auto& v : w) v = normal(rng);
        for (auto& v : bias) v = normal(rng);
        for (const float* b : {static_cast<const float*>(bias.data()), (const float*)nullptr}) {
          std::vector<float> ref(m * n), y(m * n);
          vilau::gemm_f32_cpu(x.data(), w.data(), b, ref.data(), m, k, n, 2, "scalar");
          for (const auto& isa : isas) {
            vilau::gemm_f32_cpu(x.data(), w.data(), b, y.data(), m, k, n, 3, isa);
            ++cases;
            if (std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)) != 0) {
              ++differ;
              std::printf("differs: isa %s m %ld k %ld n %ld\n", isa.c_str(), long(m), long(k),
                          long(n));
            }
          }
          // 16-bit weights: their float32 upcast through the float32 reference.
          for (const vilau::DType dt : {vilau::DType::kFloat16, vilau::DType::kBFloat16}) {
            std::vector<uint16_t> w16(n * k);
            std::vector<float> up(n * k), ref16(m * n);
            for (int64_t i = 0; i < n * k; ++i) {
              if (dt == vilau::DType::kFloat16) {
                w16[i] = vilau::from_float<vilau::Half>(w[i]).bits;
                up[i] = vilau::to_float(vilau::Half{w16[i]});
              } else {
                w16[i] = vilau::from_float<vilau::BFloat16>(w[i]).bits;
                up[i] = vilau::to_float(vilau::BFloat16{w16[i]});
              }
            }
            vilau::gemm_f32_cpu(x.data(), up.data(), b, ref16.data(), m, k, n, 1, "scalar");
            for (const auto& isa : isas) {
              vilau::gemm_w16_cpu(x.data(), w16.data(), dt, b, y.data(), m, k, n, 2, isa);
              ++w16_cases;
              if (std::memcmp(y.data(), ref16.data(), y.size() * sizeof(float)) != 0) {
                ++w16_differ;
                std::printf("w16 differs: isa %s m %ld k %ld n %ld\n", isa.c_str(), long(m),
                            long(k), long(n));
              }
            }
          }
        }
      }
    }
  }
  std::printf("%d of %d cases differ\n", differ, cases);
  std::printf("w16: %d of %d cases differ\n", w16_differ, w16_cases);
  return 0;
}
