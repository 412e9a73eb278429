// Bindings of csrc/gemv.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bindings.h"
#include "common/dtype.h"
#include "gemv/gemv_f32.h"

namespace py = pybind11;

namespace vilau {

void bind_gemv(py::module_& m) {
  m.attr("GEMV_F32_MAX_M") = kGemvF32MaxM;
  m.def("gemv_f32_isas", &gemv_f32_isas,
        "Instruction-set paths of the float32 GEMV (gemv_f32_cpu, gemv_w16_cpu and gemv_w8_cpu) "
        "this machine runs, fastest first; the last is 'scalar', the reference the others return "
        "the bits of.");
  m.def(
      "gemv_f32_cpu",
      [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t y, int64_t m,
         int64_t k, int64_t n, int num_threads, const std::string& isa) {
        py::gil_scoped_release release;
        gemv_f32_cpu(address<const float>(x, "x"), address<const float>(w, "w"),
                     address<const float>(bias, "bias", true), address<float>(y, "y"), m, k, n,
                     num_threads, isa);
      },
      "y[M, N] = x[M, K] @ W[N, K]^T + bias[N] (float32, contiguous; bias 0 for none), "
      "1 <= M <= GEMV_F32_MAX_M, K % 32 == 0. isa: an entry of gemv_f32_isas() or 'auto'.",
      py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("m"), py::arg("k"),
      py::arg("n"), py::arg("num_threads"), py::arg("isa") = "auto");
  m.def(
      "gemv_w16_cpu",
      [](std::uintptr_t x, std::uintptr_t w, int w_dtype, std::uintptr_t bias, std::uintptr_t y,
         int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
        const DType dt = dtype_from_code(w_dtype, "gemv_w16_cpu w_dtype");
        py::gil_scoped_release release;
        gemv_w16_cpu(address<const float>(x, "x"), address<const uint16_t>(w, "w"), dt,
                     address<const float>(bias, "bias", true), address<float>(y, "y"), m, k, n,
                     num_threads, isa);
      },
      "y[M, N] = x[M, K] @ W[N, K]^T + bias[N] with W in 16 bits (w_dtype 1 = float16, "
      "2 = bfloat16; x, bias, y float32; all contiguous; bias 0 for none): exactly the bits of "
      "gemv_f32_cpu on W.float() (each weight is widened in registers, which is exact), reading "
      "half the bytes. Sizes, threads and isa as gemv_f32_cpu.",
      py::arg("x"), py::arg("w"), py::arg("w_dtype"), py::arg("bias"), py::arg("y"), py::arg("m"),
      py::arg("k"), py::arg("n"), py::arg("num_threads"), py::arg("isa") = "auto");
  m.def(
      "gemv_w8_cpu",
      [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t row_scale, std::uintptr_t bias,
         std::uintptr_t y, int64_t m, int64_t k, int64_t n, int num_threads,
         const std::string& isa) {
        py::gil_scoped_release release;
        // Null buffers pass through: the kernel refuses them with its name ("gemv_w8: w is null").
        gemv_w8_cpu(address<const float>(x, "x", true), address<const int8_t>(w, "w", true),
                    address<const float>(row_scale, "row_scale", true),
                    address<const float>(bias, "bias", true), address<float>(y, "y", true), m, k,
                    n, num_threads, isa);
      },
      "y[M, N] = (S * row_scale[N]) + bias[N], S = x[M, K] @ float32(W[N, K])^T with W int8 "
      "codes (x, row_scale, bias, y float32; all contiguous; bias 0 for none): S has the bits of "
      "gemv_f32_cpu on W.float() (each code is widened in registers, which is exact), the "
      "multiply and the add round once each; reads a quarter of the float32 bytes. Sizes, "
      "threads and isa as gemv_f32_cpu.",
      py::arg("x"), py::arg("w"), py::arg("row_scale"), py::arg("bias"), py::arg("y"),
      py::arg("m"), py::arg("k"), py::arg("n"), py::arg("num_threads"), py::arg("isa") = "auto");
}

}  // namespace vilau
