// vilau_rt._C: the torch-free kernels of vilau_rt, callable on raw buffer addresses.
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"

namespace py = pybind11;

namespace {

bool with_cuda() {
#ifdef VILAU_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool with_cublas() {
#ifdef VILAU_WITH_CUBLAS
  return true;
#else
  return false;
#endif
}

bool with_openmp() {
#ifdef VILAU_WITH_OPENMP
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef VILAU_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "Native kernels of vilau_rt (RVQ, W4A16, W4A8, float GEMV, sampling), torch-free. Functions take buffer "
      "addresses (tensor.data_ptr()), sizes and a dtype code (0 float32, 1 float16, 2 "
      "bfloat16); CPU entry points take a thread count, CUDA ones a cudaStream_t as an int. Use "
      "the torch ops in vilau_rt.ops / vilau_rt.native_ops rather than calling these directly.";

  m.def(
      "build_info",
      []() {
        py::dict info;
        info["cuda"] = with_cuda();
        info["cuda_archs"] = VILAU_CUDA_ARCHS;
        info["cublas"] = with_cublas();
        info["openmp"] = with_openmp();
        info["version"] = VILAU_RT_VERSION;
        return info;
      },
      "How this module was built: {'cuda': CUDA kernels compiled, 'cuda_archs': comma-separated "
      "CUDA architectures ('' without CUDA), 'cublas': the CUDA W4A16 prefill GEMM runs on "
      "cuBLAS, 'openmp': CPU kernels use OpenMP, 'version': package "
      "version}.");
  m.def("cuda_device_count", &cuda_device_count,
        "Number of CUDA devices the statically linked CUDA runtime sees; 0 without a driver or "
        "in a build without CUDA. Never raises.");

  vilau::bind_decode(m);
  vilau::bind_gemm(m);
  vilau::bind_gemv(m);
  vilau::bind_rvq(m);
  vilau::bind_w4a16(m);
  vilau::bind_w4a8(m);
  vilau::bind_sampling(m);
}
