// Vectors of consecutive weights widened to float32 in registers (exact for every float16,
// bfloat16 and int8 value), for the x86-64 SIMD paths of the float GEMV (csrc/gemv) and GEMM
// (csrc/gemm): load16 (AVX-512) and load8 (AVX2 + F16C). Each carries its own target attribute,
// so a caller compiled for the same or a wider target inlines it.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)

#include <cstdint>

#include "common/float_cpu.h"
#include "common/x86_intrin.h"

namespace vilau {
namespace widen {

#define VILAU_WIDEN_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define VILAU_WIDEN_AVX2 __attribute__((target("avx2,fma,f16c")))

//! 16 consecutive weights as float32: a load, or a 16-bit or 8-bit load widened exactly.
VILAU_WIDEN_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
VILAU_WIDEN_AVX512 inline __m512 load16(const Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
VILAU_WIDEN_AVX512 inline __m512 load16(const BFloat16* p) {  // bf16 bits << 16: float32 bits
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
VILAU_WIDEN_AVX512 inline __m512 load16(const int8_t* p) {  // sign-extend to int32, convert
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(codes));
}

//! 8 consecutive weights as float32 (F16C for float16).
VILAU_WIDEN_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
VILAU_WIDEN_AVX2 inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
VILAU_WIDEN_AVX2 inline __m256 load8(const BFloat16* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
VILAU_WIDEN_AVX2 inline __m256 load8(const int8_t* p) {  // 8 bytes: no read past the weights
  const __m128i codes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
}

#undef VILAU_WIDEN_AVX512
#undef VILAU_WIDEN_AVX2

}  // namespace widen
}  // namespace vilau

#endif  // x86-64
