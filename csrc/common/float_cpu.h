// float16 / bfloat16 <-> float32 on the CPU without any dependency, and a dtype dispatcher.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/dtype.h"

namespace vilau {

//! IEEE binary16 value, stored as its bit pattern.
struct Half {
  uint16_t bits;
};
//! bfloat16 value, stored as its bit pattern (the top 16 bits of a float32).
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t float_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

inline float to_float(float v) { return v; }

inline float to_float(Half h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exponent = (h.bits >> 10) & 0x1fu;
  const uint32_t mantissa = h.bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float32
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {  // inf / nan
    return bits_float(sign | 0x7f800000u | (mantissa << 13));
  }
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

inline float to_float(BFloat16 b) { return bits_float(static_cast<uint32_t>(b.bits) << 16); }

//! Every int8 value is exact in float32 (the codes of int8-quantized weights).
inline float to_float(int8_t v) { return static_cast<float>(v); }

template <class T>
T from_float(float v);

template <>
inline float from_float<float>(float v) {
  return v;
}

//! Round to nearest, ties to even (what torch's .half() does).
template <>
inline Half from_float<Half>(float v) {
  const uint32_t u = float_bits(v);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return Half{static_cast<uint16_t>(sign | 0x7e00u)};  // nan
  if (magnitude >= 0x47800000u) return Half{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 2^16
  if (magnitude < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or 0
    // Scaling by 2^24 is exact; nearbyint rounds half to even in the default mode.
    const float units = std::nearbyint(bits_float(magnitude) * 16777216.0f);
    return Half{static_cast<uint16_t>(sign | static_cast<uint16_t>(units))};
  }
  uint32_t h = ((((magnitude >> 23) - 112u) << 10) | ((magnitude >> 13) & 0x3ffu));
  const uint32_t rest = magnitude & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry may reach inf: correct
  return Half{static_cast<uint16_t>(sign | h)};
}

//! @p v rounded to the nearest float16 value (ties to even), returned as float32, for finite
//! values within the float16 range. Branch-free so that loops over it vectorize: normal halves
//! round the float32 mantissa to 10 bits in place; below 2^-14 adding 0.5 rounds to the
//! subnormal-half grid (multiples of 2^-24, the float32 ulp at 0.5).
inline float round_to_half(float v) {
  const uint32_t u = float_bits(v);
  const uint32_t sign = u & 0x80000000u;
  const uint32_t mag = u & 0x7fffffffu;
  const float normal = bits_float(sign | ((mag + 0xfffu + ((mag >> 13) & 1u)) & 0x7fffe000u));
  const float tiny = (bits_float(mag) + 0.5f) - 0.5f;
  const float subnormal = bits_float(sign | float_bits(tiny));
  return mag < 0x38800000u ? subnormal : normal;
}

//! Round to nearest, ties to even; nan stays a quiet nan.
template <>
inline BFloat16 from_float<BFloat16>(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    return BFloat16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  }
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>(rounded >> 16)};
}

//! Calls @p fn with a value of the C++ type of @p dtype (float, Half or BFloat16).
template <class Fn>
void dispatch_float(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      fn(float{});
      return;
    case DType::kFloat16:
      fn(Half{});
      return;
    case DType::kBFloat16:
      fn(BFloat16{});
      return;
  }
  throw std::invalid_argument("dtype code " + std::to_string(static_cast<int>(dtype)) +
                              " is not supported (float32, float16, bfloat16)");
}

}  // namespace vilau
