// Sampling one code per row from (optionally CFG-guided) logits with temperature, top-k and
// top-p, driven by a counter-based random generator (Philox4x32-10, philox.h).
//
// Sizes: n rows sampled, V vocabulary. Inputs are one row-major buffer of @p dtype:
//   with_cfg  logits [2n, V]: rows 0..n-1 conditional, n..2n-1 unconditional;
//             guided = u + cfg_scale * (c - u), each of the three operations rounded to dtype
//             (bit for bit what torch computes in that dtype)
//   otherwise logits [n, V] are the guided logits.
// Semantics (RQ-Transformer sample_from_logits, vilau_rt.sampling.sample_codes):
//   top_k == 1      code = argmax(guided), first index on ties, a NaN counts as the maximum;
//                   no random number is used.
//   otherwise       x = guided / temperature (float32); keep x >= the top_k-th largest x
//                   (top_k <= 0 or >= V: keep all); p = softmax over the kept x; top-p keeps the
//                   largest p in descending order up to and including the one whose cumulative
//                   mass first reaches top_p (top_p >= 1: keep all); draw from the kept p
//                   renormalised.
// Determinism: probabilities are exp(x - max) in float64 rounded to fixed point (2^-32 of the
// largest, kSampleWeightBits), so every sum is an exact integer: the result does not depend on
// thread count, launch order or summation order, and the CPU and CUDA kernels agree except
// when their float64 exp differs by an ulp right at a rounding boundary. Tokens below 2^-33 of
// the largest probability get weight 0 and are never drawn. Ties: every token equal to the
// top-k or top-p boundary value is kept (torch keeps a sort-order-dependent subset).
// Randomness: row r draws floor(bits * S / 2^64) with bits = sample_draw_bits(seed, counter, r,
// subsequence) and S the kept mass, then takes the first index (ascending) whose cumulative
// kept mass exceeds it. The same (seed, counter, subsequence) always gives the same codes.
// The pair (seed, counter) is read from a buffer (host for CPU, device for CUDA) so that a
// CUDA graph can be replayed with new values.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vilau {

//! Fixed-point bits of a sampling weight: w = round(exp(x - max) * 2^kSampleWeightBits).
constexpr int kSampleWeightBits = 32;
//! Largest V: keeps every sum of weights below 2^53 (exact in float64 comparisons).
constexpr int64_t kSampleMaxVocab = int64_t{1} << 20;
//! Largest n (one CUDA block per row, gridDim.x; Philox row word).
constexpr int64_t kSampleMaxRows = 2147483647;

//! Checks sizes and settings shared by the CPU and CUDA samplers.
//! @throws std::invalid_argument naming the bad value (n >= 0, 1 <= V <= kSampleMaxVocab,
//!         temperature > 0 and finite, top_p in (0, 1] or >= 1 for "off", subsequence >= 0).
void sample_check_args(int64_t n_rows, int64_t vocab, float temperature, float top_p,
                       int64_t subsequence);

//! Sample codes [n] on the CPU (OpenMP over rows).
//! @param logits   [2n, V] (with_cfg) or [n, V] of @p dtype
//! @param codes    int64 [n] output
//! @param rng      int64 [2] host buffer: seed, counter (read as uint64)
//! @param top_k    <= 0 or >= V: off; 1: argmax
//! @param top_p    >= 1: off
//! @throws std::invalid_argument on bad arguments, or naming the first row whose guided logits
//!         hold a NaN or an infinite maximum (nothing sensible to sample; not for top_k == 1).
void sample_codes_cpu(const void* logits, int64_t* codes, int64_t n_rows, int64_t vocab,
                      bool with_cfg, float cfg_scale, float temperature, int64_t top_k,
                      float top_p, const int64_t* rng, int64_t subsequence, DType dtype,
                      int num_threads);

//! Bytes of the CUDA workspace for n rows of V: a uint32 key and a uint64 weight per logit.
size_t sample_workspace_bytes(int64_t n_rows, int64_t vocab);

#ifdef VILAU_WITH_CUDA
//! CUDA sample_codes_cpu on @p stream (device pointers, rng too): one block per row, no host
//! synchronisation, capturable in a CUDA graph. A row whose guided logits hold a NaN or an
//! infinite maximum gets code -1 (no error flag, so the call stays asynchronous).
//! @param workspace sample_workspace_bytes(n, V) bytes of device memory, 16-byte aligned
//! @throws std::invalid_argument on bad arguments; std::runtime_error if the launch fails.
void sample_codes_cuda(const void* logits, int64_t* codes, void* workspace, int64_t n_rows,
                       int64_t vocab, bool with_cfg, float cfg_scale, float temperature,
                       int64_t top_k, float top_p, const int64_t* rng, int64_t subsequence,
                       DType dtype, cudaStream_t stream);
#endif

}  // namespace vilau
