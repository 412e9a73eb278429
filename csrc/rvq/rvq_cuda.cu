// CUDA RVQ kernels: one block per row.
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common/cuda_check.h"
#include "common/float_cuda.cuh"
#include "rvq/rvq.h"

namespace vilau {

namespace {

constexpr int kLookupThreads = 128;
constexpr int kEncodeThreads = 256;
constexpr int kEncodeWarps = kEncodeThreads / 32;

template <class T>
__global__ void rvq_lookup_kernel(const int64_t* __restrict__ codes, const T* __restrict__ books,
                                  T* __restrict__ out, int64_t depth, int64_t book_stride,
                                  int64_t dim, int64_t n_embed) {
  const int64_t n = blockIdx.x;
  const int64_t* row_codes = codes + n * depth;
  bool valid = true;
  for (int64_t d = 0; d < depth; ++d) {
    valid = valid && row_codes[d] >= 0 && row_codes[d] < n_embed;
  }
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float acc = 0.0f;
    if (valid) {
      for (int64_t d = 0; d < depth; ++d) {
        acc += to_float(books[d * book_stride + row_codes[d] * dim + c]);
      }
    } else {
      acc = NAN;  // documented in rvq.h: an invalid code poisons its row
    }
    out[n * dim + c] = from_float<T>(acc);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

//! One block per row. Each warp scans codes j = warp, warp + kEncodeWarps, ... with its lanes
//! across C, then the warps' best (distance, index) pairs are combined, smallest index on ties.
template <class T>
__global__ void rvq_encode_kernel(const T* __restrict__ x, const T* __restrict__ books,
                                  int64_t* __restrict__ codes, T* __restrict__ z_q, int64_t depth,
                                  int64_t book_stride, int64_t dim, int64_t n_embed) {
  extern __shared__ float resid[];  // [dim]
  __shared__ float warp_best[kEncodeWarps];
  __shared__ int64_t warp_best_j[kEncodeWarps];
  __shared__ float partial[kEncodeWarps];
  __shared__ int64_t chosen;

  const int64_t n = blockIdx.x;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) resid[c] = to_float(x[n * dim + c]);
  __syncthreads();

  for (int64_t d = 0; d < depth; ++d) {
    const T* book = books + d * book_stride;
    // |r|^2, block-wide
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) s += resid[c] * resid[c];
    s = warp_sum(s);
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    float rnorm = 0.0f;
    for (int w = 0; w < kEncodeWarps; ++w) rnorm += partial[w];

    float best = INFINITY;
    int64_t best_j = n_embed;  // sentinel: no candidate yet
    for (int64_t j = warp; j < n_embed; j += kEncodeWarps) {
      const T* e = book + j * dim;
      float dot = 0.0f, enorm = 0.0f;
      for (int64_t c = lane; c < dim; c += 32) {
        const float v = to_float(e[c]);
        dot += resid[c] * v;
        enorm += v * v;
      }
      dot = warp_sum(dot);
      enorm = warp_sum(enorm);
      const float dist = rnorm + enorm - 2.0f * dot;
      if (dist < best) {  // j increases within a warp: strict keeps the smallest index
        best = dist;
        best_j = j;
      }
    }
    if (lane == 0) {
      warp_best[warp] = best;
      warp_best_j[warp] = best_j;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float b = warp_best[0];
      int64_t bj = warp_best_j[0];
      for (int w = 1; w < kEncodeWarps; ++w) {
        if (warp_best[w] < b || (warp_best[w] == b && warp_best_j[w] < bj)) {
          b = warp_best[w];
          bj = warp_best_j[w];
        }
      }
      if (bj >= n_embed) bj = 0;  // every distance was nan: fall back to code 0, like the CPU
      chosen = bj;
      codes[n * depth + d] = bj;
    }
    __syncthreads();
    const T* e = book + chosen * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) resid[c] -= to_float(e[c]);
    __syncthreads();  // resid and chosen are reused by the next depth
  }

  // z_q = sum of the chosen rows (re-read; the codes of this row are in global memory)
  const int64_t* row_codes = codes + n * depth;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t d = 0; d < depth; ++d) {
      acc += to_float(books[d * book_stride + row_codes[d] * dim + c]);
    }
    z_q[n * dim + c] = from_float<T>(acc);
  }
}

void check_rows(int64_t n_rows) {
  if (n_rows > kRvqCudaMaxRows) {
    throw std::invalid_argument("rvq (CUDA): N = " + std::to_string(n_rows) +
                                " rows exceeds the supported maximum " +
                                std::to_string(kRvqCudaMaxRows));
  }
}

}  // namespace

void rvq_lookup_cuda(const int64_t* codes, const void* codebooks, void* out, int64_t n_rows,
                     int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim,
                     DType dtype, cudaStream_t stream) {
  rvq_check_sizes(n_rows, depth, n_codebooks, codebook_rows, dim);
  check_rows(n_rows);
  if (n_rows == 0) return;
  const int64_t book_stride = n_codebooks == 1 ? 0 : codebook_rows * dim;
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    rvq_lookup_kernel<T><<<static_cast<unsigned>(n_rows), kLookupThreads, 0, stream>>>(
        codes, static_cast<const T*>(codebooks), static_cast<T*>(out), depth, book_stride, dim,
        codebook_rows - 1);
  });
  cuda_check_launch("rvq_lookup_kernel launch");
}

void rvq_encode_cuda(const void* features, const void* codebooks, int64_t* codes, void* z_q,
                     int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                     int64_t dim, int64_t n_embed, DType dtype, cudaStream_t stream) {
  rvq_check_sizes(n_rows, depth, n_codebooks, codebook_rows, dim);
  if (codebook_rows != n_embed + 1) {
    throw std::invalid_argument("rvq_encode: codebooks has " + std::to_string(codebook_rows) +
                                " rows per codebook; expected n_embed + 1 = " +
                                std::to_string(n_embed + 1) + " (the last row is padding)");
  }
  if (dim > kRvqEncodeCudaMaxDim) {
    throw std::invalid_argument("rvq_encode (CUDA): embedding width C = " + std::to_string(dim) +
                                " exceeds the supported maximum " +
                                std::to_string(kRvqEncodeCudaMaxDim));
  }
  check_rows(n_rows);
  if (n_rows == 0) return;
  const int64_t book_stride = n_codebooks == 1 ? 0 : codebook_rows * dim;
  const size_t smem = static_cast<size_t>(dim) * sizeof(float);
  dispatch_float_cuda(dtype, [&](auto tag) {
    using T = decltype(tag);
    rvq_encode_kernel<T><<<static_cast<unsigned>(n_rows), kEncodeThreads, smem, stream>>>(
        static_cast<const T*>(features), static_cast<const T*>(codebooks), codes,
        static_cast<T*>(z_q), depth, book_stride, dim, n_embed);
  });
  cuda_check_launch("rvq_encode_kernel launch");
}

}  // namespace vilau
