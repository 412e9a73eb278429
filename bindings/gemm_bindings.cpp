// Bindings of csrc/gemm.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bindings.h"
#include "common/dtype.h"
#include "gemm/gemm_f32.h"

namespace py = pybind11;

namespace vilau {

void bind_gemm(py::module_& m) {
  m.def("gemm_f32_isas", &gemm_f32_isas,
        "Instruction-set paths of the float32 GEMM (gemm_f32_cpu, gemm_w16_cpu) this machine "
        "runs, fastest first; the last is 'scalar', the reference the others return the bits of.");
  m.def(
      "gemm_f32_cpu",
      [](std::uintptr_t x, std::uintptr_t w, std::uintptr_t bias, std::uintptr_t y, int64_t m,
         int64_t k, int64_t n, int num_threads, const std::string& isa) {
        py::gil_scoped_release release;
        // Null buffers pass through: the kernel refuses them with its name ("gemm_f32: w is null").
        gemm_f32_cpu(address<const float>(x, "x", true), address<const float>(w, "w", true),
                     address<const float>(bias, "bias", true), address<float>(y, "y", true), m, k,
                     n, num_threads, isa);
      },
      "y[M, N] = x[M, K] @ W[N, K]^T + bias[N] (float32, contiguous; bias 0 for none), any "
      "M, K, N >= 1; each output one fused multiply-add chain over k in order, then + bias "
      "(csrc/gemm/gemm_f32.h). isa: an entry of gemm_f32_isas() or 'auto'.",
      py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("m"), py::arg("k"),
      py::arg("n"), py::arg("num_threads"), py::arg("isa") = "auto");
  m.def(
      "gemm_w16_cpu",
      [](std::uintptr_t x, std::uintptr_t w, int w_dtype, std::uintptr_t bias, std::uintptr_t y,
         int64_t m, int64_t k, int64_t n, int num_threads, const std::string& isa) {
        const DType dt = dtype_from_code(w_dtype, "gemm_w16_cpu w_dtype");
        py::gil_scoped_release release;
        gemm_w16_cpu(address<const float>(x, "x", true), address<const uint16_t>(w, "w", true),
                     dt, address<const float>(bias, "bias", true), address<float>(y, "y", true),
                     m, k, n, num_threads, isa);
      },
      "gemm_f32_cpu with W [N, K] in 16 bits (w_dtype 1 = float16, 2 = bfloat16): exactly the "
      "bits of gemm_f32_cpu on W.float() (each weight is widened when W is packed, which is "
      "exact). Sizes, threads and isa as gemm_f32_cpu.",
      py::arg("x"), py::arg("w"), py::arg("w_dtype"), py::arg("bias"), py::arg("y"), py::arg("m"),
      py::arg("k"), py::arg("n"), py::arg("num_threads"), py::arg("isa") = "auto");
  m.def(
      "gemm_awq_cpu",
      [](std::uintptr_t x, std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k, int64_t n,
         int64_t group_size, int num_threads, const std::string& isa) {
        py::gil_scoped_release release;
        gemm_awq_cpu(address<const float>(x, "x", true),
                     address<const int32_t>(qweight, "qweight", true),
                     address<const int32_t>(qzeros, "qzeros", true),
                     address<const uint16_t>(scales, "scales", true),
                     address<const float>(bias, "bias", true), address<float>(y, "y", true), m, k,
                     n, group_size, num_threads, isa);
      },
      "y[M, N] = x[M, K] @ W_T[K, N] + bias[N] with W_T in the AutoAWQ GEMM format (qweight "
      "int32 [K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N]; x, bias, y float32; all "
      "contiguous; bias 0 for none): the bits of gemm_f32_cpu on the float16-exact dequantized "
      "weights, dequantized while packed. Threads and isa as gemm_f32_cpu.",
      py::arg("x"), py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"),
      py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("num_threads"), py::arg("isa") = "auto");
}

}  // namespace vilau
