// CPU sampler: the same arithmetic as sampling_cuda.cu, one row at a time (OpenMP over rows).
// Compiled with -ffp-contract=off (CMakeLists.txt): the CFG mix must not become a fused
// multiply-add, or float32 rows would differ from torch's u + cfg * (c - u) by an ulp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/float_cpu.h"
#include "common/threads.h"
#include "sampling/philox.h"
#include "sampling/sampling.h"

namespace vilau {

namespace {

template <class T>
float round_to(float v) {
  return to_float(from_float<T>(v));
}

//! guided = u + cfg * (c - u), each operation rounded to T as torch does in that dtype.
template <class T>
float guided_logit(const T* cond, const T* uncond, int64_t i, bool with_cfg, float cfg_scale) {
  if (!with_cfg) return to_float(cond[i]);
  const float u = to_float(uncond[i]);
  const float diff = round_to<T>(to_float(cond[i]) - u);
  const float prod = round_to<T>(cfg_scale * diff);
  return round_to<T>(u + prod);
}

uint64_t fixed_weight(float x, float max_x) {
  const double e = std::exp(static_cast<double>(x) - static_cast<double>(max_x));
  return static_cast<uint64_t>(std::nearbyint(e * 4294967296.0));  // 2^kSampleWeightBits
}
static_assert(kSampleWeightBits == 32, "fixed_weight scales by 2^32");

float key_float(uint32_t key) { return bits_float(order_key_bits(key)); }

//! Returns the code of one row, or -1 when the row cannot be sampled (NaN / infinite max).
template <class T>
int64_t sample_row(const T* cond, const T* uncond, int64_t vocab, bool with_cfg, float cfg_scale,
                   float temperature, int64_t top_k, float top_p, uint64_t seed, uint64_t counter,
                   uint32_t row, uint32_t subsequence, std::vector<uint32_t>& keys,
                   std::vector<uint64_t>& weights, std::vector<uint32_t>& scratch) {
  if (top_k == 1) {  // argmax, first index on ties, NaN is the maximum (torch.argmax)
    int64_t best = 0;
    float best_v = guided_logit(cond, uncond, 0, with_cfg, cfg_scale);
    for (int64_t i = 1; i < vocab && !std::isnan(best_v); ++i) {
      const float v = guided_logit(cond, uncond, i, with_cfg, cfg_scale);
      if (std::isnan(v) || v > best_v) {
        best_v = v;
        best = i;
      }
    }
    return best;
  }
  bool any_nan = false;
  uint32_t max_key = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float x = guided_logit(cond, uncond, i, with_cfg, cfg_scale) / temperature;
    any_nan = any_nan || std::isnan(x);
    keys[i] = float_order_key(float_bits(x));
    max_key = std::max(max_key, keys[i]);
  }
  const float max_x = key_float(max_key);
  if (any_nan || std::isinf(max_x)) return -1;

  uint32_t kth = 0;  // keep keys >= kth
  if (top_k > 1 && top_k < vocab) {
    scratch.assign(keys.begin(), keys.end());
    std::nth_element(scratch.begin(), scratch.begin() + (top_k - 1), scratch.end(),
                     std::greater<uint32_t>());
    kth = scratch[top_k - 1];
  }
  uint64_t total = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    weights[i] = keys[i] >= kth ? fixed_weight(key_float(keys[i]), max_x) : 0;
    total += weights[i];
  }

  uint32_t tau = kth;
  uint64_t kept = total;
  if (top_p < 1.0f) {
    // the largest key tau whose mass of keys >= tau reaches top_p of the total
    const double need = static_cast<double>(top_p) * static_cast<double>(total);
    scratch.clear();
    for (int64_t i = 0; i < vocab; ++i) {
      if (weights[i] > 0) scratch.push_back(static_cast<uint32_t>(i));
    }
    std::sort(scratch.begin(), scratch.end(),
              [&](uint32_t a, uint32_t b) { return keys[a] > keys[b]; });
    uint64_t cum = 0;
    for (size_t j = 0; j < scratch.size();) {
      const uint32_t key = keys[scratch[j]];
      for (; j < scratch.size() && keys[scratch[j]] == key; ++j) cum += weights[scratch[j]];
      if (static_cast<double>(cum) >= need) {
        tau = key;
        kept = cum;
        break;
      }
    }
  }

  const uint64_t target = scale_draw(sample_draw_bits(seed, counter, row, subsequence), kept);
  uint64_t acc = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (keys[i] >= tau) {
      acc += weights[i];
      if (acc > target) return i;
    }
  }
  return -1;  // unreachable: target < kept
}

}  // namespace

void sample_codes_cpu(const void* logits, int64_t* codes, int64_t n_rows, int64_t vocab,
                      bool with_cfg, float cfg_scale, float temperature, int64_t top_k,
                      float top_p, const int64_t* rng, int64_t subsequence, DType dtype,
                      int num_threads) {
  sample_check_args(n_rows, vocab, temperature, top_p, subsequence);
  check_num_threads("sample_codes", num_threads);
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t counter = static_cast<uint64_t>(rng[1]);
  int64_t bad_row = -1;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* base = static_cast<const T*>(logits);
#pragma omp parallel num_threads(num_threads)
    {
      std::vector<uint32_t> keys(vocab), scratch;
      std::vector<uint64_t> weights(vocab);
#pragma omp for schedule(dynamic, 1)
      for (int64_t r = 0; r < n_rows; ++r) {
        const T* cond = base + r * vocab;
        const T* uncond = with_cfg ? base + (n_rows + r) * vocab : nullptr;
        codes[r] = sample_row(cond, uncond, vocab, with_cfg, cfg_scale, temperature, top_k,
                              top_p, seed, counter, static_cast<uint32_t>(r),
                              static_cast<uint32_t>(subsequence), keys, weights, scratch);
        if (codes[r] < 0) {
#pragma omp critical
          bad_row = bad_row < 0 ? r : std::min(bad_row, r);
        }
      }
    }
  });
  if (bad_row >= 0) {
    throw std::invalid_argument("sample_codes: row " + std::to_string(bad_row) +
                                " of the guided logits holds a NaN or an infinite maximum; "
                                "nothing can be sampled from it");
  }
}

}  // namespace vilau
