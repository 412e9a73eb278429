// Every float32 GEMV path this machine runs against the scalar reference, bit for bit, and every
// path of the 16-bit-weight GEMV against the float32 scalar reference on the upcast weights (built
// by tests/ops/test_gemv_f32.py for aarch64 and run under qemu: the NEON paths).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "gemv/gemv_f32.h"

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

//! Float32 weights of row o: normal(0, 1) times 2^e, e from @p exps by row, so that some rows are
//! float16 subnormals (bfloat16: float32 subnormals) and others near the top of the range.
std::vector<float> scaled_rows(std::mt19937& rng, int64_t n, int64_t k,
                               const std::vector<int>& exps, float clamp) {
  std::normal_distribution<float> normal;
  std::vector<float> w(n * k);
  for (int64_t o = 0; o < n; ++o) {
    const float scale = std::ldexp(1.0f, exps[o % exps.size()]);
    for (int64_t i = 0; i < k; ++i) {
      w[o * k + i] = std::fmax(-clamp, std::fmin(clamp, normal(rng) * scale));
    }
  }
  return w;
}

}  // namespace

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
          if (!same_bits(y, ref)) {
            ++differ;
            std::printf("differs: isa %s m %ld k %ld n %ld\n", isa.c_str(), long(m), long(k),
                        long(n));
          }
        }
      }
    }
  }
  std::printf("%d of %d cases differ\n", differ, cases);

  // 16-bit weights: float16 rows from 2^-24 (subnormal) to 2^14 (clamped to the largest half),
  // bfloat16 rows from 2^-133 (float32 subnormal) to 2^100.
  int w16_cases = 0, w16_differ = 0;
  for (const vilau::DType dt : {vilau::DType::kFloat16, vilau::DType::kBFloat16}) {
    const bool half = dt == vilau::DType::kFloat16;
    const std::vector<int> exps =
        half ? std::vector<int>{0, -24, -16, 14, -5} : std::vector<int>{0, -133, -120, 100, 7};
    for (int64_t m = 1; m <= vilau::kGemvF32MaxM; ++m) {
      for (int64_t k : {32, 96, 1024}) {
        for (int64_t n : {1, 7, 8, 9, 37}) {
          std::vector<float> x(m * k), bias(n);
          for (auto& v : x) v = normal(rng);
          for (auto& v : bias) v = normal(rng);
          const std::vector<float> w = scaled_rows(rng, n, k, exps, half ? 65504.0f : 3e38f);
          std::vector<uint16_t> w16(n * k);
          std::vector<float> up(n * k);  // the 16-bit weights, upcast
          for (int64_t i = 0; i < n * k; ++i) {
            if (half) {
              w16[i] = vilau::from_float<vilau::Half>(w[i]).bits;
              up[i] = vilau::to_float(vilau::Half{w16[i]});
            } else {
              w16[i] = vilau::from_float<vilau::BFloat16>(w[i]).bits;
              up[i] = vilau::to_float(vilau::BFloat16{w16[i]});
            }
          }
          const float* const biases[] = {bias.data(), nullptr};
          for (const float* b : biases) {
            std::vector<float> ref(m * n);
            vilau::gemv_f32_cpu(x.data(), up.data(), b, ref.data(), m, k, n, 2, "scalar");
            for (const auto& isa : isas) {
              std::vector<float> y(m * n);
              vilau::gemv_w16_cpu(x.data(), w16.data(), dt, b, y.data(), m, k, n, 2, isa);
              ++w16_cases;
              if (!same_bits(y, ref)) {
                ++w16_differ;
                std::printf("w16 differs: %s isa %s m %ld k %ld n %ld bias %d\n",
                            vilau::dtype_name(dt), isa.c_str(), long(m), long(k), long(n),
                            b != nullptr);
              }
            }
          }
        }
      }
    }
  }
  std::printf("w16: %d of %d cases differ\n", w16_differ, w16_cases);
  return differ || w16_differ ? 1 : 0;
}
