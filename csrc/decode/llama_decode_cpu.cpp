// The CPU LLaMA decode step (see llama_decode.h for the arithmetic).
#include "decode/llama_decode.h"

#include "common/dtype.h"
#include "common/threads.h"
#include "gemv/gemv_f32.h"
#include "w4a16/w4a16.h"
#include "w4a8/w4a8.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace vilau {

namespace {

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("llama_decode: " + what);
}

void check_linear(const DecodeLinear& lin, const std::string& name, int64_t n, int64_t k) {
  if (lin.n != n || lin.k != k) {
    bad(name + " is [" + std::to_string(lin.n) + ", " + std::to_string(lin.k) +
        "] (N, K); the shape needs [" + std::to_string(n) + ", " + std::to_string(k) + "]");
  }
  if (k % 32) bad(name + ": K = " + std::to_string(k) + " must be a multiple of 32");
  switch (lin.kind) {
    case DecodeLinear::Kind::kFloat32:
      if (lin.weight == nullptr) bad(name + ": null float32 weight");
      return;
    case DecodeLinear::Kind::kW16:
      if (lin.weight16 == nullptr) bad(name + ": null 16-bit weight");
      if (lin.w16_dtype != DType::kFloat16 && lin.w16_dtype != DType::kBFloat16) {
        bad(name + ": a 16-bit weight must be float16 or bfloat16, not " +
            dtype_name(lin.w16_dtype));
      }
      return;
    case DecodeLinear::Kind::kW4A16Packed:
      if (!lin.packed || !lin.qzeros || !lin.scales) bad(name + ": null packed W4A16 buffer");
      if (lin.group_size < 32 || lin.group_size % 32 || k % lin.group_size) {
        bad(name + ": group size " + std::to_string(lin.group_size) +
            " must be a multiple of 32 that divides K = " + std::to_string(k));
      }
      if (n % 8) bad(name + ": N = " + std::to_string(n) + " must be a multiple of 8");
      return;
    case DecodeLinear::Kind::kW4A8:
      if (!lin.packed || !lin.zeros8 || !lin.scales) bad(name + ": null W4A8 buffer");
      try {
        w4a8_check_sizes(1, k, n, lin.group_size);
      } catch (const std::invalid_argument& e) {
        bad(name + ": " + e.what());
      }
      return;
  }
  bad(name + ": unknown linear kind " + std::to_string(static_cast<int>(lin.kind)));
}

void run_linear(const DecodeLinear& lin, const float* x, float* y, int64_t m, int threads,
                std::vector<int8_t>& quantized) {
  if (lin.kind == DecodeLinear::Kind::kFloat32) {
    gemv_f32_cpu(x, lin.weight, lin.bias, y, m, lin.k, lin.n, threads);
  } else if (lin.kind == DecodeLinear::Kind::kW16) {
    gemv_w16_cpu(x, lin.weight16, lin.w16_dtype, lin.bias, y, m, lin.k, lin.n, threads);
  } else if (lin.kind == DecodeLinear::Kind::kW4A8) {
    w4a8_linear_cpu(x, lin.packed, lin.zeros8, static_cast<const uint16_t*>(lin.scales),
                    static_cast<const uint16_t*>(lin.bias16), y, m, lin.k, lin.n, lin.group_size,
                    threads, quantized);
  } else {
    w4a16_linear_packed_cpu(x, lin.packed, lin.qzeros, lin.scales, lin.bias16, y, m, lin.k,
                            lin.n, lin.group_size, DType::kFloat32, threads);
  }
}

//! y[M, sum of N] = the parts' outputs side by side (a part of several writes its rows through
//! @p scratch when M > 1).
void run_parts(const std::vector<DecodeLinear>& parts, const float* x, float* y, int64_t m,
               int threads, std::vector<float>& scratch, std::vector<int8_t>& quantized) {
  if (parts.size() == 1) {
    run_linear(parts[0], x, y, m, threads, quantized);
    return;
  }
  if (parts[0].kind == DecodeLinear::Kind::kW4A8) {  // x quantized once, one parallel region
    std::vector<W4A8Part> w(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) {  // all W4A8 of one group size (check_parts)
      const DecodeLinear& p = parts[i];
      w[i] = {p.packed, p.zeros8, static_cast<const uint16_t*>(p.scales),
              static_cast<const uint16_t*>(p.bias16), p.n};
    }
    const W4A8Quantized q = w4a8_quantize_into(x, m, parts[0].k, quantized);
    w4a8_gemv_parts_cpu(q.xq, q.d, q.s, w.data(), static_cast<int>(w.size()), y, m, parts[0].k,
                        parts[0].group_size, threads);
    return;
  }
  int64_t total = 0;
  for (const DecodeLinear& p : parts) total += p.n;
  int64_t offset = 0;
  for (const DecodeLinear& p : parts) {
    if (m == 1) {
      run_linear(p, x, y + offset, 1, threads, quantized);
    } else {
      scratch.resize(m * p.n);
      run_linear(p, x, scratch.data(), m, threads, quantized);
      for (int64_t r = 0; r < m; ++r) {
        std::copy(scratch.data() + r * p.n, scratch.data() + (r + 1) * p.n,
                  y + r * total + offset);
      }
    }
    offset += p.n;
  }
}

void check_parts(const std::vector<DecodeLinear>& parts, const std::string& name, int64_t n,
                 int64_t k) {
  if (parts.empty() || parts.size() > 3) {
    bad(name + " has " + std::to_string(parts.size()) + " parts; expected 1 to 3");
  }
  int64_t total = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string part = parts.size() == 1 ? name : name + " part " + std::to_string(i);
    check_linear(parts[i], part, parts[i].n, k);
    total += parts[i].n;
  }
  if (total != n) {
    bad(name + " has " + std::to_string(total) + " output rows in all; the shape needs " +
        std::to_string(n));
  }
  for (const DecodeLinear& p : parts) {  // W4A8 parts run as one call on one quantized x
    const bool w4a8 = p.kind == DecodeLinear::Kind::kW4A8;
    if (w4a8 != (parts[0].kind == DecodeLinear::Kind::kW4A8) ||
        (w4a8 && p.group_size != parts[0].group_size)) {
      bad(name + ": W4A8 parts cannot be mixed with other kinds or group sizes");
    }
  }
}

void rms_norm(const float* x, const float* w, float* out, int64_t m, int64_t h, float eps) {
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * h;
    double ss = 0.0;
    for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float var = static_cast<float>(ss / static_cast<double>(h));
    const float inv = 1.0f / std::sqrt(var + eps);
    for (int64_t i = 0; i < h; ++i) out[r * h + i] = w[i] * (xr[i] * inv);
  }
}

//! In place: v' = v * cos + rotate_half(v) * sin over one head of d values.
void rope(float* v, const float* cos, const float* sin, int64_t d) {
  const int64_t half = d / 2;
  float rotated[512];  // head_dim <= 512 (checked in the constructor)
  for (int64_t i = 0; i < half; ++i) {
    rotated[i] = -v[half + i];
    rotated[half + i] = v[i];
  }
  for (int64_t i = 0; i < d; ++i) {
    const float a = v[i] * cos[i];
    const float b = rotated[i] * sin[i];
    v[i] = a + b;
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float p[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int j = 0; j < 16; ++j) p[j] += a[i + j] * b[i + j];
  }
  float s = 0.0f;
  for (int j = 0; j < 16; ++j) s += p[j];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// The attention of one head is compiled for AVX-512 and AVX2 as well as baseline x86-64, chosen
// at load time (GCC function multiversioning): its loops vectorize 16 or 8 wide instead of
// SSE2's 4. The operations and their order are the same in every clone (no fused multiply-add
// in this file, -ffp-contract=off; no reassociation), so the results are the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(VILAU_NO_TARGET_CLONES)
#define VILAU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VILAU_CLONES
#endif

//! softmax(q . k[l] / scale over the valid slots l < end) . v into @p out [hd]; @p s: end floats
//! of scratch.
VILAU_CLONES void attend_head(const float* q, const float* keys, const float* values,
                              const uint8_t* ok, int64_t end, int64_t hd, float scale, float* s,
                              float* out) {
  float top = -FLT_MAX;
  for (int64_t l = 0; l < end; ++l) {
    s[l] = ok[l] ? dot(q, keys + l * hd, hd) / scale : -FLT_MAX;
    top = s[l] > top ? s[l] : top;
  }
  float sum = 0.0f;
  for (int64_t l = 0; l < end; ++l) {
    s[l] = std::exp(s[l] - top);
    sum += s[l];
  }
  for (int64_t d = 0; d < hd; ++d) out[d] = 0.0f;
  for (int64_t l = 0; l < end; ++l) {
    const float p = s[l] / sum;
    const float* vl = values + l * hd;
    for (int64_t d = 0; d < hd; ++d) out[d] += p * vl[d];
  }
}

void check_positive(const char* name, int64_t v) {
  if (v < 1) bad(std::string(name) + " = " + std::to_string(v) + " must be >= 1");
}

}  // namespace

LlamaDecoder::LlamaDecoder(const LlamaDecodeShape& shape, const float* final_norm)
    : shape_(shape), final_norm_(final_norm) {
  check_positive("hidden", shape.hidden);
  check_positive("heads", shape.heads);
  check_positive("kv_heads", shape.kv_heads);
  check_positive("head_dim", shape.head_dim);
  check_positive("intermediate", shape.intermediate);
  if (shape.heads % shape.kv_heads) {
    bad("heads = " + std::to_string(shape.heads) + " is not a multiple of kv_heads = " +
        std::to_string(shape.kv_heads));
  }
  if (shape.head_dim % 2 || shape.head_dim > 512) {
    bad("head_dim = " + std::to_string(shape.head_dim) + " must be even and <= 512");
  }
  if (!(shape.eps > 0.0f)) bad("eps must be > 0");
  if (final_norm == nullptr) bad("null final norm weight");
}

void LlamaDecoder::add_layer(const LlamaDecodeLayer& layer) {
  const std::string name = "layer " + std::to_string(layers_.size()) + " ";
  const int64_t h = shape_.hidden, hd = shape_.head_dim;
  if (!layer.input_norm || !layer.post_norm) bad(name + "has a null norm weight");
  check_parts(layer.qkv, name + "q/k/v", (shape_.heads + 2 * shape_.kv_heads) * hd, h);
  check_linear(layer.o, name + "o_proj", h, shape_.heads * hd);
  check_parts(layer.gate_up, name + "gate/up", 2 * shape_.intermediate, h);
  check_linear(layer.down, name + "down_proj", h, shape_.intermediate);
  layers_.push_back(layer);
  caches_.emplace_back();
}

void LlamaDecoder::set_cache(int64_t layer, float* k, float* v, int64_t batch,
                             int64_t capacity) {
  if (layer < 0 || layer >= num_layers()) {
    bad("set_cache: layer " + std::to_string(layer) + " of " + std::to_string(num_layers()));
  }
  if (!k || !v) bad("set_cache: null cache buffer");
  check_positive("cache batch", batch);
  check_positive("cache capacity", capacity);
  caches_[layer] = Cache{k, v, batch, capacity};
}

int64_t LlamaDecoder::max_batch() const {
  for (const LlamaDecodeLayer& l : layers_) {
    std::vector<const DecodeLinear*> all = {&l.o, &l.down};
    for (const DecodeLinear& p : l.qkv) all.push_back(&p);
    for (const DecodeLinear& p : l.gate_up) all.push_back(&p);
    for (const DecodeLinear* lin : all) {
      if (lin->kind == DecodeLinear::Kind::kFloat32 || lin->kind == DecodeLinear::Kind::kW16) {
        return kGemvF32MaxM;
      }
    }
  }
  return std::numeric_limits<int64_t>::max();  // the packed GEMV serves any M
}

void LlamaDecoder::attention(const float* qkv, float* y, const Cache& cache, int64_t batch,
                             const uint8_t* valid, int64_t valid_stride, int64_t slot,
                             int num_threads) {
  const int64_t nh = shape_.heads, nkv = shape_.kv_heads, hd = shape_.head_dim;
  const int64_t row = (nh + 2 * nkv) * hd;  // q/k/v values of one sequence
  const int64_t group = nh / nkv;
  const int64_t end = slot + 1;
  const float scale = static_cast<float>(std::sqrt(static_cast<double>(hd)));
  const int64_t tasks = batch * nh;
  // A thread per ~32K multiply-adds of q.k and p.v: a short cache is not worth a fork/join
  // (or, on a busy machine, a wait for a descheduled thread).
  const int64_t work = tasks * end * hd * 2;
  [[maybe_unused]] const int threads =
      static_cast<int>(std::min<int64_t>(num_threads, 1 + work / (1 << 15)));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> s(end);
    int64_t t0, t1;
    thread_share(tasks, &t0, &t1);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / nh, h = t % nh, g = h / group;
      const float* q = qkv + b * row + h * hd;
      const float* keys = cache.k + ((b * nkv + g) * cache.capacity) * hd;
      const float* values = cache.v + ((b * nkv + g) * cache.capacity) * hd;
      attend_head(q, keys, values, valid + b * valid_stride, end, hd, scale, s.data(),
                  y + b * nh * hd + h * hd);
    }
  }
}

void LlamaDecoder::step(const float* x, float* out, int64_t batch, const float* cos,
                        const float* sin, const uint8_t* valid, int64_t valid_stride,
                        int64_t slot, int num_threads) {
  check_num_threads("llama_decode", num_threads);
  if (layers_.empty()) bad("step: the decoder has no layers");
  if (batch < 1 || batch > max_batch()) {
    bad("step: batch " + std::to_string(batch) + " outside 1.." + std::to_string(max_batch()));
  }
  if (!x || !out || !cos || !sin || !valid) bad("step: null buffer");
  for (size_t i = 0; i < caches_.size(); ++i) {
    const Cache& c = caches_[i];
    if (c.k == nullptr || c.batch != batch || slot < 0 || slot >= c.capacity) {
      bad("step: layer " + std::to_string(i) + " cache (batch " + std::to_string(c.batch) +
          ", capacity " + std::to_string(c.capacity) + ") does not hold batch " +
          std::to_string(batch) + " at slot " + std::to_string(slot));
    }
  }
  if (valid_stride < slot + 1) bad("step: valid_stride " + std::to_string(valid_stride) +
                                   " does not cover slot " + std::to_string(slot));
  const int64_t h = shape_.hidden, nh = shape_.heads, nkv = shape_.kv_heads;
  const int64_t hd = shape_.head_dim, inter = shape_.intermediate;
  const int64_t row = (nh + 2 * nkv) * hd;
  x_.assign(x, x + batch * h);
  a_.resize(batch * h);
  qkv_.resize(batch * row);
  att_.resize(batch * nh * hd);
  gu_.resize(batch * 2 * inter);
  m_.resize(batch * inter);
  std::vector<float>& y = a_;  // o / down outputs reuse the normed-input buffer

  for (size_t li = 0; li < layers_.size(); ++li) {
    const LlamaDecodeLayer& layer = layers_[li];
    const Cache& cache = caches_[li];
    rms_norm(x_.data(), layer.input_norm, a_.data(), batch, h, shape_.eps);
    run_parts(layer.qkv, a_.data(), qkv_.data(), batch, num_threads, part_, quantized_);
    for (int64_t b = 0; b < batch; ++b) {
      float* q = qkv_.data() + b * row;
      float* k = q + nh * hd;
      const float* v = k + nkv * hd;
      for (int64_t i = 0; i < nh; ++i) rope(q + i * hd, cos + b * hd, sin + b * hd, hd);
      for (int64_t g = 0; g < nkv; ++g) {
        rope(k + g * hd, cos + b * hd, sin + b * hd, hd);
        const int64_t at = ((b * nkv + g) * cache.capacity + slot) * hd;
        for (int64_t d = 0; d < hd; ++d) {
          cache.k[at + d] = k[g * hd + d];
          cache.v[at + d] = v[g * hd + d];
        }
      }
    }
    attention(qkv_.data(), att_.data(), cache, batch, valid, valid_stride, slot, num_threads);
    run_linear(layer.o, att_.data(), y.data(), batch, num_threads, quantized_);
    for (int64_t i = 0; i < batch * h; ++i) x_[i] = x_[i] + y[i];
    rms_norm(x_.data(), layer.post_norm, a_.data(), batch, h, shape_.eps);
    run_parts(layer.gate_up, a_.data(), gu_.data(), batch, num_threads, part_, quantized_);
    for (int64_t b = 0; b < batch; ++b) {
      const float* gate = gu_.data() + b * 2 * inter;
      const float* up = gate + inter;
      for (int64_t i = 0; i < inter; ++i) {
        const float g = gate[i];
        m_[b * inter + i] = (g / (1.0f + std::exp(-g))) * up[i];
      }
    }
    run_linear(layer.down, m_.data(), y.data(), batch, num_threads, quantized_);
    for (int64_t i = 0; i < batch * h; ++i) x_[i] = x_[i] + y[i];
  }
  rms_norm(x_.data(), final_norm_, out, batch, h, shape_.eps);
}

}  // namespace vilau
