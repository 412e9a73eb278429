// Element types of the float tensors that cross the kernel boundary.
#pragma once

#include <cstdint>

namespace vilau {

//! Float element type of a buffer. The integer values are the dtype codes that
//! vilau_rt/ops.py passes through the bindings; keep both in step.
enum class DType : int {
  kFloat32 = 0,   //!< IEEE float32
  kFloat16 = 1,   //!< IEEE float16 (binary16)
  kBFloat16 = 2,  //!< bfloat16 (top half of a float32)
};

//! Name of a dtype for error messages ("float32", "float16", "bfloat16").
const char* dtype_name(DType dtype);

//! Converts a dtype code from Python.
//! @throws std::invalid_argument naming @p arg_name when @p code is not a DType value.
DType dtype_from_code(int code, const char* arg_name);

}  // namespace vilau
