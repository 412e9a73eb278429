// float16 / bfloat16 <-> float32 in CUDA device code, and a host-side dtype dispatcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>
#include <string>

#include "common/dtype.h"

namespace vilau {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

//! @p v rounded to the nearest float16 value, as float32 (AutoAWQ dequantizes in fp16).
__device__ __forceinline__ float round_to_half(float v) { return __half2float(__float2half_rn(v)); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

//! Calls @p fn with a value of the CUDA type of @p dtype (float, __half or __nv_bfloat16).
template <class Fn>
void dispatch_float_cuda(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      fn(float{});
      return;
    case DType::kFloat16:
      fn(__half{});
      return;
    case DType::kBFloat16:
      fn(__nv_bfloat16{});
      return;
  }
  throw std::invalid_argument("dtype code " + std::to_string(static_cast<int>(dtype)) +
                              " is not supported (float32, float16, bfloat16)");
}

}  // namespace vilau
