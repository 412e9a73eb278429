// CPU RVQ kernels: OpenMP over rows, contiguous float32 inner loops.
#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "common/threads.h"
#include "rvq/rvq.h"

namespace vilau {

namespace {

//! Rows that share one float32 copy of a codebook row in the encode search.
constexpr int64_t kEncodeRowTile = 8;

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

template <class T>
void encode(const T* x, const T* books, int64_t* codes, T* z_q, int64_t n_rows, int64_t depth,
            int64_t n_codebooks, int64_t rows, int64_t dim, int64_t n_embed, int num_threads) {
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
  const int64_t n_tiles = (n_rows + kEncodeRowTile - 1) / kEncodeRowTile;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> resid(kEncodeRowTile * dim), zsum(kEncodeRowTile * dim), erow(dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t n0 = tile * kEncodeRowTile;
      const int64_t n_tile = std::min(kEncodeRowTile, n_rows - n0);
      for (int64_t r = 0; r < n_tile; ++r) load_row(x + (n0 + r) * dim, &resid[r * dim], dim);
      std::fill(zsum.begin(), zsum.end(), 0.0f);

      for (int64_t d = 0; d < depth; ++d) {
        const T* book = books + d * book_stride;
        const float* book_norms = norms.data() + d * norm_stride;
        float rnorm[kEncodeRowTile], best[kEncodeRowTile];
        int64_t best_j[kEncodeRowTile];
        for (int64_t r = 0; r < n_tile; ++r) {
          const float* res = &resid[r * dim];
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t c = 0; c < dim; ++c) s += res[c] * res[c];
          rnorm[r] = s;
          best[r] = std::numeric_limits<float>::infinity();
          best_j[r] = 0;
        }
        for (int64_t j = 0; j < n_embed; ++j) {
          load_row(book + j * dim, erow.data(), dim);
          const float* e = erow.data();
          for (int64_t r = 0; r < n_tile; ++r) {
            const float* res = &resid[r * dim];
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int64_t c = 0; c < dim; ++c) dot += res[c] * e[c];
            const float dist = rnorm[r] + book_norms[j] - 2.0f * dot;
            if (dist < best[r]) {  // strict: ties keep the smallest index, like torch.argmin
              best[r] = dist;
              best_j[r] = j;
            }
          }
        }
        for (int64_t r = 0; r < n_tile; ++r) {
          codes[(n0 + r) * depth + d] = best_j[r];
          load_row(book + best_j[r] * dim, erow.data(), dim);
          float* res = &resid[r * dim];
          float* z = &zsum[r * dim];
          const float* e = erow.data();
#pragma omp simd
          for (int64_t c = 0; c < dim; ++c) {
            res[c] -= e[c];
            z[c] += e[c];
          }
        }
      }
      for (int64_t r = 0; r < n_tile; ++r) store_row(&zsum[r * dim], z_q + (n0 + r) * dim, dim);
    }
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
