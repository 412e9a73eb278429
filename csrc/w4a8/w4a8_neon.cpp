// aarch64 paths of the W4A8 and W8A8 GEMVs (w4a8.h), chosen at run time: NEON with the Armv8.2
// dot product (sdot) and without it (smull). The integer dot products are exact, so only the
// float epilogue has an order to keep, as the scalar reference in w4a8_cpu.cpp (and
// w4a8_x86.cpp) keep it. sdot (signed x signed, 4 products per int32 lane; codes 0..15 are valid
// int8) works on a 16-byte quarter of a 64-byte chunk, 4 columns, with the 4 activations taken
// from a lane of the x register (vdotq_laneq_s32).
#include "w4a8/w4a8_simd.h"

#include "w4a8/w4a8.h"
#include "w4a8/w4a8_tiles.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // <bits/hwcap.h> of older glibc lacks it
#endif
#endif

namespace vilau {
namespace w4a8 {

#if defined(__aarch64__)

bool cpu_has_dotprod() { return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0; }

// FEAT_DotProd is an Armv8.2 extension (Cortex-A55/A76/A78, Jetson Orin, Raspberry Pi 5; not the
// Pi 4's Cortex-A72): these kernels alone are built for it (GCC 12's arm_neon.h wraps vdotq_* in
// this exact target, so "+dotprod" alone fails to inline them) and run only where getauxval says
// so; the rest of the library stays plain armv8-a.
#define VILAU_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))

namespace {

//! The 16 zero points of a group as 4 quarters of int32 (columns 4q .. 4q + 3).
inline void zeros_neon(const uint8_t* zeros, int32x4_t* z) {
  const uint8x16_t v = vld1q_u8(zeros);
  const uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_high_u8(v);
  z[0] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo)));
  z[1] = vreinterpretq_s32_u32(vmovl_high_u16(lo));
  z[2] = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi)));
  z[3] = vreinterpretq_s32_u32(vmovl_high_u16(hi));
}

//! The 16 float16 scales of a group as 4 quarters of float32 (exact).
inline void scales_neon(const uint16_t* scales, float32x4_t* sc) {
  const float16x8_t lo = vreinterpretq_f16_u16(vld1q_u16(scales));
  const float16x8_t hi = vreinterpretq_f16_u16(vld1q_u16(scales + 8));
  sc[0] = vcvt_f32_f16(vget_low_f16(lo));
  sc[1] = vcvt_high_f32_f16(lo);
  sc[2] = vcvt_f32_f16(vget_low_f16(hi));
  sc[3] = vcvt_high_f32_f16(hi);
}

//! Chunk C (0..3) of a block for rows [0, R): the 16 bytes of quarter q are columns 4q .. 4q + 3,
//! 4 bytes each, so sdot's lane i is column 4q + i. Low nibbles (codes 0..15, valid int8) times
//! x[8C .. 8C + 3], high nibbles times x[8C + 4 .. 8C + 7]: int32 lanes 2 (C % 2) and + 1 of the
//! block's 16-byte half C / 2.
template <int R, int C>
VILAU_DOTPROD inline void chunk_dotprod(const uint8_t* chunk, const int8x16_t (*x)[2],
                                        int32x4_t (*dot)[4]) {
  const uint8x16_t low = vdupq_n_u8(0x0f);
  for (int q = 0; q < 4; ++q) {
    const uint8x16_t v = vld1q_u8(chunk + 16 * q);
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, low));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    for (int r = 0; r < R; ++r) {
      dot[r][q] = vdotq_laneq_s32(dot[r][q], lo, x[r][C / 2], 2 * (C % 2));
      dot[r][q] = vdotq_laneq_s32(dot[r][q], hi, x[r][C / 2], 2 * (C % 2) + 1);
    }
  }
}

//! pass_vnni on 128-bit vectors: the tile's 16 columns are 4 quarters of 4 lanes.
template <int R>
VILAU_DOTPROD void pass_dotprod(const int8_t* xq, const float* d, const int32_t* s, int64_t k,
                                int64_t n, int64_t group_size, const uint8_t* tile,
                                const uint8_t* zeros, const uint16_t* scales, float* out) {
  const int64_t blocks = k / kW4A8Block, bpg = group_size / kW4A8Block;
  float32x4_t acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < k / group_size; ++g) {
    int32x4_t z[4];
    zeros_neon(zeros + 16 * g, z);
    float32x4_t a[R][4];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) a[r][q] = vdupq_n_f32(0.0f);
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      int8x16_t x[R][2];
      int32x4_t dot[R][4];
      for (int r = 0; r < R; ++r) {
        x[r][0] = vld1q_s8(xq + r * k + kW4A8Block * b);
        x[r][1] = vld1q_s8(xq + r * k + kW4A8Block * b + 16);
        for (int q = 0; q < 4; ++q) dot[r][q] = vdupq_n_s32(0);
      }
      const uint8_t* block = tile + 4 * b * 64;
      chunk_dotprod<R, 0>(block, x, dot);
      chunk_dotprod<R, 1>(block + 64, x, dot);
      chunk_dotprod<R, 2>(block + 128, x, dot);
      chunk_dotprod<R, 3>(block + 192, x, dot);
      for (int r = 0; r < R; ++r) {
        const int32x4_t sb = vdupq_n_s32(s[r * blocks + b]);
        const float32x4_t db = vdupq_n_f32(d[r * blocks + b]);
        for (int q = 0; q < 4; ++q) {
          const int32x4_t D = vmlsq_s32(dot[r][q], z[q], sb);  // dot - zero * s
          a[r][q] = vfmaq_f32(a[r][q], vcvtq_f32_s32(D), db);  // a + D * d, fused
        }
      }
    }
    float32x4_t sc[4];
    scales_neon(scales + 16 * g, sc);
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) acc[r][q] = vfmaq_f32(acc[r][q], a[r][q], sc[q]);
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) vst1q_f32(out + r * n + 4 * q, acc[r][q]);
}

//! W8A8 chunk C (0..7) of a block: the code xor 0x80 is w as int8, times x[4C .. 4C + 3] (int32
//! lane C % 4 of the block's 16-byte half C / 4); the sum is D itself.
template <int R, int C>
VILAU_DOTPROD inline void chunk8_dotprod(const uint8_t* chunk, const int8x16_t (*x)[2],
                                         int32x4_t (*dot)[4]) {
  const uint8x16_t flip = vdupq_n_u8(0x80);
  for (int q = 0; q < 4; ++q) {
    const int8x16_t w = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(chunk + 16 * q), flip));
    for (int r = 0; r < R; ++r) dot[r][q] = vdotq_laneq_s32(dot[r][q], w, x[r][C / 4], C % 4);
  }
}

//! pass8_vnni on 128-bit vectors (the tile's 16 rows are 4 quarters of 4 lanes).
template <int R>
VILAU_DOTPROD void pass8_dotprod(const int8_t* xq, const float* d, const int32_t* /*s*/,
                                 int64_t k, const uint8_t* tile, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  float32x4_t a[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) a[r][q] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    int8x16_t x[R][2];
    int32x4_t dot[R][4];
    for (int r = 0; r < R; ++r) {
      x[r][0] = vld1q_s8(xq + r * k + kW4A8Block * b);
      x[r][1] = vld1q_s8(xq + r * k + kW4A8Block * b + 16);
      for (int q = 0; q < 4; ++q) dot[r][q] = vdupq_n_s32(0);
    }
    const uint8_t* block = tile + 8 * b * 64;
    chunk8_dotprod<R, 0>(block, x, dot);
    chunk8_dotprod<R, 1>(block + 64, x, dot);
    chunk8_dotprod<R, 2>(block + 128, x, dot);
    chunk8_dotprod<R, 3>(block + 192, x, dot);
    chunk8_dotprod<R, 4>(block + 256, x, dot);
    chunk8_dotprod<R, 5>(block + 320, x, dot);
    chunk8_dotprod<R, 6>(block + 384, x, dot);
    chunk8_dotprod<R, 7>(block + 448, x, dot);
    for (int r = 0; r < R; ++r) {
      const float32x4_t db = vdupq_n_f32(d[r * blocks + b]);
      for (int q = 0; q < 4; ++q) a[r][q] = vfmaq_f32(a[r][q], vcvtq_f32_s32(dot[r][q]), db);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) vst1q_f32(out + r * ldo + 4 * q, a[r][q]);
}


// ---- "neon": Armv8.0 NEON without the dot product (Raspberry Pi 4's Cortex-A72). smull/smlal
// multiply 8 int8 pairs into int16 lanes; the 4 products of a column sit in 4 adjacent int16
// lanes, which saddlp and addp reduce to the column's int32 lane once per block.

//! The 4 activations of int32 lane L of @p x broadcast to all 4 lanes (as 16 int8).
template <int L>
inline int8x16_t broadcast4(int8x16_t x) {
  return vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), L));
}

//! W4A8 chunk C (0..3) of a block (see chunk_dotprod) into int16 sums: p[r][q][0] holds columns
//! 4q, 4q + 1 (4 lanes each), p[r][q][1] columns 4q + 2, 4q + 3. A block adds 8 products of at
//! most 15 * 127 to a lane: |sum| <= 15240, no int16 overflow.
template <int R, int C>
inline void chunk_neon(const uint8_t* chunk, const int8x16_t (*x)[2], int16x8_t (*p)[4][2]) {
  const uint8x16_t low = vdupq_n_u8(0x0f);
  int8x16_t xl[R], xh[R];
  for (int r = 0; r < R; ++r) {
    xl[r] = broadcast4<2 * (C % 2)>(x[r][C / 2]);
    xh[r] = broadcast4<2 * (C % 2) + 1>(x[r][C / 2]);
  }
  for (int q = 0; q < 4; ++q) {
    const uint8x16_t v = vld1q_u8(chunk + 16 * q);
    const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(v, low));
    const int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(v, 4));
    for (int r = 0; r < R; ++r) {
      p[r][q][0] = vmlal_s8(p[r][q][0], vget_low_s8(lo), vget_low_s8(xl[r]));
      p[r][q][1] = vmlal_high_s8(p[r][q][1], lo, xl[r]);
      p[r][q][0] = vmlal_s8(p[r][q][0], vget_low_s8(hi), vget_low_s8(xh[r]));
      p[r][q][1] = vmlal_high_s8(p[r][q][1], hi, xh[r]);
    }
  }
}

//! pass_dotprod with chunk_neon's int16 sums, reduced to a column per int32 lane per block.
template <int R>
void pass_neon(const int8_t* xq, const float* d, const int32_t* s, int64_t k, int64_t n,
               int64_t group_size, const uint8_t* tile, const uint8_t* zeros,
               const uint16_t* scales, float* out) {
  const int64_t blocks = k / kW4A8Block, bpg = group_size / kW4A8Block;
  float32x4_t acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < k / group_size; ++g) {
    int32x4_t z[4];
    zeros_neon(zeros + 16 * g, z);
    float32x4_t a[R][4];
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) a[r][q] = vdupq_n_f32(0.0f);
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      int8x16_t x[R][2];
      int16x8_t p[R][4][2];
      for (int r = 0; r < R; ++r) {
        x[r][0] = vld1q_s8(xq + r * k + kW4A8Block * b);
        x[r][1] = vld1q_s8(xq + r * k + kW4A8Block * b + 16);
        for (int q = 0; q < 4; ++q) p[r][q][0] = p[r][q][1] = vdupq_n_s16(0);
      }
      const uint8_t* block = tile + 4 * b * 64;
      chunk_neon<R, 0>(block, x, p);
      chunk_neon<R, 1>(block + 64, x, p);
      chunk_neon<R, 2>(block + 128, x, p);
      chunk_neon<R, 3>(block + 192, x, p);
      for (int r = 0; r < R; ++r) {
        const int32x4_t sb = vdupq_n_s32(s[r * blocks + b]);
        const float32x4_t db = vdupq_n_f32(d[r * blocks + b]);
        for (int q = 0; q < 4; ++q) {
          const int32x4_t dot = vpaddq_s32(vpaddlq_s16(p[r][q][0]), vpaddlq_s16(p[r][q][1]));
          const int32x4_t D = vmlsq_s32(dot, z[q], sb);
          a[r][q] = vfmaq_f32(a[r][q], vcvtq_f32_s32(D), db);
        }
      }
    }
    float32x4_t sc[4];
    scales_neon(scales + 16 * g, sc);
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q) acc[r][q] = vfmaq_f32(acc[r][q], a[r][q], sc[q]);
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) vst1q_f32(out + r * n + 4 * q, acc[r][q]);
}

//! W8A8 chunks C and C + 1 (C even) of a block into the int32 pair sums p[r][q][h] (lanes: the
//! two halves of columns 4q + 2h, 4q + 2h + 1): w as int8 (code xor 0x80) times x. |w| <= 128 and
//! |xq| <= 127, so the two products of an int16 lane stay within +-32512 before saddlp widens.
template <int R, int C>
inline void chunk8_neon(const uint8_t* chunk, const int8x16_t (*x)[2], int32x4_t (*p)[4][2]) {
  const uint8x16_t flip = vdupq_n_u8(0x80);
  int8x16_t x0[R], x1[R];
  for (int r = 0; r < R; ++r) {
    x0[r] = broadcast4<C % 4>(x[r][C / 4]);
    x1[r] = broadcast4<(C + 1) % 4>(x[r][(C + 1) / 4]);
  }
  for (int q = 0; q < 4; ++q) {
    const int8x16_t w0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(chunk + 16 * q), flip));
    const int8x16_t w1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(chunk + 64 + 16 * q), flip));
    for (int r = 0; r < R; ++r) {
      const int16x8_t lo = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0[r])),
                                    vget_low_s8(w1), vget_low_s8(x1[r]));
      const int16x8_t hi = vmlal_high_s8(vmull_high_s8(w0, x0[r]), w1, x1[r]);
      p[r][q][0] = vpadalq_s16(p[r][q][0], lo);
      p[r][q][1] = vpadalq_s16(p[r][q][1], hi);
    }
  }
}

//! pass8_dotprod with chunk8_neon's pair sums, reduced to a row per int32 lane per block.
template <int R>
void pass8_neon(const int8_t* xq, const float* d, const int32_t* /*s*/, int64_t k,
                const uint8_t* tile, float* out, int64_t ldo) {
  const int64_t blocks = k / kW4A8Block;
  float32x4_t a[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) a[r][q] = vdupq_n_f32(0.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    int8x16_t x[R][2];
    int32x4_t p[R][4][2];
    for (int r = 0; r < R; ++r) {
      x[r][0] = vld1q_s8(xq + r * k + kW4A8Block * b);
      x[r][1] = vld1q_s8(xq + r * k + kW4A8Block * b + 16);
      for (int q = 0; q < 4; ++q) p[r][q][0] = p[r][q][1] = vdupq_n_s32(0);
    }
    const uint8_t* block = tile + 8 * b * 64;
    chunk8_neon<R, 0>(block, x, p);
    chunk8_neon<R, 2>(block + 128, x, p);
    chunk8_neon<R, 4>(block + 256, x, p);
    chunk8_neon<R, 6>(block + 384, x, p);
    for (int r = 0; r < R; ++r) {
      const float32x4_t db = vdupq_n_f32(d[r * blocks + b]);
      for (int q = 0; q < 4; ++q) {
        const int32x4_t D = vpaddq_s32(p[r][q][0], p[r][q][1]);
        a[r][q] = vfmaq_f32(a[r][q], vcvtq_f32_s32(D), db);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) vst1q_f32(out + r * ldo + 4 * q, a[r][q]);
}

}  // namespace

void tiles_neon_dotprod(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                        int64_t n, int64_t group_size, const uint8_t* codes,
                        const uint8_t* zeros, const uint16_t* scales, int64_t t0, int64_t t1,
                        float* out) {
  tiles<2, pass_dotprod<1>, pass_dotprod<2>>(xq, d, s, m, k, n, group_size, codes, zeros, scales,
                                             t0, t1, out);
}

void tiles8_neon_dotprod(const int8_t* xq, const float* d, const int32_t* s, int64_t m,
                         int64_t k, const uint8_t* codes8, int64_t t0, int64_t t1, float* out,
                         int64_t ldo) {
  tiles8<2, pass8_dotprod<1>, pass8_dotprod<2>>(xq, d, s, m, k, codes8, t0, t1, out, ldo);
}

void tiles_neon(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                int64_t n, int64_t group_size, const uint8_t* codes, const uint8_t* zeros,
                const uint16_t* scales, int64_t t0, int64_t t1, float* out) {
  tiles<2, pass_neon<1>, pass_neon<2>>(xq, d, s, m, k, n, group_size, codes, zeros, scales, t0,
                                       t1, out);
}

void tiles8_neon(const int8_t* xq, const float* d, const int32_t* s, int64_t m, int64_t k,
                 const uint8_t* codes8, int64_t t0, int64_t t1, float* out, int64_t ldo) {
  tiles8<2, pass8_neon<1>, pass8_neon<2>>(xq, d, s, m, k, codes8, t0, t1, out, ldo);
}

#endif  // aarch64

}  // namespace w4a8
}  // namespace vilau
