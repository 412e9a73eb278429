// CPU W4A16 kernels: OpenMP over column chunks (and row tiles in the GEMM path). The GEMV runs
// on the best SIMD path of the machine (w4a16_cpu_simd.cpp); the scalar loop here is the
// reference those paths are tested against, and they return its bits.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cpu_isa.h"
#include "common/float_cpu.h"
#include "common/threads.h"
#include "w4a16/w4a16.h"
#include "w4a16/w4a16_cpu_simd.h"
#include "w4a16/w4a16_pack.h"

namespace vilau {

namespace {

constexpr int64_t kWordsPerChunk = 8;                 //!< packed words per column chunk
constexpr int64_t kChunkCols = 8 * kWordsPerChunk;    //!< output columns per chunk
constexpr int64_t kGemmRowTile = 64;                  //!< rows of x per GEMM work item
constexpr int64_t kGemvChunkWords = 64;               //!< packed words per GEMV column chunk
constexpr int64_t kSimdGemmMaxM = 64;  //!< largest M the GEMM path serves with SIMD GEMV slabs

//! Codes of packed words [word0, word0 + n_words) of one row, as floats, column order.
void unpack_codes(const int32_t* row, int64_t word0, int64_t n_words, float* dst) {
  for (int64_t w = 0; w < n_words; ++w) {
    const int32_t word = row[word0 + w];
    for (int j = 0; j < 8; ++j) dst[w * 8 + j] = static_cast<float>(awq_unpack(word, j));
  }
}

//! Zero points and scales of group g for the columns of one chunk.
void load_group(const int32_t* qzeros, const Half* scales, int64_t g, int64_t n, int64_t word0,
                int64_t n_words, float* zero, float* scale) {
  unpack_codes(qzeros + g * (n / 8), word0, n_words, zero);
  for (int64_t i = 0; i < n_words * 8; ++i) scale[i] = to_float(scales[g * n + word0 * 8 + i]);
}

//! W_T values of row i for one chunk: (code - zero) * scale rounded to float16, the weight the
//! AutoAWQ format defines (its reference dequantizes in fp16). The product is exact in float32,
//! so one rounding gives exactly the fp16 product.
void dequant_row(const int32_t* qweight, int64_t i, int64_t n, int64_t word0, int64_t n_words,
                 const float* zero, const float* scale, float* dst) {
  unpack_codes(qweight + i * (n / 8), word0, n_words, dst);
#pragma omp simd
  for (int64_t c = 0; c < n_words * 8; ++c) dst[c] = round_to_half((dst[c] - zero[c]) * scale[c]);
}

//! Per column of one chunk, the 16 weights a code can stand for in group g:
//! lut[c * 16 + q] = round_to_half((q - zero) * scale). Rounding 16 values per column and group
//! instead of every weight keeps the fp16 semantics off the per-weight path.
void build_lut(const int32_t* qzeros, const Half* scales, int64_t g, int64_t n, int64_t word0,
               int64_t n_words, float* zero, float* scale, float* lut) {
  load_group(qzeros, scales, g, n, word0, n_words, zero, scale);
  for (int64_t c = 0; c < n_words * 8; ++c) {
    for (int q = 0; q < 16; ++q) lut[c * 16 + q] = round_to_half((q - zero[c]) * scale[c]);
  }
}

//! W_T values of row i for one chunk, looked up in the chunk's table (see build_lut).
void dequant_row_lut(const int32_t* qweight, int64_t i, int64_t n, int64_t word0,
                     int64_t n_words, const float* lut, float* dst) {
  const int32_t* row = qweight + i * (n / 8) + word0;
  for (int64_t w = 0; w < n_words; ++w) {
    const uint32_t word = static_cast<uint32_t>(row[w]);
    const float* l = lut + w * 8 * 16;
    for (int j = 0; j < 8; ++j) {
      dst[w * 8 + j] = l[j * 16 + ((word >> (4 * awq_nibble_of_column(j))) & 0xfu)];
    }
  }
}

constexpr int64_t kMicroRows = 4;  //!< rows of the GEMM register block (4 x 8 accumulators)

//! acc[4, 8] (row stride kChunkCols) += x[4, G] (row stride ldx) @ w[G, 8] (row stride
//! kChunkCols), keeping the 32 sums in registers across the group.
void micro_kernel(const float* x, int64_t ldx, const float* w, int64_t group_size, float* acc) {
  float a[kMicroRows][8];
  for (int i = 0; i < kMicroRows; ++i)
    for (int c = 0; c < 8; ++c) a[i][c] = acc[i * kChunkCols + c];
  for (int64_t kk = 0; kk < group_size; ++kk) {
    const float* wk = w + kk * kChunkCols;
    for (int i = 0; i < kMicroRows; ++i) {
      const float xv = x[i * ldx + kk];
      for (int c = 0; c < 8; ++c) a[i][c] += xv * wk[c];
    }
  }
  for (int i = 0; i < kMicroRows; ++i)
    for (int c = 0; c < 8; ++c) acc[i * kChunkCols + c] = a[i][c];
}

template <class T>
std::vector<float> to_float_buffer(const T* x, int64_t count) {
  std::vector<float> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = to_float(x[i]);
  return out;
}

template <class T>
void store_row(const float* src, T* dst, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] = from_float<T>(src[i]);
}

template <class T>
void store_output(const float* acc, const Half* bias, T* y, int64_t rows, int64_t n,
                  int64_t row0, int64_t col0, int64_t width, int64_t acc_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < width; ++c) {
      const float b = bias ? to_float(bias[col0 + c]) : 0.0f;
      y[(row0 + r) * n + col0 + c] = from_float<T>(acc[r * acc_stride + c] + b);
    }
  }
}

//! GEMV: a thread streams whole rows of a wide column chunk, so qweight is read in long runs.
template <class T>
void gemv(const T* x, const int32_t* qweight, const int32_t* qzeros, const Half* scales,
          const Half* bias, T* y, int64_t m, int64_t k, int64_t n, int64_t group_size,
          int num_threads) {
  const std::vector<float> xf = to_float_buffer(x, m * k);
  const int64_t n_words = n / 8;
  const int64_t n_chunks = (n_words + kGemvChunkWords - 1) / kGemvChunkWords;
#pragma omp parallel num_threads(num_threads)
  {
    const int64_t cols = 8 * kGemvChunkWords;
    std::vector<float> acc(m * cols), zero(cols), scale(cols), w(cols), lut(cols * 16);
#pragma omp for schedule(static)
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
      const int64_t word0 = chunk * kGemvChunkWords;
      const int64_t words = std::min(kGemvChunkWords, n_words - word0);
      const int64_t width = words * 8;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t i = 0; i < k; ++i) {
        if (i % group_size == 0) {
          build_lut(qzeros, scales, i / group_size, n, word0, words, zero.data(), scale.data(),
                    lut.data());
        }
        dequant_row_lut(qweight, i, n, word0, words, lut.data(), w.data());
        const float* wr = w.data();
        for (int64_t r = 0; r < m; ++r) {
          const float xv = xf[r * k + i];
          float* a = &acc[r * cols];
#pragma omp simd
          for (int64_t c = 0; c < width; ++c) a[c] += xv * wr[c];
        }
      }
      store_output(acc.data(), bias, y, m, n, 0, word0 * 8, width, cols);
    }
  }
}

//! GEMV on a SIMD path. Each thread owns one contiguous range of packed words and walks the
//! rows group by group across its whole range (so a group's rows are read as long runs, and the
//! pages touched at a time stay few), keeping its float32 sums for the range in a buffer.
//! Bits: those of the scalar loop (see w4a16_cpu_simd.h).
template <class T>
void gemv_simd(w4a16_simd::ChunkFn chunk_fn, const T* x, const int32_t* qweight,
               const int32_t* qzeros, const Half* scales, const Half* bias, T* y, int64_t m,
               int64_t k, int64_t n, int64_t group_size, int num_threads) {
  const std::vector<float> xf = to_float_buffer(x, m * k);
  const int64_t n_words = n / 8;
  const int64_t n_groups = k / group_size;
  const uint16_t* s = reinterpret_cast<const uint16_t*>(scales);
  // Ranges are whole multiples of 4 words (32 columns), so SIMD blocks do not straddle threads.
  const int64_t quads = (n_words + 3) / 4;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, quads)));
#pragma omp parallel num_threads(threads)
  {
    int64_t q0 = 0, q1 = 0;
    thread_share(quads, &q0, &q1);
    const int64_t word0 = std::min(n_words, q0 * 4);
    const int64_t word1 = std::min(n_words, q1 * 4);
    const int64_t words = word1 - word0;
    if (words > 0) {
      const int64_t cols = 8 * words;
      std::vector<float> acc(m * cols, 0.0f), scratch(16 * kGemvChunkWords);
      for (int64_t g = 0; g < n_groups; ++g) {
        for (int64_t c = 0; c < words; c += kGemvChunkWords) {
          chunk_fn(xf.data(), m, k, n, group_size, qweight, qzeros, s, word0 + c,
                   std::min(kGemvChunkWords, words - c), acc.data() + 8 * c, cols,
                   scratch.data(), g, g + 1);
        }
      }
      store_output(acc.data(), bias, y, m, n, 0, word0 * 8, cols, cols);
    }
  }
}

//! The chunk function of a named SIMD path, nullptr for "scalar".
//! @throws std::invalid_argument if this build or machine cannot run @p isa.
w4a16_simd::ChunkFn simd_chunk_fn(const std::string& isa) {
  const std::string name = cpu_isa("w4a16_gemv", isa);
#if defined(__x86_64__) || defined(_M_X64)
  if (name == "avx512") return w4a16_simd::gemv_chunk_avx512;
  if (name == "avx2") return w4a16_simd::gemv_chunk_avx2;
#endif
#if defined(__aarch64__)
  if (name == "neon") return w4a16_simd::gemv_chunk_neon;
#endif
  return nullptr;
}

template <class T>
void gemm(const T* x, const int32_t* qweight, const int32_t* qzeros, const Half* scales,
          const Half* bias, T* y, int64_t m, int64_t k, int64_t n, int64_t group_size,
          int num_threads) {
  const std::vector<float> xf = to_float_buffer(x, m * k);
  const int64_t n_words = n / 8;
  const int64_t n_chunks = (n_words + kWordsPerChunk - 1) / kWordsPerChunk;
  const int64_t n_tiles = (m + kGemmRowTile - 1) / kGemmRowTile;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> acc(kGemmRowTile * kChunkCols);
    std::vector<float> wgroup(group_size * kChunkCols);  // one unpacked group, [G, chunk]
    float zero[kChunkCols], scale[kChunkCols], lut[kChunkCols * 16];
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_chunks * n_tiles; ++item) {
      const int64_t chunk = item % n_chunks;
      const int64_t row0 = (item / n_chunks) * kGemmRowTile;
      const int64_t rows = std::min(kGemmRowTile, m - row0);
      const int64_t word0 = chunk * kWordsPerChunk;
      const int64_t words = std::min(kWordsPerChunk, n_words - word0);
      const int64_t width = words * 8;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t g = 0; g < k / group_size; ++g) {
        build_lut(qzeros, scales, g, n, word0, words, zero, scale, lut);
        for (int64_t kk = 0; kk < group_size; ++kk) {
          dequant_row_lut(qweight, g * group_size + kk, n, word0, words, lut,
                          &wgroup[kk * kChunkCols]);
        }
        const float* xg = &xf[row0 * k + g * group_size];
        int64_t r = 0;
        for (; r + kMicroRows <= rows; r += kMicroRows) {
          for (int64_t c = 0; c < width; c += 8) {
            micro_kernel(xg + r * k, k, wgroup.data() + c, group_size, &acc[r * kChunkCols + c]);
          }
        }
        for (; r < rows; ++r) {
          float* a = &acc[r * kChunkCols];
          for (int64_t kk = 0; kk < group_size; ++kk) {
            const float xv = xg[r * k + kk];
            const float* w = &wgroup[kk * kChunkCols];
#pragma omp simd
            for (int64_t c = 0; c < width; ++c) a[c] += xv * w[c];
          }
        }
      }
      store_output(acc.data(), bias, y, rows, n, row0, word0 * 8, width, kChunkCols);
    }
  }
}

}  // namespace

std::vector<std::string> w4a16_cpu_isas() { return cpu_isas(); }

void w4a16_gemv_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                    const void* scales, const void* bias, void* y, int64_t m, int64_t k, int64_t n,
                    int64_t group_size, DType dtype, int num_threads, const std::string& isa) {
  w4a16_check_sizes(m, k, n, group_size);
  check_num_threads("w4a16", num_threads);
  if (m > kGemvMaxM) {
    throw std::invalid_argument("w4a16_gemv: M = " + std::to_string(m) +
                                " rows exceeds kGemvMaxM = " + std::to_string(kGemvMaxM) +
                                "; use the GEMM path");
  }
  const w4a16_simd::ChunkFn chunk_fn = simd_chunk_fn(isa);
  if (m == 0) return;
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (chunk_fn == nullptr) {
      gemv(static_cast<const T*>(x), qweight, qzeros, static_cast<const Half*>(scales),
           static_cast<const Half*>(bias), static_cast<T*>(y), m, k, n, group_size, num_threads);
    } else {
      gemv_simd(chunk_fn, static_cast<const T*>(x), qweight, qzeros,
                static_cast<const Half*>(scales), static_cast<const Half*>(bias),
                static_cast<T*>(y), m, k, n, group_size, num_threads);
    }
  });
}

void w4a16_gemm_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                    const void* scales, const void* bias, void* y, int64_t m, int64_t k, int64_t n,
                    int64_t group_size, DType dtype, int num_threads) {
  w4a16_check_sizes(m, k, n, group_size);
  check_num_threads("w4a16", num_threads);
  if (m == 0) return;
  const w4a16_simd::ChunkFn chunk_fn = simd_chunk_fn("auto");
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (chunk_fn != nullptr && m <= kSimdGemmMaxM) {
      // Slabs of kGemvMaxM rows through the SIMD GEMV: each slab reads the weights again, and
      // still beats the tiled kernel below (and dequantize + BLAS) up to kSimdGemmMaxM rows
      // (bench/RESULTS.md); vilau_rt.ops takes BLAS from W4A16_CPU_BLAS_MIN_M = 65 rows on.
      for (int64_t r0 = 0; r0 < m; r0 += kGemvMaxM) {
        gemv_simd(chunk_fn, static_cast<const T*>(x) + r0 * k, qweight, qzeros,
                  static_cast<const Half*>(scales), static_cast<const Half*>(bias),
                  static_cast<T*>(y) + r0 * n, std::min(kGemvMaxM, m - r0), k, n, group_size,
                  num_threads);
      }
      return;
    }
    gemm(static_cast<const T*>(x), qweight, qzeros, static_cast<const Half*>(scales),
         static_cast<const Half*>(bias), static_cast<T*>(y), m, k, n, group_size, num_threads);
  });
}

void w4a16_linear_cpu(const void* x, const int32_t* qweight, const int32_t* qzeros,
                      const void* scales, const void* bias, void* y, int64_t m, int64_t k,
                      int64_t n, int64_t group_size, DType dtype, int num_threads) {
  if (m <= kGemvMaxM) {
    w4a16_gemv_cpu(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, num_threads);
  } else {
    w4a16_gemm_cpu(x, qweight, qzeros, scales, bias, y, m, k, n, group_size, dtype, num_threads);
  }
}

void w4a16_dequantize_cpu(const int32_t* qweight, const int32_t* qzeros, const void* scales,
                          void* w_t, int64_t k, int64_t n, int64_t group_size, DType dtype,
                          int num_threads) {
  w4a16_check_sizes(0, k, n, group_size);
  check_num_threads("w4a16", num_threads);
  const Half* s = static_cast<const Half*>(scales);
  const int64_t n_groups = k / group_size;
  const int64_t n_words = n / 8;
#if defined(__x86_64__) || defined(_M_X64)
  if (dtype != DType::kBFloat16 && cpu_has_avx2()) {
    const bool half_out = dtype == DType::kFloat16;
    const int64_t elem = half_out ? 2 : 4;
#pragma omp parallel num_threads(num_threads)
    {
      std::vector<float> scratch(2 * n);
      constexpr int64_t kRows = 64;  // rows per work item (group parameters loaded once each)
#pragma omp for schedule(static)
      for (int64_t i0 = 0; i0 < k; i0 += kRows) {
        w4a16_simd::dequant_rows_avx2(qweight, qzeros, reinterpret_cast<const uint16_t*>(s), i0,
                                      std::min(k, i0 + kRows), n, group_size,
                                      static_cast<char*>(w_t) + i0 * n * elem, half_out,
                                      scratch.data());
      }
    }
    return;
  }
#endif
  // Zero points and scales of every group as floats, so that rows can run in parallel and
  // each thread reads and writes whole rows.
  std::vector<float> zero(n_groups * n), scale(n_groups * n);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t g = 0; g < n_groups; ++g) {
    load_group(qzeros, s, g, n, 0, n_words, &zero[g * n], &scale[g * n]);
  }
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* out = static_cast<T*>(w_t);
#pragma omp parallel num_threads(num_threads)
    {
      std::vector<float> row(n);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < k; ++i) {
        const int64_t g = i / group_size;
        dequant_row(qweight, i, n, 0, n_words, &zero[g * n], &scale[g * n], row.data());
        store_row(row.data(), out + i * n, n);
      }
    }
  });
}

}  // namespace vilau
