#include "tests/depth_reference.h"

#include <cmath>
#include <limits>
#include <vector>

#include "sampling/sampling.h"

namespace vilau::trt::test {

namespace {

using Vec = std::vector<float>;

//! y[m, j] = x[m] . w[j] + b[j]  (w [N, K] row-major, as nn.Linear stores it)
void linear(float const* x, float const* w, float const* b, float* y, int64_t m, int64_t k,
            int64_t n) {
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      float s = 0.f;
      for (int64_t i = 0; i < k; ++i) s += x[r * k + i] * w[j * k + i];
      y[r * n + j] = s + b[j];
    }
  }
}

void layer_norm(float const* x, float const* w, float const* b, float* y, int64_t m, int64_t e) {
  for (int64_t r = 0; r < m; ++r) {
    float mean = 0.f, var = 0.f;
    for (int64_t i = 0; i < e; ++i) mean += x[r * e + i];
    mean /= static_cast<float>(e);
    for (int64_t i = 0; i < e; ++i) var += (x[r * e + i] - mean) * (x[r * e + i] - mean);
    float const rstd = 1.f / std::sqrt(var / static_cast<float>(e) + 1e-5f);
    for (int64_t i = 0; i < e; ++i) y[r * e + i] = (x[r * e + i] - mean) * rstd * w[i] + b[i];
  }
}

}  // namespace

void depth_decode_reference(float const* hidden, float const* weights, float const* codebooks,
                            int64_t seed, int64_t const* forced, int64_t* codes, float* logits,
                            DepthDecodeSizes const& s, DepthSampling const& sp) {
  DepthWeightOffsets const o = depth_weight_offsets(s);
  DepthBlockOffsets const& bo = o.block;
  int64_t const n = s.n, rows = 2 * n, e = s.embed_dim, nh = s.n_head, hd = e / nh;
  int64_t const v = s.codebook_rows - 1, c = s.code_dim, depth = s.depth;
  float const scale = 1.f / std::sqrt(static_cast<float>(hd));
  float const* w = weights;
  // cache[l][row][head][depth][hd]
  std::vector<Vec> kc(s.n_layer, Vec(rows * e * depth)), vc(s.n_layer, Vec(rows * e * depth));
  Vec x(rows * e), h(rows * e), a(rows * e), q(rows * e), k(rows * e), val(rows * e), y(rows * e),
      t(rows * e), m(rows * 4 * e), m2(rows * e), running(n * c, 0.f);
  std::vector<int64_t> sampled(n);
  int64_t const rng[2] = {seed, 0};
  linear(hidden, w + o.in2_w, w + o.in2_b, x.data(), rows, s.llm_dim, e);
  for (int64_t d = 0; d < depth; ++d) {
    for (int64_t i = 0; i < rows * e; ++i) h[i] = x[i] + w[o.pos_emb + d * e + i % e];
    for (int64_t l = 0; l < s.n_layer; ++l) {
      float const* bw = w + o.blocks + l * bo.size;
      layer_norm(h.data(), bw + bo.ln1_w, bw + bo.ln1_b, a.data(), rows, e);
      linear(a.data(), bw + bo.query_w, bw + bo.query_b, q.data(), rows, e, e);
      linear(a.data(), bw + bo.key_w, bw + bo.key_b, k.data(), rows, e, e);
      linear(a.data(), bw + bo.value_w, bw + bo.value_b, val.data(), rows, e, e);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t hh = 0; hh < nh; ++hh) {
          float* kb = kc[l].data() + (r * nh + hh) * depth * hd;
          float* vb = vc[l].data() + (r * nh + hh) * depth * hd;
          for (int64_t j = 0; j < hd; ++j) {
            kb[d * hd + j] = k[r * e + hh * hd + j];
            vb[d * hd + j] = val[r * e + hh * hd + j];
          }
          std::vector<float> score(d + 1);
          float best = -std::numeric_limits<float>::infinity();
          for (int64_t p = 0; p <= d; ++p) {
            float dot = 0.f;
            for (int64_t j = 0; j < hd; ++j)
              dot += q[r * e + hh * hd + j] * (kb[p * hd + j] * scale);
            score[p] = dot;
            best = std::fmax(best, dot);
          }
          float total = 0.f;
          for (int64_t p = 0; p <= d; ++p) total += std::exp(score[p] - best);
          for (int64_t j = 0; j < hd; ++j) {
            float acc = 0.f;
            for (int64_t p = 0; p <= d; ++p) acc += std::exp(score[p] - best) * vb[p * hd + j];
            y[r * e + hh * hd + j] = acc / total;
          }
        }
      }
      linear(y.data(), bw + bo.proj_w, bw + bo.proj_b, t.data(), rows, e, e);
      for (int64_t i = 0; i < rows * e; ++i) h[i] += t[i];
      layer_norm(h.data(), bw + bo.ln2_w, bw + bo.ln2_b, a.data(), rows, e);
      linear(a.data(), bw + bo.fc1_w, bw + bo.fc1_b, m.data(), rows, e, 4 * e);
      for (float& z : m) z = 0.5f * z * (1.f + std::erf(z * 0.70710678118654752f));
      linear(m.data(), bw + bo.fc2_w, bw + bo.fc2_b, m2.data(), rows, 4 * e, e);
      for (int64_t i = 0; i < rows * e; ++i) h[i] += m2[i];
    }
    layer_norm(h.data(), w + o.cls_ln_w, w + o.cls_ln_b, a.data(), rows, e);
    float* logits_d = logits + d * rows * v;
    linear(a.data(), w + o.cls_w, w + o.cls_b, logits_d, rows, e, v);
    sample_codes_cpu(logits_d, sampled.data(), n, v, true, sp.cfg_scale, sp.temperature, sp.top_k,
                     sp.top_p, rng, d, DType::kFloat32, 1);
    float const* book = codebooks + (s.n_codebooks == 1 ? 0 : d) * s.codebook_rows * c;
    for (int64_t r = 0; r < n; ++r) {
      int64_t const f = forced[r * depth + d];
      int64_t const code = f >= 0 ? f : sampled[r];
      codes[r * depth + d] = code;
      for (int64_t i = 0; i < c; ++i) running[r * c + i] += book[code * c + i];
    }
    if (d + 1 < depth) {
      linear(running.data(), w + o.in1_w, w + o.in1_b, x.data(), n, c, e);
      for (int64_t i = 0; i < n * e; ++i) x[n * e + i] = x[i];
    }
  }
}

}  // namespace vilau::trt::test
