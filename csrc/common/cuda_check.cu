#include "common/cuda_check.h"

#include <stdexcept>
#include <string>

namespace vilau {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
  }
}

void cuda_check_launch(const char* what) { cuda_check(cudaGetLastError(), what); }

}  // namespace vilau
