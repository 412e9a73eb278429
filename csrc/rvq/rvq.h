// Residual vector quantizer (RVQ) of the VILA-U vision tower: codes <-> summed embeddings.
//
// Sizes used below:
//   N  rows (image tokens), D depth (codes per row), C embedding width,
//   Dc number of codebooks: D (one per depth) or 1 (one codebook shared by every depth),
//   R  rows per codebook = n_embed + 1; the last row is padding and never a valid code.
// Codebooks are one contiguous row-major buffer [Dc, R, C]; depth d uses codebook d (Dc == D)
// or codebook 0 (Dc == 1). Features, codebooks and outputs share one float dtype; every
// kernel accumulates in float32.
#pragma once

#include <cstdint>

#include "common/dtype.h"

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vilau {

//! Checks the sizes shared by rvq_lookup_* and rvq_encode_*.
//! @throws std::invalid_argument naming the bad size and what is supported
//!         (N >= 0, D >= 1, Dc == D or 1, R >= 2, C >= 1).
void rvq_check_sizes(int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                     int64_t dim);

//! out[n, :] = sum_d codebooks[d or 0, codes[n, d], :], summed in float32.
//! @param codes      int64 [N, D], each in [0, R - 1)
//! @param codebooks  [Dc, R, C] of @p dtype
//! @param out        [N, C] of @p dtype
//! @param num_threads OpenMP threads (>= 1)
//! @throws std::invalid_argument on bad sizes, or naming the first code outside [0, R - 1)
//!         (checked before anything is written).
void rvq_lookup_cpu(const int64_t* codes, const void* codebooks, void* out, int64_t n_rows,
                    int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim,
                    DType dtype, int num_threads);

//! Residual quantization, depth by depth: r = x; k_d = argmin_{j < n_embed}
//! (|r|^2 + |e_j|^2 - 2 r.e_j) in float32 (ties -> smallest j); r -= e[k_d]. The residual
//! stays float32 across depths; z_q is the float32 sum of the chosen rows, then rounded.
//! CPU: the dots r.e_j come from the prefill GEMM (gemm/gemm_f32.h: one FMA chain over C each,
//! the same bits on every instruction-set path and for a row alone or in a batch).
//! @param features   [N, C] of @p dtype
//! @param codebooks  [Dc, R, C] of @p dtype, R == n_embed + 1
//! @param codes      int64 [N, D] output
//! @param z_q        [N, C] output of @p dtype
//! @throws std::invalid_argument on bad sizes or R != n_embed + 1.
void rvq_encode_cpu(const void* features, const void* codebooks, int64_t* codes, void* z_q,
                    int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                    int64_t dim, int64_t n_embed, DType dtype, int num_threads);

//! Largest C that rvq_encode_cuda accepts: the float32 residual of one row (44 KiB) plus the
//! kernel's small static arrays fit the default 48 KiB of shared memory.
constexpr int64_t kRvqEncodeCudaMaxDim = 11264;
//! Largest N that the CUDA kernels accept (one block per row, gridDim.x).
constexpr int64_t kRvqCudaMaxRows = 2147483647;

#ifdef VILAU_WITH_CUDA
//! CUDA rvq_lookup_cpu on @p stream (device pointers). A row holding a code outside
//! [0, R - 1) is written as NaN in every column: no error flag and no host check, so the call
//! stays asynchronous (and capturable in a CUDA graph).
//! @throws std::invalid_argument on bad sizes; std::runtime_error if the launch fails.
void rvq_lookup_cuda(const int64_t* codes, const void* codebooks, void* out, int64_t n_rows,
                     int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim,
                     DType dtype, cudaStream_t stream);

//! CUDA rvq_encode_cpu on @p stream (device pointers); one block per row, the residual in
//! shared memory, so C is limited to kRvqEncodeCudaMaxDim.
//! @throws std::invalid_argument on bad sizes; std::runtime_error if the launch fails.
void rvq_encode_cuda(const void* features, const void* codebooks, int64_t* codes, void* z_q,
                     int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                     int64_t dim, int64_t n_embed, DType dtype, cudaStream_t stream);
#endif

}  // namespace vilau
