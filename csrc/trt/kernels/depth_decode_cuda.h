// The depth transformer's whole loop for one image position (vilau::DepthDecode), on raw
// device pointers and a stream: KV-cached over depths, CFG at every depth, sampling with the
// csrc sampler (sample_codes_cuda, Philox at (seed, counter 0, row, subsequence = depth)).
//
// Sizes: n conditional rows (hidden has N = 2n rows: [cond..., uncond...]), H LLM width,
// E embed_dim, L layers, nh heads (hd = E / nh), D depth, Dc codebooks (D or 1), R codebook
// rows (V = R - 1 codes), C code width. hidden, weights and codebooks share one float dtype T;
// activations, the KV cache and the logits are float32.
//
// weights [P] is DepthTransformer.state_dict() flattened in order (vilau_rt.depth_ops
// pack_depth_weights): pos_emb_d [1, D, E], in_mlp_1 W [E, C] b [E], in_mlp_2 W [E, H] b [E],
// per block: ln1 w b [E], attn.key W [E, E] b, attn.query W b, attn.value W b, attn.proj W b,
// ln2 w b [E], mlp.0 W [4E, E] b [4E], mlp.2 W [E, 4E] b [E]; then classifier_mlp.layer_norm
// w b [E], classifier_mlp.linear W [V, E] b [V].
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vilau {

//! Largest D: the attention kernel keeps one score per depth in shared memory.
constexpr int64_t kDepthDecodeMaxDepth = 64;

//! Sizes of one DepthDecode call (see the header comment).
struct DepthDecodeSizes {
  int64_t n = 0;
  int64_t llm_dim = 0;
  int64_t embed_dim = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t depth = 0;
  int64_t n_codebooks = 0;
  int64_t codebook_rows = 0;
  int64_t code_dim = 0;
};

//! Element offsets of the tensors of one block in the packed weights (relative to the block).
struct DepthBlockOffsets {
  int64_t ln1_w, ln1_b, key_w, key_b, query_w, query_b, value_w, value_b, proj_w, proj_b;
  int64_t ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b, size;
};

//! Element offsets of the packed weights' tensors (state_dict order).
struct DepthWeightOffsets {
  int64_t pos_emb, in1_w, in1_b, in2_w, in2_b, blocks;
  DepthBlockOffsets block;
  int64_t cls_ln_w, cls_ln_b, cls_w, cls_b, total;
};

//! The offsets for @p s (host code; the CPU reference uses it too).
inline DepthWeightOffsets depth_weight_offsets(DepthDecodeSizes const& s) {
  int64_t const e = s.embed_dim, v = s.codebook_rows - 1;
  DepthWeightOffsets o{};
  int64_t at = 0;
  auto take = [&at](int64_t count) {
    int64_t const here = at;
    at += count;
    return here;
  };
  o.pos_emb = take(s.depth * e);
  o.in1_w = take(e * s.code_dim);
  o.in1_b = take(e);
  o.in2_w = take(e * s.llm_dim);
  o.in2_b = take(e);
  o.blocks = at;
  int64_t const blocks_start = at;
  at = 0;
  DepthBlockOffsets& b = o.block;
  b.ln1_w = take(e), b.ln1_b = take(e);
  b.key_w = take(e * e), b.key_b = take(e);
  b.query_w = take(e * e), b.query_b = take(e);
  b.value_w = take(e * e), b.value_b = take(e);
  b.proj_w = take(e * e), b.proj_b = take(e);
  b.ln2_w = take(e), b.ln2_b = take(e);
  b.fc1_w = take(4 * e * e), b.fc1_b = take(4 * e);
  b.fc2_w = take(4 * e * e), b.fc2_b = take(e);
  b.size = at;
  at = blocks_start + s.n_layer * b.size;
  o.cls_ln_w = take(e);
  o.cls_ln_b = take(e);
  o.cls_w = take(v * e);
  o.cls_b = take(v);
  o.total = at;
  return o;
}

//! Sampling settings of one call (vilau_rt.native_ops.sample_codes semantics).
struct DepthSampling {
  float cfg_scale = 1.0f;
  float temperature = 1.0f;
  int64_t top_k = 0;   //!< <= 0 or >= V: off; 1: argmax, no random draw
  float top_p = 1.0f;  //!< >= 1: off
};

//! Bytes of device workspace depth_decode_cuda needs for @p s.
size_t depth_decode_workspace_bytes(DepthDecodeSizes const& s);

#ifdef VILAU_WITH_CUDA
//! Codes of one position: for d in 0..D-1, logits[d] = the depth transformer's raw logits of
//! all 2n rows at depth d; codes[:, d] = forced_codes[:, d] if >= 0, else sampled from the CFG
//! mix of logits[d]; the next depth's input is in_mlp_1(sum of the chosen code embeddings).
//! No host synchronisation. A row whose guided logits hold a NaN samples code -1 (as
//! sample_codes_cuda) and its running embedding becomes NaN.
//! @param hidden       [2n, H] of @p dtype
//! @param weights      [P] of @p dtype (layout above)
//! @param codebooks    [Dc, R, C] of @p dtype
//! @param seed         device int64 [1]: Philox key (counter 0, subsequence = depth)
//! @param forced_codes device int64 [n, D]; -1 = sample
//! @param codes        device int64 [n, D] output
//! @param logits       device float32 [D, 2n, V] output
//! @param workspace    depth_decode_workspace_bytes(s) bytes, 256-byte aligned
//! @throws std::invalid_argument on bad sizes or settings; std::runtime_error if a launch fails.
void depth_decode_cuda(void const* hidden, void const* weights, void const* codebooks,
                       int64_t const* seed, int64_t const* forced_codes, int64_t* codes,
                       float* logits, void* workspace, DepthDecodeSizes const& s,
                       DepthSampling const& sampling, DType dtype, cudaStream_t stream);
#endif

}  // namespace vilau
