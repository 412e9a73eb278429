// CUDA W4A16 GEMV (decode, M <= kGemvMaxM), split over K so that every SM streams weights.
//
// Block tile: 32 packed words (256 output columns, 128 B of each qweight row) x a K range.
// A thread owns VW consecutive words (VW = 4, 2, 1 for M <= 2, <= 4, <= 8: M x 8VW float32
// accumulators stay <= 64 registers) and loads them with one 4VW-byte load per row, 16 bytes at
// M <= 2; the 32 / VW lanes of a row read its 128 B together, and each thread keeps kUnroll rows
// of loads in flight before using them. gridDim.y splits K into ranges (split-K) so that
// n_tiles x splits >= 2 x SMs; the splits' float32 partial sums go to the caller's workspace and
// a second small kernel adds them in split order (deterministic) with the bias. Without a large
// enough workspace the kernel runs with one split and writes y itself.
// Weights are dequantized in half2 arithmetic (w4a16_dequant.cuh: bitwise the format's float16
// weight), products and sums in float32.
//
// Bytes floor on an H200 (HBM3e, 4.8 TB/s), group 128, M = 1: qweight + fp16 scales + int32 zeros
//   4096 x 4096:  8.39 MB + 0.26 MB + 0.07 MB =  8.72 MB -> 1.82 us
//   4096 x 11008: 22.5 MB + 0.70 MB + 0.18 MB = 23.4 MB  -> 4.88 us  (11008 x 4096: the same)
// Predicted: per weight ~3.9 ALU ops at M = 1 (shift/LOP3, HSUB2, HMUL2 per pair, a convert and
// an FMA each), 33.5 T lane-ops/s on 132 SMs -> 1.9 us for 4096 x 4096, i.e. ALU and bytes about
// equal; with ~1-2 us of launch, tail and the reduce kernel, expect ~40-50% of the bytes floor
// at 4096 x 4096 and ~60-75% at the 23 MB shapes. Not measured yet: no GPU run so far.
//
// Requirements of this path (checked by the launcher, else the generic kernel below runs): N % 8
// == 0 and K % G == 0 (the format), n_words % VW == 0, qweight and qzeros aligned to 4VW bytes,
// scales to 16 bytes.
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <tuple>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_dequant.cuh"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileWords = 32;  //!< packed words per block tile (256 columns)
constexpr int kTileCols = 8 * kTileWords;
constexpr int kUnroll = 4;  //!< rows of loads in flight per thread

//! Packed words per thread for M rows of x.
constexpr int words_per_thread(int m) { return m <= 2 ? 4 : (m <= 4 ? 2 : 1); }

template <int VW>
struct WordVec;
template <>
struct WordVec<4> {
  using type = uint4;
};
template <>
struct WordVec<2> {
  using type = uint2;
};
template <>
struct WordVec<1> {
  using type = uint32_t;
};

template <int VW>
__device__ __forceinline__ void unpack_vec(const typename WordVec<VW>::type& v,
                                           uint32_t (&w)[VW]) {
  if constexpr (VW == 4) {
    w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
  } else if constexpr (VW == 2) {
    w[0] = v.x, w[1] = v.y;
  } else {
    w[0] = v;
  }
}

template <class T, int M, int VW>
__global__ void __launch_bounds__(kThreads)
    w4a16_gemv_kernel(const T* __restrict__ x, const int32_t* __restrict__ qweight,
                      const int32_t* __restrict__ qzeros, const __half* __restrict__ scales,
                      const __half* __restrict__ bias, T* __restrict__ y,
                      float* __restrict__ partial, int64_t k, int64_t n, int64_t group_size,
                      int64_t rows_per_split) {
  using Vec = typename WordVec<VW>::type;
  constexpr int kLanesPerRow = kTileWords / VW;       // 8, 16, 32
  constexpr int kRowsPerWarp = 32 / kLanesPerRow;     // 4, 2, 1
  constexpr int kRowsPerStep = kWarps * kRowsPerWarp;  // 32, 16, 8
  constexpr int kCols = 8 * VW;                       // output columns per thread
  __shared__ float red[M * kTileCols];

  const int64_t n_words = n / 8;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int col_lane = lane % kLanesPerRow;
  const int row_lane = warp * kRowsPerWarp + lane / kLanesPerRow;
  const int64_t word0 = static_cast<int64_t>(blockIdx.x) * kTileWords + col_lane * VW;
  const bool active = word0 < n_words;  // n_words % VW == 0: all VW words are in range
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * rows_per_split;
  const int64_t k_end = k_begin + rows_per_split < k ? k_begin + rows_per_split : k;

  float acc[M][kCols];
#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;

  if (active) {
    int64_t group_end = -1;  // first row after the group whose zeros and scales are loaded
    __half2 zero[VW][4], scale[VW][4];
    for (int64_t i0 = k_begin + row_lane; i0 < k_end; i0 += kUnroll * kRowsPerStep) {
      Vec q[kUnroll] = {};
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + u * kRowsPerStep;
        if (i < k_end) q[u] = __ldg(reinterpret_cast<const Vec*>(qweight + i * n_words + word0));
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + u * kRowsPerStep;
        if (i >= k_end) continue;
        if (i >= group_end) {  // rows of a thread ascend: one division per group
          const int64_t g = i / group_size;
          group_end = (g + 1) * group_size;
          uint32_t zw[VW];
          unpack_vec<VW>(__ldg(reinterpret_cast<const Vec*>(qzeros + g * n_words + word0)), zw);
#pragma unroll
          for (int v = 0; v < VW; ++v) {
            awq_word_to_half2(zw[v], zero[v]);
            const uint4 s = __ldg(reinterpret_cast<const uint4*>(scales + g * n + (word0 + v) * 8));
            scale[v][0] = *reinterpret_cast<const __half2*>(&s.x);
            scale[v][1] = *reinterpret_cast<const __half2*>(&s.y);
            scale[v][2] = *reinterpret_cast<const __half2*>(&s.z);
            scale[v][3] = *reinterpret_cast<const __half2*>(&s.w);
          }
        }
        float xv[M];
#pragma unroll
        for (int r = 0; r < M; ++r) xv[r] = to_float(x[r * k + i]);
        uint32_t qw[VW];
        unpack_vec<VW>(q[u], qw);
#pragma unroll
        for (int v = 0; v < VW; ++v) {
          __half2 w[4];
          awq_dequant_word(qw[v], zero[v], scale[v], w);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 f = __half22float2(w[j]);
#pragma unroll
            for (int r = 0; r < M; ++r) {
              acc[r][8 * v + 2 * j] = fmaf(xv[r], f.x, acc[r][8 * v + 2 * j]);
              acc[r][8 * v + 2 * j + 1] = fmaf(xv[r], f.y, acc[r][8 * v + 2 * j + 1]);
            }
          }
        }
      }
    }
  }

  // Rows kLanesPerRow lanes apart share columns: fold them onto the warp's first row of lanes.
#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int offset = kLanesPerRow; offset < 32; offset <<= 1)
        acc[r][c] += __shfl_xor_sync(0xffffffffu, acc[r][c], offset);

  // Then across warps, in warp order (deterministic), in shared memory.
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w && lane < kLanesPerRow) {
#pragma unroll
      for (int r = 0; r < M; ++r)
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          float& slot = red[r * kTileCols + col_lane * kCols + c];
          slot = (w == 0 ? 0.0f : slot) + acc[r][c];
        }
    }
    __syncthreads();
  }

  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kTileCols;
  for (int idx = threadIdx.x; idx < M * kTileCols; idx += kThreads) {
    const int r = idx / kTileCols;
    const int64_t col = col0 + idx % kTileCols;
    if (col >= n) continue;
    if (partial != nullptr) {
      partial[(static_cast<int64_t>(blockIdx.y) * M + r) * n + col] = red[idx];
    } else {
      const float b = bias != nullptr ? __half2float(bias[col]) : 0.0f;
      y[r * n + col] = from_float<T>(red[idx] + b);
    }
  }
}

//! y[r, col] = sum over splits s (in order) of partial[s, r, col] + bias[col].
template <class T>
__global__ void w4a16_splitk_reduce_kernel(const float* __restrict__ partial,
                                           const __half* __restrict__ bias, T* __restrict__ y,
                                           int64_t m, int64_t n, int64_t splits) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * n) return;
  const int64_t col = idx % n;
  float sum = 0.0f;
  for (int64_t s = 0; s < splits; ++s) sum += partial[s * m * n + idx];
  if (bias != nullptr) sum += __half2float(bias[col]);
  y[idx] = from_float<T>(sum);
}

// ---------------------------------------------------------------- generic path (any layout)

constexpr int kGenWords = 8;                     //!< packed words per block
constexpr int kGenSlices = kThreads / kGenWords;  //!< K slices per block

//! One 4-byte word per thread and step, K sliced inside the block: the kernel that served all
//! shapes before the split-K one; it now covers only what that one does not (see the top).
template <class T, int M>
__global__ void __launch_bounds__(kThreads)
    w4a16_gemv_generic_kernel(const T* __restrict__ x, const int32_t* __restrict__ qweight,
                              const int32_t* __restrict__ qzeros,
                              const __half* __restrict__ scales, const __half* __restrict__ bias,
                              T* __restrict__ y, int64_t k, int64_t n, int64_t group_size) {
  __shared__ float reduced[kWarps][kGenWords][M * 8];
  const int64_t n_words = n / 8;
  const int w = threadIdx.x % kGenWords;
  const int slice = threadIdx.x / kGenWords;
  const int64_t word = static_cast<int64_t>(blockIdx.x) * kGenWords + w;
  const bool active = word < n_words;

  float acc[M][8];
#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[r][j] = 0.0f;

  if (active) {
    int64_t group = -1;
    float zero[8], scale[8];
    for (int64_t i = slice; i < k; i += kGenSlices) {
      const int64_t g = i / group_size;
      if (g != group) {
        group = g;
        const int32_t z = qzeros[g * n_words + word];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          zero[j] = static_cast<float>(awq_unpack(z, j));
          scale[j] = __half2float(scales[g * n + word * 8 + j]);
        }
      }
      const int32_t q = qweight[i * n_words + word];
      float wv[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        wv[j] = round_to_half((static_cast<float>(awq_unpack(q, j)) - zero[j]) * scale[j]);
      }
#pragma unroll
      for (int r = 0; r < M; ++r) {
        const float xv = to_float(x[r * k + i]);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r][j] += xv * wv[j];
      }
    }
  }

#pragma unroll
  for (int r = 0; r < M; ++r)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int offset = kGenWords; offset < 32; offset <<= 1)
        acc[r][j] += __shfl_xor_sync(0xffffffffu, acc[r][j], offset);

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  if (lane < kGenWords) {
#pragma unroll
    for (int r = 0; r < M; ++r)
#pragma unroll
      for (int j = 0; j < 8; ++j) reduced[warp][lane][r * 8 + j] = acc[r][j];
  }
  __syncthreads();

  for (int idx = threadIdx.x; idx < kGenWords * M * 8; idx += kThreads) {
    const int ow = idx / (M * 8);
    const int r = (idx / 8) % M;
    const int j = idx % 8;
    const int64_t out_word = static_cast<int64_t>(blockIdx.x) * kGenWords + ow;
    if (out_word >= n_words) continue;
    float sum = 0.0f;
#pragma unroll
    for (int v = 0; v < kWarps; ++v) sum += reduced[v][ow][r * 8 + j];
    const int64_t col = out_word * 8 + j;
    if (bias != nullptr) sum += __half2float(bias[col]);
    y[r * n + col] = from_float<T>(sum);
  }
}

// ---------------------------------------------------------------- plan and launch

//! Streaming multiprocessors of the current device (cached per device).
int sm_count() {
  static std::atomic<int> cache[64];
  int device = 0;
  cuda_check(cudaGetDevice(&device), "w4a16_gemv: cudaGetDevice");
  if (device < 0 || device >= 64) device = 0;
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    cuda_check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
               "w4a16_gemv: SM count");
    cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

struct GemvPlan {
  int vw;                  //!< packed words per thread (16-, 8- or 4-byte loads)
  int64_t splits;          //!< K ranges (gridDim.y)
  int64_t rows_per_split;  //!< rows of K per range
  int64_t workspace_bytes;  //!< float32 partials when splits > 1
};

//! Split-K plan from sizes alone (the workspace query and the launch must agree).
GemvPlan gemv_plan(int64_t m, int64_t k, int64_t n) {
  const int64_t n_words = n / 8;
  int vw = words_per_thread(static_cast<int>(m));
  while (n_words % vw != 0) vw /= 2;
  const int64_t rows_per_step = static_cast<int64_t>(kWarps) * (32 / (kTileWords / vw));
  const int64_t step = kUnroll * rows_per_step;  // rows one pass of the unrolled loop covers
  const int64_t tiles = (n_words + kTileWords - 1) / kTileWords;
  const int64_t want = (2 * static_cast<int64_t>(sm_count()) + tiles - 1) / tiles;
  const int64_t max_splits = std::max<int64_t>(1, k / step);  // >= one pass per split
  int64_t splits = std::min(want, max_splits);
  int64_t rows = (k + splits - 1) / splits;
  rows = (rows + step - 1) / step * step;
  splits = (k + rows - 1) / rows;
  const int64_t bytes = splits > 1 ? splits * m * n * static_cast<int64_t>(sizeof(float)) : 0;
  return {vw, splits, rows, bytes};
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <class T, int M>
void launch(const void* x, const int32_t* qweight, const int32_t* qzeros, const void* scales,
            const void* bias, void* y, int64_t k, int64_t n, int64_t group_size,
            void* workspace, int64_t workspace_bytes, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  const __half* s = static_cast<const __half*>(scales);
  const __half* b = static_cast<const __half*>(bias);
  T* yt = static_cast<T*>(y);
  GemvPlan plan = gemv_plan(M, k, n);
  const bool fast = aligned(qweight, 4 * plan.vw) && aligned(qzeros, 4 * plan.vw) &&
                    aligned(scales, 16);
  if (!fast) {
    const int64_t blocks = (n / 8 + kGenWords - 1) / kGenWords;
    w4a16_gemv_generic_kernel<T, M><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        xt, qweight, qzeros, s, b, yt, k, n, group_size);
    cuda_check_launch("w4a16_gemv_generic_kernel launch");
    return;
  }
  if (plan.splits > 1 && (workspace == nullptr || workspace_bytes < plan.workspace_bytes ||
                          !aligned(workspace, 4))) {
    plan.splits = 1;  // correct, on fewer SMs: the caller gave no room for partial sums
    plan.rows_per_split = k;
  }
  float* partial = plan.splits > 1 ? static_cast<float*>(workspace) : nullptr;
  const dim3 grid(static_cast<unsigned>((n / 8 + kTileWords - 1) / kTileWords),
                  static_cast<unsigned>(plan.splits));
  switch (plan.vw) {
    case 4:
      w4a16_gemv_kernel<T, M, (words_per_thread(M) >= 4 ? 4 : 1)>
          <<<grid, kThreads, 0, stream>>>(xt, qweight, qzeros, s, b, yt, partial, k, n,
                                          group_size, plan.rows_per_split);
      break;
    case 2:
      w4a16_gemv_kernel<T, M, (words_per_thread(M) >= 2 ? 2 : 1)>
          <<<grid, kThreads, 0, stream>>>(xt, qweight, qzeros, s, b, yt, partial, k, n,
                                          group_size, plan.rows_per_split);
      break;
    default:
      w4a16_gemv_kernel<T, M, 1><<<grid, kThreads, 0, stream>>>(
          xt, qweight, qzeros, s, b, yt, partial, k, n, group_size, plan.rows_per_split);
      break;
  }
  cuda_check_launch("w4a16_gemv_kernel launch");
  if (partial != nullptr) {
    const int64_t total = M * n;
    const int64_t blocks = (total + kThreads - 1) / kThreads;
    w4a16_splitk_reduce_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        partial, b, yt, M, n, plan.splits);
    cuda_check_launch("w4a16_splitk_reduce_kernel launch");
  }
}

}  // namespace

int64_t w4a16_gemv_cuda_workspace_bytes(int64_t m, int64_t k, int64_t n, int64_t group_size) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m == 0 || m > kGemvMaxM) return 0;
  return gemv_plan(m, k, n).workspace_bytes;
}

void w4a16_gemv_cuda(const void* x, const int32_t* qweight, const int32_t* qzeros,
                     const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, DType dtype, cudaStream_t stream,
                     void* workspace, int64_t workspace_bytes) {
  w4a16_check_sizes(m, k, n, group_size);
  if (m > kGemvMaxM) {
    throw std::invalid_argument("w4a16_gemv: M = " + std::to_string(m) +
                                " rows exceeds kGemvMaxM = " + std::to_string(kGemvMaxM) +
                                "; use the GEMM path");
  }
  if (m == 0) return;
  static_assert(kGemvMaxM == 8, "the switch below instantiates M = 1..8");
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto args = std::make_tuple(x, qweight, qzeros, scales, bias, y, k, n, group_size,
                                      workspace, workspace_bytes, stream);
    switch (m) {
      case 1: std::apply(launch<T, 1>, args); break;
      case 2: std::apply(launch<T, 2>, args); break;
      case 3: std::apply(launch<T, 3>, args); break;
      case 4: std::apply(launch<T, 4>, args); break;
      case 5: std::apply(launch<T, 5>, args); break;
      case 6: std::apply(launch<T, 6>, args); break;
      case 7: std::apply(launch<T, 7>, args); break;
      default: std::apply(launch<T, 8>, args); break;
    }
  });
}

}  // namespace vilau
