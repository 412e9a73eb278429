#include <stdexcept>
#include <string>

#include "rvq/rvq.h"

namespace vilau {

namespace {
[[noreturn]] void bad(const std::string& message) { throw std::invalid_argument(message); }
}  // namespace

void rvq_check_sizes(int64_t n_rows, int64_t depth, int64_t n_codebooks, int64_t codebook_rows,
                     int64_t dim) {
  if (n_rows < 0) bad("rvq: number of rows N = " + std::to_string(n_rows) + " must be >= 0");
  if (depth < 1) bad("rvq: depth D = " + std::to_string(depth) + " must be >= 1");
  if (n_codebooks != depth && n_codebooks != 1) {
    bad("rvq: codebooks has " + std::to_string(n_codebooks) +
        " codebooks; expected one per depth (D = " + std::to_string(depth) +
        ") or 1 shared codebook");
  }
  if (codebook_rows < 2) {
    bad("rvq: codebooks has " + std::to_string(codebook_rows) +
        " rows per codebook; expected n_embed + 1 >= 2 (the last row is padding)");
  }
  if (dim < 1) bad("rvq: embedding width C = " + std::to_string(dim) + " must be >= 1");
}

}  // namespace vilau
