// CUDA sampler: one block of kThreads per row, the row's keys and weights in a global
// workspace (L1/L2 resident), selections by 4-pass radix select on 8-bit digits.
//
// Passes over the row: guided logits + max (1), top-k radix select by count (4, only when
// 1 < top_k < V), weights + total (1), top-p radix select by mass (4, only when top_p < 1),
// inverse-CDF draw (1). Every sum is an integer (fixed-point weights, see sampling.h), so the
// result does not depend on atomics' order.
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "sampling/philox.h"
#include "sampling/sampling.h"

namespace vilau {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr unsigned kFull = 0xffffffffu;

struct Shared {
  unsigned long long hist[kBins];
  unsigned long long warp_u64[kWarps];
  float warp_val[kWarps];
  int64_t warp_idx[kWarps];
  uint32_t chosen_bin;
  unsigned long long chosen_above, chosen_mass;
};

template <class T>
__device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}

//! guided = u + cfg * (c - u), each operation rounded to T (no contraction into an FMA).
template <class T>
__device__ __forceinline__ float guided_logit(const T* cond, const T* uncond, int64_t i,
                                              bool with_cfg, float cfg_scale) {
  if (!with_cfg) return to_float(cond[i]);
  const float u = to_float(uncond[i]);
  const float diff = round_to<T>(__fsub_rn(to_float(cond[i]), u));
  const float prod = round_to<T>(__fmul_rn(cfg_scale, diff));
  return round_to<T>(__fadd_rn(u, prod));
}

__device__ __forceinline__ float key_float(uint32_t key) {
  return __uint_as_float(order_key_bits(key));
}

//! Argmax order: NaN first, then larger value, then smaller index.
__device__ __forceinline__ bool arg_better(float v, int64_t i, float bv, int64_t bi) {
  const bool vn = isnan(v), bn = isnan(bv);
  if (vn != bn) return vn;
  if (!vn && v != bv) return v > bv;
  return i < bi;
}

__device__ unsigned long long block_sum(unsigned long long v, Shared& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  if (lane == 0) s.warp_u64[warp] = v;
  __syncthreads();
  unsigned long long total = 0;
  for (int w = 0; w < kWarps; ++w) total += s.warp_u64[w];
  __syncthreads();  // warp_u64 is reused
  return total;
}

__device__ unsigned long long block_exclusive_scan(unsigned long long v, Shared& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  unsigned long long incl = v;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long up = __shfl_up_sync(kFull, incl, o);
    if (lane >= o) incl += up;
  }
  if (lane == 31) s.warp_u64[warp] = incl;
  __syncthreads();
  unsigned long long before = 0;
  for (int w = 0; w < warp; ++w) before += s.warp_u64[w];
  __syncthreads();
  return before + incl - v;
}

//! The largest key tau among @p keys with mass(keys >= tau) >= need, mass = count (weights
//! null) or sum of weights. Writes tau and mass(keys >= tau).
__device__ void radix_select(const uint32_t* keys, const unsigned long long* weights,
                             int64_t vocab, double need, uint32_t* tau,
                             unsigned long long* mass_at, Shared& s) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint32_t prefix = 0, mask = 0;
  unsigned long long above = 0;  // mass of keys above the current prefix range
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < kBins; b += kThreads) s.hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const uint32_t k = keys[i];
      if ((k & mask) == prefix) {
        const unsigned long long w = weights ? weights[i] : 1ull;
        if (w) atomicAdd(&s.hist[(k >> shift) & 0xffu], w);
      }
    }
    __syncthreads();
    if (warp == 0) {  // lane l covers bins 255 - 8l down to 248 - 8l
      unsigned long long vals[8], lane_sum = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        vals[j] = s.hist[kBins - 1 - 8 * lane - j];
        lane_sum += vals[j];
      }
      unsigned long long incl = lane_sum;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned long long up = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += up;
      }
      const bool hit = static_cast<double>(above + incl) >= need;
      const unsigned ballot = __ballot_sync(kFull, hit);
      const int first = ballot ? __ffs(ballot) - 1 : 31;  // no hit only through bad input
      if (lane == first) {
        unsigned long long cum = above + incl - lane_sum;
        int bin = kBins - 1 - 8 * lane - 7;
        unsigned long long at = cum + lane_sum, before = at - vals[7];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (static_cast<double>(cum + vals[j]) >= need) {
            bin = kBins - 1 - 8 * lane - j;
            before = cum;
            at = cum + vals[j];
            break;
          }
          cum += vals[j];
        }
        s.chosen_bin = static_cast<uint32_t>(bin);
        s.chosen_above = before;
        s.chosen_mass = at;
      }
    }
    __syncthreads();
    prefix |= s.chosen_bin << shift;
    mask |= 0xffu << shift;
    above = s.chosen_above;
  }
  *tau = prefix;
  *mass_at = s.chosen_mass;
  __syncthreads();  // chosen_* and hist are reused by the caller
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    sample_codes_kernel(const T* __restrict__ logits, int64_t* __restrict__ codes,
                        uint32_t* keys_ws, unsigned long long* weights_ws, int64_t n_rows,
                        int64_t vocab, bool with_cfg, float cfg_scale, float temperature,
                        int64_t top_k, float top_p, const int64_t* __restrict__ rng,
                        uint32_t subsequence) {
  __shared__ Shared s;
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const T* cond = logits + row * vocab;
  const T* uncond = with_cfg ? logits + (n_rows + row) * vocab : nullptr;

  if (top_k == 1) {  // argmax, as torch.argmax: NaN is the maximum, first index on ties
    float bv = -INFINITY;
    int64_t bi = INT64_MAX;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = guided_logit(cond, uncond, i, with_cfg, cfg_scale);
      if (arg_better(v, i, bv, bi)) {
        bv = v;
        bi = i;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFull, bv, o);
      const int64_t oi = __shfl_xor_sync(kFull, bi, o);
      if (arg_better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      s.warp_val[warp] = bv;
      s.warp_idx[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < kWarps; ++w) {
        if (arg_better(s.warp_val[w], s.warp_idx[w], bv, bi)) {
          bv = s.warp_val[w];
          bi = s.warp_idx[w];
        }
      }
      codes[row] = bi;
    }
    return;
  }

  uint32_t* keys = keys_ws + row * vocab;
  unsigned long long* weights = weights_ws + row * vocab;
  uint32_t max_key = 0;
  bool any_nan = false;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float x = __fdiv_rn(guided_logit(cond, uncond, i, with_cfg, cfg_scale), temperature);
    any_nan = any_nan || isnan(x);
    const uint32_t k = float_order_key(__float_as_uint(x));
    keys[i] = k;
    max_key = max(max_key, k);
  }
  max_key = __reduce_max_sync(kFull, max_key);
  if (lane == 0) s.warp_u64[warp] = max_key;
  any_nan = __syncthreads_or(any_nan);
  for (int w = 0; w < kWarps; ++w) max_key = max(max_key, static_cast<uint32_t>(s.warp_u64[w]));
  const float max_x = key_float(max_key);
  if (any_nan || isinf(max_x)) {
    if (threadIdx.x == 0) codes[row] = -1;  // documented in sampling.h
    return;
  }
  __syncthreads();  // warp_u64 is reused

  uint32_t kth = 0;
  unsigned long long unused;
  if (top_k > 1 && top_k < vocab) {
    radix_select(keys, nullptr, vocab, static_cast<double>(top_k), &kth, &unused, s);
  }
  unsigned long long local = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const uint32_t k = keys[i];
    unsigned long long w = 0;
    if (k >= kth) {
      const double e = exp(static_cast<double>(key_float(k)) - static_cast<double>(max_x));
      w = __double2ull_rn(e * 4294967296.0);  // 2^kSampleWeightBits
    }
    weights[i] = w;
    local += w;
  }
  const unsigned long long total = block_sum(local, s);

  uint32_t tau = kth;
  unsigned long long kept = total;
  if (top_p < 1.0f) {
    radix_select(keys, weights, vocab, static_cast<double>(top_p) * static_cast<double>(total),
                 &tau, &kept, s);
  }

  // inverse CDF in index order: thread t owns the contiguous chunk t of the row
  const int64_t chunk = (vocab + kThreads - 1) / kThreads;
  const int64_t begin = min(vocab, threadIdx.x * chunk), end = min(vocab, begin + chunk);
  local = 0;
  for (int64_t i = begin; i < end; ++i) {
    if (keys[i] >= tau) local += weights[i];
  }
  const unsigned long long before = block_exclusive_scan(local, s);
  const uint64_t bits = sample_draw_bits(static_cast<uint64_t>(rng[0]),
                                         static_cast<uint64_t>(rng[1]),
                                         static_cast<uint32_t>(row), subsequence);
  const unsigned long long target = scale_draw(bits, kept);
  if (local > 0 && before <= target && target < before + local) {
    unsigned long long acc = before;
    for (int64_t i = begin; i < end; ++i) {
      if (keys[i] >= tau) {
        acc += weights[i];
        if (acc > target) {
          codes[row] = i;
          break;
        }
      }
    }
  }
}
static_assert(kSampleWeightBits == 32, "the kernel scales weights by 2^32");

}  // namespace

void sample_codes_cuda(const void* logits, int64_t* codes, void* workspace, int64_t n_rows,
                       int64_t vocab, bool with_cfg, float cfg_scale, float temperature,
                       int64_t top_k, float top_p, const int64_t* rng, int64_t subsequence,
                       DType dtype, cudaStream_t stream) {
  sample_check_args(n_rows, vocab, temperature, top_p, subsequence);
  if (n_rows == 0) return;
  uint32_t* keys = static_cast<uint32_t*>(workspace);
  const size_t key_bytes =
      (static_cast<size_t>(n_rows) * vocab * sizeof(uint32_t) + 15) / 16 * 16;
  auto* weights = reinterpret_cast<unsigned long long*>(static_cast<char*>(workspace) + key_bytes);
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    sample_codes_kernel<T><<<static_cast<unsigned>(n_rows), kThreads, 0, stream>>>(
        static_cast<const T*>(logits), codes, keys, weights, n_rows, vocab, with_cfg, cfg_scale,
        temperature, top_k, top_p, rng, static_cast<uint32_t>(subsequence));
  });
  cuda_check_launch("sample_codes_kernel launch");
}

}  // namespace vilau
