#include <cmath>
#include <stdexcept>
#include <string>

#include "sampling/sampling.h"

namespace vilau {

namespace {
[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }
}  // namespace

void sample_check_args(int64_t n_rows, int64_t vocab, float temperature, float top_p,
                       int64_t subsequence) {
  if (n_rows < 0 || n_rows > kSampleMaxRows) {
    bad("sample_codes: n = " + std::to_string(n_rows) + " rows must be in [0, " +
        std::to_string(kSampleMaxRows) + "]");
  }
  if (vocab < 1 || vocab > kSampleMaxVocab) {
    bad("sample_codes: vocabulary V = " + std::to_string(vocab) + " must be in [1, " +
        std::to_string(kSampleMaxVocab) + "]");
  }
  if (!(temperature > 0.0f) || std::isinf(temperature)) {
    bad("sample_codes: temperature = " + std::to_string(temperature) +
        " must be > 0 and finite (use top_k = 1 for greedy)");
  }
  if (!(top_p > 0.0f)) {
    bad("sample_codes: top_p = " + std::to_string(top_p) + " must be in (0, 1] (>= 1: off)");
  }
  if (subsequence < 0 || subsequence > 0xffffffffLL) {
    bad("sample_codes: subsequence = " + std::to_string(subsequence) +
        " must fit in 32 unsigned bits");
  }
}

size_t sample_workspace_bytes(int64_t n_rows, int64_t vocab) {
  const size_t count = static_cast<size_t>(n_rows) * static_cast<size_t>(vocab);
  const size_t keys = (count * sizeof(uint32_t) + 15) / 16 * 16;
  return keys + count * sizeof(uint64_t);
}

}  // namespace vilau
