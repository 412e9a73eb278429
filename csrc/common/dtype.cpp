#include "common/dtype.h"

#include <stdexcept>
#include <string>

namespace vilau {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "unknown";
}

DType dtype_from_code(int code, const char* arg_name) {
  if (code < 0 || code > 2) {
    throw std::invalid_argument(std::string(arg_name) + ": dtype code " + std::to_string(code) +
                                " is not supported (0 = float32, 1 = float16, 2 = bfloat16)");
  }
  return static_cast<DType>(code);
}

}  // namespace vilau
