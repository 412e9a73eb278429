#include <stdexcept>
#include <string>

#include "w4a16/w4a16.h"

namespace vilau {

namespace {
[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }
}  // namespace

void w4a16_check_sizes(int64_t m, int64_t k, int64_t n, int64_t group_size) {
  if (m < 0) bad("w4a16: M = " + std::to_string(m) + " rows of x must be >= 0");
  if (k < 1) bad("w4a16: in_features K = " + std::to_string(k) + " must be >= 1");
  if (n < 8 || n % 8 != 0) {
    bad("w4a16: out_features N = " + std::to_string(n) +
        " must be a positive multiple of 8 (8 columns per packed int32)");
  }
  if (group_size < 1) bad("w4a16: group_size = " + std::to_string(group_size) + " must be >= 1");
  if (k % group_size != 0) {
    bad("w4a16: in_features K = " + std::to_string(k) + " is not a multiple of group_size = " +
        std::to_string(group_size));
  }
}

}  // namespace vilau
