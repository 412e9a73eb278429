// W4A8 GEMV for CPU decoding: AutoAWQ's 4-bit weights (codes, zero points, float16 scales) times
// activations quantized to int8, summed with integer dot products.
//
// Why: the W4A16 packed GEMV (csrc/w4a16) returns AutoAWQ's float16 dequantization exactly, but
// at M = 1 it spends one table lookup and one float FMA per weight and runs at about half its
// bytes floor on the development CPU (bench/RESULTS.md). llama.cpp's Q4_0 gets its speed by
// quantizing the activations to int8 and multiplying 4-bit by 8-bit integers, 64 products per
// instruction (AVX-512 VNNI's vpdpbusd). This is the same trade for AWQ weights, offered as an
// opt-in: it is faster and it is an approximation (the activation rounding below), never the
// default path.
//
// Arithmetic (every instruction-set path returns these bits: AVX-512 VNNI, AVX2, NEON with and
// without the dot product, scalar; w4a8_cpu_isas). Sizes as in w4a16.h: M rows, K in,
// N out, G group size; B = 32 is the activation block.
//   x quantization, per row r and block b of 32 values (w4a8_quantize_x):
//     amax = max |x|; d[r, b] = amax / 127 (float32 division);
//     xq[r, k] = nearbyint(x[r, k] * (127 / amax)) (round to nearest even, clamped to +-127);
//     s[r, b] = sum of the block's xq (int32). A block of zeros gives d = 0 and xq = 0; a block
//     holding NaN or infinity gives d = amax (not finite) and xq = 0, so the output row is NaN.
//   per output (r, n), blocks b ascending, groups g = b * 32 / G:
//     D = sum over the block's k of (code[k, n] - zero[g, n]) * xq[r, k]   (exact, int32)
//     a = fma(float(D), d[r, b], a)             (a = 0 at the start of each group)
//     acc = fma(a, scale[g, n], acc)            (after each group's last block; acc = 0 first)
//   y[r, n] = acc + bias[n] (float16 as float), one rounding.
// Against W4A16 this drops the float16 rounding of each dequantized weight and adds the
// activation rounding: |y - y_w4a16| is bounded by sum_k |w[k, n]| * d[r, b(k)] / 2 plus the
// float16 weight rounding (tests/ops/test_w4a8.py checks the bound against float64).
//
// Layout, repacked once at load from AutoAWQ's buffers (w4a8_repack_cpu):
//   codes  uint8 [N/16 tiles][K/8 chunks][16 columns][4 bytes]: byte j of (tile t, chunk c,
//          column i) = code(8c + j, 16t + i) | code(8c + 4 + j, 16t + i) << 4. One 64-byte chunk
//          is the 4-byte groups of 16 columns that one vpdpbusd multiplies by 4 broadcast
//          activations (low nibbles: k = 8c..8c+3, high nibbles: 8c+4..8c+7), so each lane of
//          the accumulator is one output column and nothing is reduced across lanes (NEON: each
//          16-byte quarter is 4 columns, one sdot by lane per nibble half). A tile's
//          bytes are one contiguous run of K * 8.
//   zeros  uint8  [N/16][K/G][16]   zero points of (tile, group, column)
//   scales float16 [N/16][K/G][16]  scales, same order (AutoAWQ's values, bit for bit)
// Needs K % 32 == 0, G % 32 == 0 (a block never straddles groups), N % 16 == 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vilau {

//! Activation block length along K.
constexpr int64_t kW4A8Block = 32;

//! @throws std::invalid_argument naming the bad size (M >= 0, K >= 32 with K % 32 == 0,
//!         N >= 16 with N % 16 == 0, G >= 32 with G % 32 == 0 and K % G == 0).
void w4a8_check_sizes(int64_t m, int64_t k, int64_t n, int64_t group_size);

//! Bytes of the repacked codes (K * N / 2), zero points and scales (K / G * N elements each).
inline int64_t w4a8_codes_bytes(int64_t k, int64_t n) { return k * n / 2; }
inline int64_t w4a8_group_params(int64_t k, int64_t n, int64_t g) { return k / g * n; }

//! AutoAWQ qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N] -> the
//! layout above (@p codes: w4a8_codes_bytes; @p zeros, @p scales_out: w4a8_group_params).
//! @throws std::invalid_argument on bad sizes or num_threads < 1.
void w4a8_repack_cpu(const int32_t* qweight, const int32_t* qzeros, const uint16_t* scales,
                     uint8_t* codes, uint8_t* zeros, uint16_t* scales_out, int64_t k, int64_t n,
                     int64_t group_size, int num_threads);

//! x float32 [M, K] -> xq int8 [M, K], d float32 [M, K/32], s int32 [M, K/32] (see above).
//! @throws std::invalid_argument if K % 32 != 0 or M < 0.
void w4a8_quantize_x(const float* x, int8_t* xq, float* d, int32_t* s, int64_t m, int64_t k);

//! Paths this machine runs, fastest first, "scalar" (the reference) last. Names:
//! "avx512vnni" (AVX-512 F/BW/VL + VNNI), "avx2" (AVX2 + FMA + F16C) on x86-64; "neon-dotprod"
//! (the Armv8.2 dot product, HWCAP_ASIMDDP: Jetson Orin, Raspberry Pi 5; not a Cortex-A72) and
//! "neon" (every aarch64 CPU) on aarch64; "scalar". Every path returns the scalar path's bits.
std::vector<std::string> w4a8_cpu_isas();

//! y float32 [M, N] from quantized activations (w4a8_quantize_x) and repacked weights;
//! @p bias float16 [N] or null. Threads over contiguous ranges of 16-column tiles.
//! @param isa an entry of w4a8_cpu_isas() or "auto" (the first).
//! @throws std::invalid_argument on bad sizes, num_threads < 1 or an isa not available here.
void w4a8_gemv_cpu(const int8_t* xq, const float* d, const int32_t* s, const uint8_t* codes,
                   const uint8_t* zeros, const uint16_t* scales, const uint16_t* bias, float* y,
                   int64_t m, int64_t k, int64_t n, int64_t group_size, int num_threads,
                   const std::string& isa = "auto");

// ---- 8-bit weights, int8 activations (W8A8): an lm_head quantized per row (the opt-in decode
// path reads it instead of its float16 copy: a quarter of the float32 bytes, and integer dot
// products, where the float32-activation int8 GEMV of csrc/gemv converts every weight).
//
// Weights: int8 codes w[N, K] in -127..127 and a float32 scale per row (vilau_rt.ops.native.
// quantize_rows_int8), repacked (w8a8_repack_cpu) into
//   codes8 uint8 [N8/16 tiles][K/4 chunks][16 rows][4 bytes], byte j of (tile t, chunk c, row i)
//          = w[16t + i, 4c + j] + 128 (rows N..N8-1, padding up to a multiple of 16, are 128)
// Arithmetic, x quantized as above: per output (r, n), blocks b ascending,
//   D = sum over the block's k of w[n, k] * xq[r, k]   (exact, int32)
//   a = fma(float(D), d[r, b], a)                       (a = 0 first)
//   y[r, n] = a * scale[n], one rounding (+ bias[n] float32, one more, when given).

//! Rows N rounded up to the tile of 16.
inline int64_t w8a8_padded_rows(int64_t n) { return (n + 15) / 16 * 16; }

//! int8 codes [N, K] (row-major) -> codes8 (w8a8_padded_rows(N) * K bytes).
//! @throws std::invalid_argument if K % 32 != 0, N < 1 or num_threads < 1.
void w8a8_repack_cpu(const int8_t* w, uint8_t* codes8, int64_t n, int64_t k, int num_threads);

//! y float32 [M, N] (row stride N) from quantized activations (xq, d, s) and codes8;
//! @p scale float32 [N], @p bias float32 [N] or null. Same isa names as w4a8_cpu_isas().
//! @throws std::invalid_argument on bad sizes, num_threads < 1 or an isa not available here.
void w8a8_gemv_cpu(const int8_t* xq, const float* d, const int32_t* s, const uint8_t* codes8,
                   const float* scale, const float* bias, float* y, int64_t m, int64_t k,
                   int64_t n, int num_threads, const std::string& isa = "auto");

//! One layer of several that read the same x (q/k/v, gate/up): its buffers and N.
struct W4A8Part {
  const uint8_t* codes = nullptr;
  const uint8_t* zeros = nullptr;
  const uint16_t* scales = nullptr;
  const uint16_t* bias = nullptr;  //!< float16 [n] or null
  int64_t n = 0;
};

//! w4a8_gemv_cpu for @p num_parts layers of one K and G on the same quantized x, their outputs
//! side by side in y [M, sum of n] (row stride: the sum). One parallel region shares all their
//! tiles, so the threads stay balanced and start once. Same checks, per part.
void w4a8_gemv_parts_cpu(const int8_t* xq, const float* d, const int32_t* s,
                         const W4A8Part* parts, int num_parts, float* y, int64_t m, int64_t k,
                         int64_t group_size, int num_threads, const std::string& isa = "auto");

//! x float32 [M, K] -> the quantized x in @p scratch (grown as needed); returns xq, d, s in it.
struct W4A8Quantized {
  const int8_t* xq;
  const float* d;
  const int32_t* s;
};
W4A8Quantized w4a8_quantize_into(const float* x, int64_t m, int64_t k,
                                 std::vector<int8_t>& scratch);

//! w4a8_quantize_x then w4a8_gemv_cpu, with the quantized x in @p scratch (grown as needed).
void w4a8_linear_cpu(const float* x, const uint8_t* codes, const uint8_t* zeros,
                     const uint16_t* scales, const uint16_t* bias, float* y, int64_t m, int64_t k,
                     int64_t n, int64_t group_size, int num_threads, std::vector<int8_t>& scratch,
                     const std::string& isa = "auto");

}  // namespace vilau
