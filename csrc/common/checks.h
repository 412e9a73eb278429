// Argument checks shared by the CPU kernels' entry points.
#pragma once

#include <stdexcept>
#include <string>

namespace vilau {

//! @throws std::invalid_argument "<op>: <name> is null" when @p p is null.
inline void check_not_null(const char* op, const void* p, const char* name) {
  if (p == nullptr) throw std::invalid_argument(std::string(op) + ": " + name + " is null");
}

}  // namespace vilau
