// Turning CUDA errors into exceptions at the kernel boundary.
#pragma once

#include <cuda_runtime_api.h>

namespace vilau {

//! Throws std::runtime_error naming @p what when the last launch (or @p status) failed.
//! @throws std::runtime_error with cudaGetErrorString of the failure.
void cuda_check(cudaError_t status, const char* what);

//! cuda_check(cudaGetLastError(), what): call right after a kernel launch.
void cuda_check_launch(const char* what);

}  // namespace vilau
