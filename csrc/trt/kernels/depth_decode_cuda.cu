// CUDA depth loop of vilau::DepthDecode (see depth_decode_cuda.h). The row count 2n is small
// (2 per image), so every matmul is a GEMV-like kernel: one warp per output column, float32
// sums; weights are read once per depth from L2 (~1 GB for the 7B model's depth transformer
// in bf16, the same bytes as the native backend). Mirrors vilau_rt.native_ops.depth_loop op
// by op: LayerNorm eps 1e-5, keys scaled before q.k, softmax and GELU (erf) in float32.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "kernels/depth_decode_cuda.h"
#include "sampling/sampling.h"

namespace vilau {

namespace {

constexpr int kWarp = 32;
constexpr int kLinearWarps = 8;
constexpr int kRowThreads = 256;
constexpr int kAttnWarps = 4;
constexpr float kLayerNormEps = 1e-5f;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

//! y[m, j] (+)= sum_k x[m, k] * w[j, k] + b[j]: one warp per column j, all M rows.
template <class TX, class TW>
__global__ void linear_kernel(TX const* x, TW const* w, TW const* b, float* y, int64_t m_rows,
                              int64_t k_dim, int64_t n_cols, bool accumulate) {
  int64_t const j = static_cast<int64_t>(blockIdx.x) * kLinearWarps + threadIdx.x / kWarp;
  int const lane = threadIdx.x % kWarp;
  if (j >= n_cols) return;
  TW const* wr = w + j * k_dim;
  float const bias = to_float(b[j]);
  for (int64_t m = 0; m < m_rows; ++m) {
    TX const* xr = x + m * k_dim;
    float s = 0.f;
    for (int64_t k = lane; k < k_dim; k += kWarp) s += to_float(xr[k]) * to_float(wr[k]);
    s = warp_sum(s);
    if (lane == 0) {
      float const v = s + bias;
      y[m * n_cols + j] = accumulate ? y[m * n_cols + j] + v : v;
    }
  }
}

__device__ float block_sum(float v, float* shared) {
  int const lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // shared is reused by consecutive calls
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < static_cast<int>(blockDim.x) / kWarp; ++i) total += shared[i];
  return total;
}

//! y[m] = (x[m] - mean) / sqrt(var + eps) * w + b; one block per row.
template <class TW>
__global__ void layer_norm_kernel(float const* x, TW const* w, TW const* b, float* y, int64_t e) {
  __shared__ float shared[kRowThreads / kWarp];
  float const* xr = x + blockIdx.x * e;
  float* yr = y + blockIdx.x * e;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < e; i += blockDim.x) s += xr[i];
  float const mean = block_sum(s, shared) / static_cast<float>(e);
  float q = 0.f;
  for (int64_t i = threadIdx.x; i < e; i += blockDim.x) q += (xr[i] - mean) * (xr[i] - mean);
  float const rstd = rsqrtf(block_sum(q, shared) / static_cast<float>(e) + kLayerNormEps);
  for (int64_t i = threadIdx.x; i < e; i += blockDim.x) {
    yr[i] = (xr[i] - mean) * rstd * to_float(w[i]) + to_float(b[i]);
  }
}

//! h[r, :] = x[r, :] + pos[:] (pos = pos_emb_d row d).
template <class TW>
__global__ void add_row_kernel(float const* x, TW const* pos, float* h, int64_t rows, int64_t e) {
  int64_t const total = rows * e;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    h[i] = x[i] + to_float(pos[i % e]);
  }
}

//! kc/vc [N, nh, D, hd] slot d = k/v [N, nh * hd].
__global__ void cache_write_kernel(float const* k, float const* v, float* kc, float* vc,
                                   int64_t rows, int64_t nh, int64_t depth, int64_t hd, int64_t d) {
  int64_t const total = rows * nh * hd;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t const r = i / (nh * hd), h = (i / hd) % nh, j = i % hd;
    int64_t const at = ((r * nh + h) * depth + d) * hd + j;
    kc[at] = k[i];
    vc[at] = v[i];
  }
}

//! y[r, h*hd:(h+1)*hd] = softmax_s(q . (k_s * scale)) v_s over s <= d: one warp per (r, h).
__global__ void attention_kernel(float const* q, float const* kc, float const* vc, float* y,
                                 int64_t rows, int64_t nh, int64_t depth, int64_t hd, int64_t d,
                                 float scale) {
  __shared__ float scores[kAttnWarps][kDepthDecodeMaxDepth];
  int const warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  int64_t const pair = static_cast<int64_t>(blockIdx.x) * kAttnWarps + warp;
  if (pair >= rows * nh) return;
  int64_t const r = pair / nh, h = pair % nh;
  float const* qr = q + r * nh * hd + h * hd;
  float const* kb = kc + (r * nh + h) * depth * hd;
  float const* vb = vc + (r * nh + h) * depth * hd;
  for (int64_t s = 0; s <= d; ++s) {
    float dot = 0.f;
    for (int64_t j = lane; j < hd; j += kWarp) dot += qr[j] * (kb[s * hd + j] * scale);
    dot = warp_sum(dot);
    if (lane == 0) scores[warp][s] = dot;
  }
  __syncwarp();
  // every lane reads lane 0's scores: the butterfly sums may differ by an ulp across lanes
  float best = -INFINITY;
  for (int64_t s = 0; s <= d; ++s) best = fmaxf(best, scores[warp][s]);
  float total = 0.f;
  for (int64_t s = 0; s <= d; ++s) total += expf(scores[warp][s] - best);
  float* yr = y + r * nh * hd + h * hd;
  for (int64_t j = lane; j < hd; j += kWarp) {
    float acc = 0.f;
    for (int64_t s = 0; s <= d; ++s) acc += expf(scores[warp][s] - best) * vb[s * hd + j];
    yr[j] = acc / total;
  }
}

__global__ void gelu_kernel(float* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] = 0.5f * x[i] * (1.f + erff(x[i] * 0.70710678118654752f));
  }
}

__global__ void rng_kernel(int64_t const* seed, int64_t* rng) {
  rng[0] = *seed;
  rng[1] = 0;
}

//! codes[r, d] = forced or sampled; running[r] += codebook row (NaN for an invalid code).
template <class TW>
__global__ void pick_kernel(int64_t const* sampled, int64_t const* forced, int64_t* codes,
                            TW const* codebook, float* running, int64_t depth, int64_t d,
                            int64_t rows_per_book, int64_t c) {
  int64_t const r = blockIdx.x;
  int64_t const f = forced[r * depth + d];
  int64_t const code = f >= 0 ? f : sampled[r];
  if (threadIdx.x == 0) codes[r * depth + d] = code;
  bool const valid = code >= 0 && code < rows_per_book - 1;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    running[r * c + i] += valid ? to_float(codebook[code * c + i]) : NAN;
  }
}

unsigned grid_for(int64_t count, int threads) {
  int64_t const blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

//! Carves the workspace into the loop's buffers.
struct Workspace {
  float *x, *h, *a, *q, *k, *v, *y, *m, *kv, *running;
  int64_t *sampled, *rng;
  void* sample;

  //! With base == nullptr only `bytes` is meaningful (the pointers are never used).
  Workspace(void* base, DepthDecodeSizes const& s) {
    uintptr_t const start = reinterpret_cast<uintptr_t>(base);
    uintptr_t at = start;
    auto take = [&at](size_t b) {
      uintptr_t const here = at;
      at += align256(b);
      return reinterpret_cast<void*>(here);
    };
    int64_t const rows = 2 * s.n, e = s.embed_dim;
    size_t const act = sizeof(float) * rows * e;
    x = reinterpret_cast<float*>(take(act));
    h = reinterpret_cast<float*>(take(act));
    a = reinterpret_cast<float*>(take(act));
    q = reinterpret_cast<float*>(take(act));
    k = reinterpret_cast<float*>(take(act));
    v = reinterpret_cast<float*>(take(act));
    y = reinterpret_cast<float*>(take(act));
    m = reinterpret_cast<float*>(take(4 * act));
    kv = reinterpret_cast<float*>(take(2 * act * s.n_layer * s.depth));
    running = reinterpret_cast<float*>(take(sizeof(float) * s.n * s.code_dim));
    sampled = reinterpret_cast<int64_t*>(take(sizeof(int64_t) * s.n));
    rng = reinterpret_cast<int64_t*>(take(2 * sizeof(int64_t)));
    sample = take(sample_workspace_bytes(s.n, s.codebook_rows - 1));
    bytes = static_cast<size_t>(at - start);
  }
  size_t bytes;
};

template <class TX, class TW>
void linear(TX const* x, TW const* w, TW const* b, float* y, int64_t m, int64_t k, int64_t n,
            bool accumulate, cudaStream_t stream) {
  unsigned const blocks = static_cast<unsigned>((n + kLinearWarps - 1) / kLinearWarps);
  linear_kernel<TX, TW>
      <<<blocks, kLinearWarps * kWarp, 0, stream>>>(x, w, b, y, m, k, n, accumulate);
  cuda_check_launch("depth_decode_cuda: linear");
}

template <class T>
void run(T const* hidden, T const* weights, T const* codebooks, int64_t const* seed,
         int64_t const* forced, int64_t* codes, float* logits, Workspace const& ws,
         DepthDecodeSizes const& s, DepthSampling const& sp, cudaStream_t stream) {
  DepthWeightOffsets const o = depth_weight_offsets(s);
  DepthBlockOffsets const& bo = o.block;
  int64_t const n = s.n, rows = 2 * n, e = s.embed_dim, nh = s.n_head, hd = e / nh;
  int64_t const vocab = s.codebook_rows - 1, c = s.code_dim, book = s.codebook_rows * c;
  float const scale = 1.0f / std::sqrt(static_cast<float>(hd));
  T const* w = weights;
  size_t const layer_kv = static_cast<size_t>(rows * e * s.depth);

  rng_kernel<<<1, 1, 0, stream>>>(seed, ws.rng);
  cuda_check_launch("depth_decode_cuda: rng");
  cuda_check(cudaMemsetAsync(ws.running, 0, sizeof(float) * n * c, stream),
             "depth_decode_cuda: cudaMemsetAsync");
  linear(hidden, w + o.in2_w, w + o.in2_b, ws.x, rows, s.llm_dim, e, false, stream);
  for (int64_t d = 0; d < s.depth; ++d) {
    add_row_kernel<<<grid_for(rows * e, kRowThreads), kRowThreads, 0, stream>>>(
        ws.x, w + o.pos_emb + d * e, ws.h, rows, e);
    cuda_check_launch("depth_decode_cuda: pos_emb");
    for (int64_t l = 0; l < s.n_layer; ++l) {
      T const* bw = w + o.blocks + l * bo.size;
      float* kc = ws.kv + 2 * l * layer_kv;
      float* vc = kc + layer_kv;
      layer_norm_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
          ws.h, bw + bo.ln1_w, bw + bo.ln1_b, ws.a, e);
      cuda_check_launch("depth_decode_cuda: ln1");
      linear(ws.a, bw + bo.query_w, bw + bo.query_b, ws.q, rows, e, e, false, stream);
      linear(ws.a, bw + bo.key_w, bw + bo.key_b, ws.k, rows, e, e, false, stream);
      linear(ws.a, bw + bo.value_w, bw + bo.value_b, ws.v, rows, e, e, false, stream);
      cache_write_kernel<<<grid_for(rows * e, kRowThreads), kRowThreads, 0, stream>>>(
          ws.k, ws.v, kc, vc, rows, nh, s.depth, hd, d);
      cuda_check_launch("depth_decode_cuda: cache write");
      attention_kernel<<<grid_for(rows * nh, kAttnWarps), kAttnWarps * kWarp, 0, stream>>>(
          ws.q, kc, vc, ws.y, rows, nh, s.depth, hd, d, scale);
      cuda_check_launch("depth_decode_cuda: attention");
      linear(ws.y, bw + bo.proj_w, bw + bo.proj_b, ws.h, rows, e, e, true, stream);
      layer_norm_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
          ws.h, bw + bo.ln2_w, bw + bo.ln2_b, ws.a, e);
      cuda_check_launch("depth_decode_cuda: ln2");
      linear(ws.a, bw + bo.fc1_w, bw + bo.fc1_b, ws.m, rows, e, 4 * e, false, stream);
      gelu_kernel<<<grid_for(rows * 4 * e, kRowThreads), kRowThreads, 0, stream>>>(ws.m,
                                                                                   rows * 4 * e);
      cuda_check_launch("depth_decode_cuda: gelu");
      linear(ws.m, bw + bo.fc2_w, bw + bo.fc2_b, ws.h, rows, 4 * e, e, true, stream);
    }
    layer_norm_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
        ws.h, w + o.cls_ln_w, w + o.cls_ln_b, ws.a, e);
    cuda_check_launch("depth_decode_cuda: classifier ln");
    float* logits_d = logits + d * rows * vocab;
    linear(ws.a, w + o.cls_w, w + o.cls_b, logits_d, rows, e, vocab, false, stream);
    sample_codes_cuda(logits_d, ws.sampled, ws.sample, n, vocab, true, sp.cfg_scale, sp.temperature,
                      sp.top_k, sp.top_p, ws.rng, d, DType::kFloat32, stream);
    T const* codebook = codebooks + (s.n_codebooks == 1 ? 0 : d) * book;
    pick_kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
        ws.sampled, forced, codes, codebook, ws.running, s.depth, d, s.codebook_rows, c);
    cuda_check_launch("depth_decode_cuda: pick");
    if (d + 1 < s.depth) {
      // the same code feeds both halves: x = in_mlp_1(running) for [cond..., uncond...]
      linear(ws.running, w + o.in1_w, w + o.in1_b, ws.x, n, c, e, false, stream);
      cuda_check(cudaMemcpyAsync(ws.x + n * e, ws.x, sizeof(float) * n * e,
                                 cudaMemcpyDeviceToDevice, stream),
                 "depth_decode_cuda: cudaMemcpyAsync");
    }
  }
}

void check_sizes(DepthDecodeSizes const& s) {
  auto bad = [](std::string const& m) { throw std::invalid_argument("depth_decode_cuda: " + m); };
  if (s.n < 0) bad("n = " + std::to_string(s.n) + " must be >= 0");
  if (s.embed_dim < 1 || s.n_head < 1 || s.embed_dim % s.n_head) {
    bad("n_head = " + std::to_string(s.n_head) +
        " must divide embed_dim = " + std::to_string(s.embed_dim));
  }
  if (s.depth < 1 || s.depth > kDepthDecodeMaxDepth) {
    bad("depth = " + std::to_string(s.depth) + " must be in [1, " +
        std::to_string(kDepthDecodeMaxDepth) + "]");
  }
  if (s.n_layer < 1 || s.llm_dim < 1 || s.code_dim < 1) bad("n_layer, H and C must be >= 1");
  if (s.n_codebooks != 1 && s.n_codebooks != s.depth) {
    bad("codebooks has " + std::to_string(s.n_codebooks) + " codebooks; expected D or 1");
  }
  if (s.codebook_rows < 2) bad("codebooks need R = n_embed + 1 >= 2 rows");
}

}  // namespace

size_t depth_decode_workspace_bytes(DepthDecodeSizes const& s) {
  return Workspace(nullptr, s).bytes;
}

void depth_decode_cuda(void const* hidden, void const* weights, void const* codebooks,
                       int64_t const* seed, int64_t const* forced_codes, int64_t* codes,
                       float* logits, void* workspace, DepthDecodeSizes const& s,
                       DepthSampling const& sampling, DType dtype, cudaStream_t stream) {
  check_sizes(s);
  sample_check_args(s.n, s.codebook_rows - 1, sampling.temperature, sampling.top_p, 0);
  if (s.n == 0) return;
  Workspace const ws(workspace, s);
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    run(static_cast<T const*>(hidden), static_cast<T const*>(weights),
        static_cast<T const*>(codebooks), seed, forced_codes, codes, logits, ws, s, sampling,
        stream);
  });
}

}  // namespace vilau
