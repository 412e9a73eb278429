// Packed AutoAWQ words to float16 weights in half2 arithmetic, shared by the CUDA W4A16 kernels.
//
// A word's nibbles j and j + 4 hold columns 2j and 2j + 1 (w4a16_pack.h), so one shift, mask and
// OR with the float16 bits of 1024 (0x6400) gives the pair {1024 + code(2j), 1024 + code(2j+1)}
// as a half2. Subtracting the zeros made the same way is exact (integers below 2048), and one
// __hmul2 by the scales rounds (code - zero) * scale to float16 once, to nearest even: the weight
// round_to_half((code - zero) * scale) that the format defines, bit for bit.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace vilau {

//! The four column pairs (0,1), (2,3), (4,5), (6,7) of a packed word as {1024 + code} half2s.
__device__ __forceinline__ void awq_word_to_half2(uint32_t word, __half2 (&out)[4]) {
  constexpr uint32_t kMask = 0x000f000fu;   // nibble j and nibble j + 4 after the shift
  constexpr uint32_t kMagic = 0x64006400u;  // float16 1024.0 in both halves
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t bits = ((word >> (4 * j)) & kMask) | kMagic;
    out[j] = *reinterpret_cast<const __half2*>(&bits);
  }
}

//! Float16 weights of one packed word: column pairs as above, from the word of zeros made by
//! awq_word_to_half2 and the 8 scales of the word's columns (4 half2, column order).
__device__ __forceinline__ void awq_dequant_word(uint32_t word, const __half2 (&zero)[4],
                                                 const __half2 (&scale)[4], __half2 (&w)[4]) {
  __half2 code[4];
  awq_word_to_half2(word, code);
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = __hmul2_rn(__hsub2(code[j], zero[j]), scale[j]);  // _rn: never fused
}

}  // namespace vilau
