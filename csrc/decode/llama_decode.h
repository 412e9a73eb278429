// One LLaMA decode step (T = 1 token per sequence) on the CPU, every layer in one call.
//
// Why: a decode step of a small or quantized model reads its weights in a few milliseconds, and a
// step built from framework ops adds ~45 op dispatches per layer (norms, RoPE, cache writes,
// attention, SiLU, residual adds) that cost as much again. Here a layer is: RMSNorm -> fused
// q/k/v GEMV -> RoPE -> KV-cache write -> attention over the filled slots -> o GEMV + residual ->
// RMSNorm -> fused gate/up GEMV -> SiLU(gate) * up -> down GEMV + residual; the step ends with the
// final RMSNorm. The GEMVs are csrc/gemv (float32 weights, or float16 / bfloat16 ones widened to
// float32 in registers: the same bits, half the bytes), the packed W4A16 GEMV (csrc/w4a16) and,
// for a model run with int8 activations (opt-in), the W4A8 GEMV (csrc/w4a8).
//
// Arithmetic (float32 throughout; the model's ops in vilau_rt/model/llama.py, in the same order
// of operations, except where noted):
//   RMSNorm:   h = x * (1 / sqrt(mean(x^2) + eps)), the mean summed in double; out = w * h.
//   RoPE:      q' = q * cos + rotate_half(q) * sin (two products, one add; no FMA).
//   attention: s[l] = dot(q, k[l]) / sqrt(head_dim) for slots l <= slot; s[l] = -FLT_MAX where
//              valid[b, l] is false; p = exp(s - max s) / sum; y = sum_l p[l] * v[l]. Dot products
//              sum 16 partial sums, then those in order.
//   SiLU:      g / (1 + exp(-g)), times up.
// The order differs from torch's kernels (sums, exp), so results agree with the op-by-op step to
// float32 rounding, not bit for bit.
//
// Buffers are raw pointers the caller owns and keeps alive; nothing here allocates per step
// except the scratch vectors the first step of a larger batch grows.
#pragma once

#include <cstdint>
#include <vector>

#include "common/dtype.h"

namespace vilau {

//! One linear layer y[M, N] = x[M, K] @ W^T + bias in one of the stored forms.
struct DecodeLinear {
  enum class Kind : int {
    kFloat32 = 0,      //!< weight float32 [N, K] (torch.nn.Linear), bias float32 [N] or null
    kW4A16Packed = 1,  //!< the packed W4A16 layout (w4a16.h), scales/bias float16
    kW4A8 = 2,         //!< the W4A8 layout (w4a8.h): int8 activations, approximate, opt-in
    kW16 = 3,          //!< weight float16 / bfloat16 [N, K] (weight16, w16_dtype), bias float32
  };
  Kind kind = Kind::kFloat32;
  int64_t n = 0;
  int64_t k = 0;
  const float* weight = nullptr;    //!< kFloat32
  const float* bias = nullptr;      //!< kFloat32, kW16: optional
  const uint16_t* weight16 = nullptr;  //!< kW16: the weights' bit patterns
  DType w16_dtype = DType::kFloat16;   //!< kW16: DType::kFloat16 or DType::kBFloat16
  const uint8_t* packed = nullptr;  //!< kW4A16Packed: K * N / 2 bytes; kW4A8: the codes
  const int32_t* qzeros = nullptr;  //!< kW4A16Packed: int32 [K/G, N/8]
  const uint8_t* zeros8 = nullptr;  //!< kW4A8: uint8 [N/16, K/G, 16]
  const void* scales = nullptr;     //!< kW4A16Packed: float16 [K/G, N]; kW4A8: [N/16, K/G, 16]
  const void* bias16 = nullptr;     //!< kW4A16Packed, kW4A8: float16 [N], optional
  int64_t group_size = 0;           //!< kW4A16Packed, kW4A8
};

//! Sizes of the decoder (LlamaConfig's names).
struct LlamaDecodeShape {
  int64_t hidden = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate = 0;
  float eps = 1e-6f;
};

//! One decoder layer's weights. q/k/v is one linear with rows [q (heads * head_dim); k; v] or
//! the same rows split over several linears (q, k, v as the checkpoint stores them: fusing them
//! would copy weights that are mapped from the file); gate/up likewise ([gate; up]).
struct LlamaDecodeLayer {
  const float* input_norm = nullptr;  //!< [hidden]
  const float* post_norm = nullptr;   //!< [hidden]
  std::vector<DecodeLinear> qkv;
  DecodeLinear o;
  std::vector<DecodeLinear> gate_up;
  DecodeLinear down;
};

class LlamaDecoder {
 public:
  //! @throws std::invalid_argument naming the bad size (all > 0, heads % kv_heads == 0, head_dim
  //!         even, eps > 0) or a null final_norm.
  LlamaDecoder(const LlamaDecodeShape& shape, const float* final_norm);

  //! Appends a layer. @throws std::invalid_argument naming the layer, the linear and the size
  //! that does not match the shape (split linears: their N add up), or a form the GEMVs do not
  //! serve (K % 32, G % 32, N % 8).
  void add_layer(const LlamaDecodeLayer& layer);

  //! The KV cache of layer @p layer: k and v float32 [batch, kv_heads, capacity, head_dim].
  //! @throws std::invalid_argument for an unknown layer or sizes < 1.
  void set_cache(int64_t layer, float* k, float* v, int64_t batch, int64_t capacity);

  //! Largest batch a step serves: kGemvF32MaxM when a layer has a float32 linear; with packed
  //! W4A16 linears only, no bound (the caller decides where BLAS wins, see vilau_rt.ops).
  int64_t max_batch() const;

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

  //! One token per sequence: @p x [batch, hidden] at cache slot @p slot, rotary tables @p cos
  //! and @p sin [batch, head_dim] (the rows of each sequence's position), @p valid bool
  //! [batch, valid_stride] (slot l of sequence b is attended when l <= slot and valid[b, l]).
  //! Writes k/v at @p slot in every layer's cache and the final-normed hidden to @p out
  //! [batch, hidden] (may alias x). Threads: the GEMVs and the attention heads.
  //! @throws std::invalid_argument when a cache is missing or of another batch, slot is outside
  //!         the capacity, batch > max_batch() or num_threads < 1.
  void step(const float* x, float* out, int64_t batch, const float* cos, const float* sin,
            const uint8_t* valid, int64_t valid_stride, int64_t slot, int num_threads);

 private:
  struct Cache {
    float* k = nullptr;
    float* v = nullptr;
    int64_t batch = 0;
    int64_t capacity = 0;
  };
  void attention(const float* qkv, float* y, const Cache& cache, int64_t batch,
                 const uint8_t* valid, int64_t valid_stride, int64_t slot, int num_threads);

  LlamaDecodeShape shape_;
  const float* final_norm_;
  std::vector<LlamaDecodeLayer> layers_;
  std::vector<Cache> caches_;
  // scratch, grown on demand: residual, normed input, q/k/v, attention out, gate/up, mlp in,
  // one part of a split linear
  std::vector<float> x_, a_, qkv_, att_, gu_, m_, part_;
  std::vector<int8_t> quantized_;  // the W4A8 GEMV's int8 activations
};

}  // namespace vilau
