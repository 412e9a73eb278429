// CPU RVQ kernels: OpenMP over rows, float32 inner loops; the encode search runs on the
// prefill GEMM (csrc/gemm).
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "common/threads.h"
#include "gemm/gemm_f32.h"
#include "rvq/rvq.h"

namespace vilau {

namespace {

//! Encode search: rows per block (their residuals and dots stay in memory together) and codebook
//! rows per GEMM call (a block's dots for one chunk: block x chunk floats, 4 MiB).
constexpr int64_t kEncodeRowBlock = 512;
constexpr int64_t kEncodeCodeChunk = 2048;

template <class T>
void load_row(const T* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}

template <class T>
void store_row(const float* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_float<T>(src[i]);
}

template <class T>
void lookup(const int64_t* codes, const T* books, T* out, int64_t n_rows, int64_t depth,
            int64_t n_codebooks, int64_t rows, int64_t dim, int num_threads) {
  const int64_t book_stride = n_codebooks == 1 ? 0 : rows * dim;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> acc(dim);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < n_rows; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t d = 0; d < depth; ++d) {
        const T* e = books + d * book_stride + codes[n * depth + d] * dim;
        float* a = acc.data();
#pragma omp simd
        for (int64_t c = 0; c < dim; ++c) a[c] += to_float(e[c]);
      }
      store_row(acc.data(), out + n * dim, dim);
    }
  }
}

//! dots[M, nc] = resid[M, C] @ float32(book rows)^T through the prefill GEMM (csrc/gemm): one
//! FMA chain over C per dot, the same bits on every instruction-set path and for any M.
inline void book_dots(const float* resid, const float* book, float* dots, int64_t m, int64_t dim,
                      int64_t nc, int num_threads) {
  gemm_f32_cpu(resid, book, nullptr, dots, m, dim, nc, num_threads);
}
inline void book_dots(const float* resid, const Half* book, float* dots, int64_t m, int64_t dim,
                      int64_t nc, int num_threads) {
  gemm_w16_cpu(resid, reinterpret_cast<const uint16_t*>(book), DType::kFloat16, nullptr, dots, m,
               dim, nc, num_threads);
}
inline void book_dots(const float* resid, const BFloat16* book, float* dots, int64_t m,
                      int64_t dim, int64_t nc, int num_threads) {
  gemm_w16_cpu(resid, reinterpret_cast<const uint16_t*>(book), DType::kBFloat16, nullptr, dots,
               m, dim, nc, num_threads);
}

// The search is a matrix product: the dots r.e_j of a block of rows with a chunk of a codebook's
// rows are one GEMM call ([rows, C] x [C, codes]), then each row keeps its running argmin over
// the chunk. A 7B-256 image (256 rows, 4 x 16384 codes of 1024) is 34 GFLOP of FMAs: a dot at a
// time it ran at ~14 GFLOP/s on the development CPU, the GEMM at ~200 (bench/RESULTS.md).
template <class T>
void encode(const T* x, const T* books, int64_t* codes, T* z_q, int64_t n_rows, int64_t depth,
            int64_t n_codebooks, int64_t rows, int64_t dim, int64_t n_embed, int num_threads) {
  if (n_rows == 0) return;
  // |e_j|^2 of every valid row, once per call.
  std::vector<float> norms(n_codebooks * n_embed);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t i = 0; i < n_codebooks * n_embed; ++i) {
    const T* e = books + (i / n_embed) * rows * dim + (i % n_embed) * dim;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < dim; ++c) s += to_float(e[c]) * to_float(e[c]);
    norms[i] = s;
  }

  const int64_t book_stride = n_codebooks == 1 ? 0 : rows * dim;
  const int64_t norm_stride = n_codebooks == 1 ? 0 : n_embed;
  const int64_t block = std::min(kEncodeRowBlock, n_rows);
  const int64_t chunk = std::min(kEncodeCodeChunk, n_embed);
  std::vector<float> resid(block * dim), zsum(block * dim), dots(block * chunk);
  std::vector<float> rnorm(block), best(block);
  std::vector<int64_t> best_j(block);
  for (int64_t n0 = 0; n0 < n_rows; n0 += block) {
    const int64_t m = std::min(block, n_rows - n0);
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t r = 0; r < m; ++r) {
      load_row(x + (n0 + r) * dim, &resid[r * dim], dim);
      std::fill(&zsum[r * dim], &zsum[r * dim] + dim, 0.0f);
    }
    for (int64_t d = 0; d < depth; ++d) {
      const T* book = books + d * book_stride;
      const float* book_norms = norms.data() + d * norm_stride;
#pragma omp parallel for num_threads(num_threads) schedule(static)
      for (int64_t r = 0; r < m; ++r) {
        const float* res = &resid[r * dim];
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < dim; ++c) s += res[c] * res[c];
        rnorm[r] = s;
        best[r] = std::numeric_limits<float>::infinity();
        best_j[r] = 0;
      }
      for (int64_t j0 = 0; j0 < n_embed; j0 += chunk) {
        const int64_t nc = std::min(chunk, n_embed - j0);
        book_dots(resid.data(), book + j0 * dim, dots.data(), m, dim, nc, num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
        for (int64_t r = 0; r < m; ++r) {
          const float* dot = &dots[r * nc];
          for (int64_t j = 0; j < nc; ++j) {
            const float dist = rnorm[r] + book_norms[j0 + j] - 2.0f * dot[j];
            if (dist < best[r]) {  // strict, chunks in order: ties keep the smallest index
              best[r] = dist;
              best_j[r] = j0 + j;
            }
          }
        }
      }
#pragma omp parallel for num_threads(num_threads) schedule(static)
      for (int64_t r = 0; r < m; ++r) {
        codes[(n0 + r) * depth + d] = best_j[r];
        const T* e = book + best_j[r] * dim;
        float* res = &resid[r * dim];
        float* z = &zsum[r * dim];
        for (int64_t c = 0; c < dim; ++c) {
          const float v = to_float(e[c]);
          res[c] -= v;
          z[c] += v;
        }
      }
    }
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t r = 0; r < m; ++r) store_row(&zsum[r * dim], z_q + (n0 + r) * dim, dim);
  }
}

}  // namespace

void rvq_lookup_cpu(const int64_t* codes, const void* codebooks, void* out, int64_t n_rows,
                    int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim,
                    DType dtype, int num_threads) {
  rvq_check_sizes(n_rows, depth, n_codebooks, codebook_rows, dim);
  check_num_threads("rvq", num_threads);
  const int64_t n_embed = codebook_rows - 1;
  for (int64_t i = 0; i < n_rows * depth; ++i) {  // before any write: no partial output
    if (codes[i] < 0 || codes[i] >= n_embed) {
      throw std::invalid_argument(
          "rvq_lookup: codes[" + std::to_string(i / depth) + ", " + std::to_string(i % depth) +
          "] = " + std::to_string(codes[i]) + " is outside the valid range [0, " +
          std::to_string(n_embed) + ") (row " + std::to_string(n_embed) + " is padding)");
    }
  }
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    lookup(codes, static_cast<const T*>(codebooks), static_cast<T*>(out), n_rows, depth,
           n_codebooks, codebook_rows, dim, num_threads);
  });
}

void rvq_encode_cpu(const void* features, const void* codebooks, int64_t* codes, void* z_q,
                    int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                    int64_t dim, int64_t n_embed, DType dtype, int num_threads) {
  rvq_check_sizes(n_rows, depth, n_codebooks, codebook_rows, dim);
  check_num_threads("rvq", num_threads);
  if (codebook_rows != n_embed + 1) {
    throw std::invalid_argument("rvq_encode: codebooks has " + std::to_string(codebook_rows) +
                                " rows per codebook; expected n_embed + 1 = " +
                                std::to_string(n_embed + 1) + " (the last row is padding)");
  }
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    encode(static_cast<const T*>(features), static_cast<const T*>(codebooks), codes,
           static_cast<T*>(z_q), n_rows, depth, n_codebooks, codebook_rows, dim, n_embed,
           num_threads);
  });
}

}  // namespace vilau
