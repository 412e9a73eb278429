// Runs csrc/decode's LlamaDecoder on fixed pseudo-random weights and prints every output value:
// built by tests/ops/test_decode_qemu.py for the host and for aarch64 (run under qemu), whose
// outputs must agree. Two models: float32 linears (q/k/v and gate/up as parts) and packed W4A16
// linears (fused q/k/v and gate/up), 2 layers, GQA, batch 2, 12 steps, one left-padded row.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "decode/llama_decode.h"
#include "w4a16/w4a16.h"

namespace {

constexpr int64_t H = 64, NH = 4, NKV = 2, HD = 16, I = 160, L = 2, B = 2, S = 12, G = 32;

//! A portable pseudo-random value in [-1, 1) from an index (no library distributions).
uint64_t mix(uint64_t i) {
  i = (i + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
  return (i ^ (i >> 31)) * 0x94D049BB133111EBull;
}

float hashed(uint64_t i) { return static_cast<float>((mix(i) >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f; }

std::vector<float> values(uint64_t seed, int64_t n, float scale) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = scale * hashed(seed * 1000003u + i);
  return v;
}

struct Packed {  // one W4A16 linear in the packed layout, with its buffers
  std::vector<uint8_t> packed;
  std::vector<int32_t> qzeros;
  std::vector<uint16_t> scales;
};

Packed packed_linear(uint64_t seed, int64_t n, int64_t k) {
  std::vector<int32_t> qweight(k * n / 8);
  for (size_t i = 0; i < qweight.size(); ++i) {
    qweight[i] = static_cast<int32_t>(mix(seed * 7919u + i) >> 32);  // 8 random nibbles
  }
  Packed p;
  p.qzeros.resize(k / G * n / 8);
  for (size_t i = 0; i < p.qzeros.size(); ++i) p.qzeros[i] = 0x88888888;  // zero point 8
  p.scales.resize(k / G * n);
  for (size_t i = 0; i < p.scales.size(); ++i) p.scales[i] = 0x2000 + (i * 37) % 512;  // ~0.008
  p.packed.resize(k * n / 2);
  vilau::w4a16_repack_cpu(qweight.data(), p.packed.data(), k, n, 1);
  return p;
}

vilau::DecodeLinear as_linear(const Packed& p, int64_t n, int64_t k) {
  vilau::DecodeLinear lin;
  lin.kind = vilau::DecodeLinear::Kind::kW4A16Packed;
  lin.n = n;
  lin.k = k;
  lin.packed = p.packed.data();
  lin.qzeros = p.qzeros.data();
  lin.scales = p.scales.data();
  lin.group_size = G;
  return lin;
}

vilau::DecodeLinear as_linear(const std::vector<float>& w, int64_t n, int64_t k) {
  vilau::DecodeLinear lin;
  lin.n = n;
  lin.k = k;
  lin.weight = w.data();
  return lin;
}

void run(const char* name, bool int4) {
  const int64_t nq = NH * HD, nkv = NKV * HD;
  std::vector<std::vector<float>> floats;  // keeps every float buffer alive
  std::vector<Packed> packs;
  floats.reserve(64);
  packs.reserve(64);
  std::vector<float> norm = values(1, H, 0.5f);
  for (float& v : norm) v += 1.0f;
  vilau::LlamaDecoder dec({H, NH, NKV, HD, I, 1e-5f}, norm.data());
  uint64_t seed = 10;
  auto flin = [&](int64_t n, int64_t k) {
    floats.push_back(values(seed++, n * k, 0.2f));
    return as_linear(floats.back(), n, k);
  };
  auto plin = [&](int64_t n, int64_t k) {
    packs.push_back(packed_linear(seed++, n, k));
    return as_linear(packs.back(), n, k);
  };
  std::vector<std::vector<float>> caches;
  for (int64_t l = 0; l < L; ++l) {
    vilau::LlamaDecodeLayer layer;
    floats.push_back(values(seed++, H, 0.3f));
    for (float& v : floats.back()) v += 1.0f;
    layer.input_norm = floats.back().data();
    floats.push_back(values(seed++, H, 0.3f));
    for (float& v : floats.back()) v += 1.0f;
    layer.post_norm = floats.back().data();
    if (int4) {
      layer.qkv = {plin(nq + 2 * nkv, H)};
      layer.o = plin(H, nq);
      layer.gate_up = {plin(2 * I, H)};
      layer.down = plin(H, I);
    } else {
      layer.qkv = {flin(nq, H), flin(nkv, H), flin(nkv, H)};
      layer.o = flin(H, nq);
      layer.gate_up = {flin(I, H), flin(I, H)};
      layer.down = flin(H, I);
    }
    dec.add_layer(layer);
  }
  caches.resize(2 * L, std::vector<float>(B * NKV * S * HD, 0.0f));
  for (int64_t l = 0; l < L; ++l) dec.set_cache(l, caches[2 * l].data(), caches[2 * l + 1].data(), B, S);
  std::vector<uint8_t> valid(B * S, 1);
  valid[0] = valid[1] = 0;  // row 0: two padded slots
  std::vector<float> x(B * H), out(B * H), cos(B * HD), sin(B * HD);
  double total = 0.0;
  std::printf("%s\n", name);
  for (int64_t t = 0; t < S; ++t) {
    x = values(100 + t, B * H, 1.0f);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t pos = b == 0 ? std::max<int64_t>(0, t - 2) : t;
      for (int64_t d = 0; d < HD; ++d) {
        const double f = pos / std::pow(10000.0, static_cast<double>(2 * (d % (HD / 2))) / HD);
        cos[b * HD + d] = static_cast<float>(std::cos(f));
        sin[b * HD + d] = static_cast<float>(std::sin(f));
      }
    }
    dec.step(x.data(), out.data(), B, cos.data(), sin.data(), valid.data(), S, t, 2);
    for (float v : out) {
      std::printf("%.9g\n", v);
      total += std::fabs(v);
    }
  }
  std::printf("%s sum |out| %.6g\n", name, total);
}

}  // namespace

int main() {
  run("float32", false);
  run("w4a16", true);
  return 0;
}
