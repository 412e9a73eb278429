// Threading helpers shared by the CPU kernels (OpenMP when the build has it). Keyed on the
// compiler's _OPENMP, not on the build's VILAU_WITH_OPENMP: a file compiled with -fopenmp but
// without that define would otherwise run every parallel region's whole range on every thread.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vilau {

//! @throws std::invalid_argument "<op>: num_threads = N must be >= 1".
inline void check_num_threads(const char* op, int num_threads) {
  if (num_threads < 1) {
    throw std::invalid_argument(std::string(op) + ": num_threads = " +
                                std::to_string(num_threads) + " must be >= 1");
  }
}

//! The calling thread's contiguous share [begin, end) of @p total items inside a parallel
//! region, shares in thread order ([0, total) in a build without OpenMP).
inline void thread_share(int64_t total, int64_t* begin, int64_t* end) {
#ifdef _OPENMP
  const int64_t tid = omp_get_thread_num();
  const int64_t nth = omp_get_num_threads();
#else
  const int64_t tid = 0;
  const int64_t nth = 1;
#endif
  *begin = total * tid / nth;
  *end = total * (tid + 1) / nth;
}

}  // namespace vilau
