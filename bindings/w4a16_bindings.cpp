// Bindings of csrc/w4a16.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bindings.h"
#include "w4a16/w4a16.h"

namespace py = pybind11;

namespace vilau {

void bind_w4a16(py::module_& m) {
  m.attr("W4A16_GEMV_MAX_M") = kGemvMaxM;
  m.attr("W4A16_CUBLAS_MIN_M") = kCublasMinM;

  m.def(
      "w4a16_linear_cpu",
      [](std::uintptr_t x, std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k, int64_t n,
         int64_t group_size, int dtype, int num_threads) {
        const DType dt = dtype_from_code(dtype, "w4a16_linear_cpu dtype");
        py::gil_scoped_release release;
        w4a16_linear_cpu(address<const void>(x, "x", m == 0),
                         address<const int32_t>(qweight, "qweight"),
                         address<const int32_t>(qzeros, "qzeros"),
                         address<const void>(scales, "scales"),
                         address<const void>(bias, "bias", true), address<void>(y, "y", m == 0), m,
                         k, n, group_size, dt, num_threads);
      },
      "y[M, N] = x[M, K] @ W_T + bias on AutoAWQ GEMM buffers: qweight int32 [K, N/8], qzeros "
      "int32 [K/G, N/8], scales float16 [K/G, N], bias float16 [N] or 0. x and y share the dtype; "
      "GEMV path for M <= W4A16_GEMV_MAX_M, GEMM otherwise.",
      py::arg("x"), py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"),
      py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("dtype"), py::arg("num_threads"));

  m.def("w4a16_cpu_isas", &w4a16_cpu_isas,
        "Instruction-set paths of the CPU W4A16 GEMV this machine runs, fastest first; the last "
        "is 'scalar', the reference the others return the bits of.");

  m.def(
      "w4a16_gemv_cpu",
      [](std::uintptr_t x, std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k, int64_t n,
         int64_t group_size, int dtype, int num_threads, const std::string& isa) {
        const DType dt = dtype_from_code(dtype, "w4a16_gemv_cpu dtype");
        py::gil_scoped_release release;
        w4a16_gemv_cpu(address<const void>(x, "x", m == 0),
                       address<const int32_t>(qweight, "qweight"),
                       address<const int32_t>(qzeros, "qzeros"),
                       address<const void>(scales, "scales"),
                       address<const void>(bias, "bias", true), address<void>(y, "y", m == 0), m,
                       k, n, group_size, dt, num_threads, isa);
      },
      "The GEMV path of w4a16_linear_cpu (M <= W4A16_GEMV_MAX_M) on one instruction-set path: "
      "an entry of w4a16_cpu_isas() or 'auto' (the first).",
      py::arg("x"), py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"),
      py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("dtype"), py::arg("num_threads"), py::arg("isa") = "auto");

  m.def(
      "w4a16_dequantize_cpu",
      [](std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales, std::uintptr_t w_t,
         int64_t k, int64_t n, int64_t group_size, int dtype, int num_threads) {
        const DType dt = dtype_from_code(dtype, "w4a16_dequantize_cpu dtype");
        py::gil_scoped_release release;
        w4a16_dequantize_cpu(address<const int32_t>(qweight, "qweight"),
                             address<const int32_t>(qzeros, "qzeros"),
                             address<const void>(scales, "scales"), address<void>(w_t, "w_t"), k,
                             n, group_size, dt, num_threads);
      },
      "W_T[K, N] = (code - zero) * scale from AutoAWQ GEMM buffers, written in the given dtype.",
      py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("w_t"), py::arg("k"),
      py::arg("n"), py::arg("group_size"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "w4a16_repack_cpu",
      [](std::uintptr_t qweight, std::uintptr_t packed, int64_t k, int64_t n, int num_threads) {
        py::gil_scoped_release release;
        w4a16_repack_cpu(address<const int32_t>(qweight, "qweight"),
                         address<uint8_t>(packed, "packed"), k, n, num_threads);
      },
      "AutoAWQ qweight int32 [K, N/8] -> packed uint8 [N/8, K/32, 8, 16] (K * N / 2 bytes): byte "
      "i of (tile t, block b, column j) = code(32b + i, 8t + j) | code(32b + 16 + i, 8t + j) << 4. "
      "K must be a multiple of 32.",
      py::arg("qweight"), py::arg("packed"), py::arg("k"), py::arg("n"), py::arg("num_threads"));

  m.def("w4a16_packed_cpu_isas", &w4a16_packed_cpu_isas,
        "Instruction-set paths of the packed-layout CPU GEMV, fastest first; the last is "
        "'scalar', the reference (fma per term, fixed 32-way tree) the others return the bits of.");

  m.def(
      "w4a16_linear_packed_cpu",
      [](std::uintptr_t x, std::uintptr_t packed, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k, int64_t n,
         int64_t group_size, int dtype, int num_threads, const std::string& isa) {
        const DType dt = dtype_from_code(dtype, "w4a16_linear_packed_cpu dtype");
        py::gil_scoped_release release;
        w4a16_linear_packed_cpu(address<const void>(x, "x", m == 0),
                                address<const uint8_t>(packed, "packed"),
                                address<const int32_t>(qzeros, "qzeros"),
                                address<const void>(scales, "scales"),
                                address<const void>(bias, "bias", true),
                                address<void>(y, "y", m == 0), m, k, n, group_size, dt,
                                num_threads, isa);
      },
      "y[M, N] = x[M, K] @ W_T + bias with W_T's codes in the packed layout (w4a16_repack_cpu) "
      "and AutoAWQ qzeros / scales; group_size a multiple of 32. isa: an entry of "
      "w4a16_packed_cpu_isas() or 'auto' (the first).",
      py::arg("x"), py::arg("packed"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"),
      py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("dtype"), py::arg("num_threads"), py::arg("isa") = "auto");

  m.def(
      "w4a16_linear_cuda_workspace_bytes",
      [](int64_t m, int64_t k, int64_t n, int64_t group_size, int dtype) -> int64_t {
#ifdef VILAU_WITH_CUDA
        return w4a16_linear_cuda_workspace_bytes(
            m, k, n, group_size, dtype_from_code(dtype, "w4a16_linear_cuda_workspace_bytes dtype"));
#else
        (void)m, (void)k, (void)n, (void)group_size, (void)dtype;
        no_cuda("w4a16_linear_cuda_workspace_bytes");
#endif
      },
      "Bytes of device workspace w4a16_linear_cuda needs at full speed for these sizes on the "
      "current device (0: none).",
      py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"), py::arg("dtype"));

  m.def(
      "w4a16_linear_cuda",
      [](std::uintptr_t x, std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k, int64_t n,
         int64_t group_size, int dtype, std::uintptr_t stream, std::uintptr_t workspace,
         int64_t workspace_bytes) {
#ifdef VILAU_WITH_CUDA
        const DType dt = dtype_from_code(dtype, "w4a16_linear_cuda dtype");
        py::gil_scoped_release release;
        w4a16_linear_cuda(address<const void>(x, "x", m == 0),
                          address<const int32_t>(qweight, "qweight"),
                          address<const int32_t>(qzeros, "qzeros"),
                          address<const void>(scales, "scales"),
                          address<const void>(bias, "bias", true), address<void>(y, "y", m == 0),
                          m, k, n, group_size, dt, as_stream(stream),
                          address<void>(workspace, "workspace", true), workspace_bytes);
#else
        (void)x, (void)qweight, (void)qzeros, (void)scales, (void)bias, (void)y, (void)m, (void)k;
        (void)n, (void)group_size, (void)dtype, (void)stream, (void)workspace;
        (void)workspace_bytes;
        no_cuda("w4a16_linear_cuda");
#endif
      },
      "CUDA w4a16_linear_cpu on a stream (device addresses). workspace: device memory of "
      "workspace_bytes (see w4a16_linear_cuda_workspace_bytes; 0 runs kernels that need none).",
      py::arg("x"), py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"),
      py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("dtype"), py::arg("stream"), py::arg("workspace") = 0,
      py::arg("workspace_bytes") = 0);

  m.def(
      "w4a16_dequantize_cuda",
      [](std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales, std::uintptr_t w_t,
         int64_t k, int64_t n, int64_t group_size, int dtype, std::uintptr_t stream) {
#ifdef VILAU_WITH_CUDA
        const DType dt = dtype_from_code(dtype, "w4a16_dequantize_cuda dtype");
        py::gil_scoped_release release;
        w4a16_dequantize_cuda(address<const int32_t>(qweight, "qweight"),
                              address<const int32_t>(qzeros, "qzeros"),
                              address<const void>(scales, "scales"), address<void>(w_t, "w_t"), k,
                              n, group_size, dt, as_stream(stream));
#else
        (void)qweight, (void)qzeros, (void)scales, (void)w_t, (void)k, (void)n, (void)group_size;
        (void)dtype, (void)stream;
        no_cuda("w4a16_dequantize_cuda");
#endif
      },
      "CUDA w4a16_dequantize_cpu on a stream (device addresses).", py::arg("qweight"),
      py::arg("qzeros"), py::arg("scales"), py::arg("w_t"), py::arg("k"), py::arg("n"),
      py::arg("group_size"), py::arg("dtype"), py::arg("stream"));
}

}  // namespace vilau
