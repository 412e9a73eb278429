// Small element-wise conversions the plugins need around the csrc kernels.
#pragma once

#include <cstdint>

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>

namespace vilau {

//! dst[i] = src[i] for i < count (int32 codes -> the int64 codes rvq_lookup_cuda reads).
//! @throws std::runtime_error if the launch fails.
void int32_to_int64_cuda(int32_t const* src, int64_t* dst, int64_t count, cudaStream_t stream);

}  // namespace vilau
#endif
