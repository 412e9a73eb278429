// Shared helpers of the pybind11 bindings: buffers arrive as integer addresses.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef VILAU_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace vilau {

//! A buffer address from Python (tensor.data_ptr()); 0 is rejected unless @p may_be_null.
//! @throws std::invalid_argument naming @p name.
template <class T>
T* address(std::uintptr_t value, const char* name, bool may_be_null = false) {
  if (value == 0 && !may_be_null) {
    throw std::invalid_argument(std::string(name) + ": null buffer address");
  }
  return reinterpret_cast<T*>(value);
}

#ifdef VILAU_WITH_CUDA
//! A cudaStream_t from Python (torch.cuda.Stream.cuda_stream; 0 = legacy default stream).
inline cudaStream_t as_stream(std::uintptr_t value) {
  return reinterpret_cast<cudaStream_t>(value);
}
#endif

//! The error of a CUDA entry point in a build without CUDA kernels.
[[noreturn]] inline void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": vilau_rt._C was built without CUDA kernels (no nvcc found or "
                           "VILAU_RT_CUDA=0); rebuild with a CUDA toolkit: pip install -e .");
}

void bind_decode(pybind11::module_& m);
void bind_gemm(pybind11::module_& m);
void bind_gemv(pybind11::module_& m);
void bind_rvq(pybind11::module_& m);
void bind_w4a16(pybind11::module_& m);
void bind_w4a8(pybind11::module_& m);
void bind_sampling(pybind11::module_& m);

}  // namespace vilau
