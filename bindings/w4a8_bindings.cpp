// Bindings of csrc/w4a8.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "w4a8/w4a8.h"

namespace py = pybind11;

namespace vilau {

void bind_w4a8(py::module_& m) {
  m.attr("W4A8_BLOCK") = kW4A8Block;

  m.def(
      "w4a8_repack_cpu",
      [](std::uintptr_t qweight, std::uintptr_t qzeros, std::uintptr_t scales,
         std::uintptr_t codes, std::uintptr_t zeros, std::uintptr_t scales_out, int64_t k,
         int64_t n, int64_t group_size, int num_threads) {
        py::gil_scoped_release release;
        w4a8_repack_cpu(address<const int32_t>(qweight, "qweight"),
                        address<const int32_t>(qzeros, "qzeros"),
                        address<const uint16_t>(scales, "scales"), address<uint8_t>(codes, "codes"),
                        address<uint8_t>(zeros, "zeros"),
                        address<uint16_t>(scales_out, "scales_out"), k, n, group_size,
                        num_threads);
      },
      "AutoAWQ qweight int32 [K, N/8], qzeros int32 [K/G, N/8], scales float16 [K/G, N] -> codes "
      "uint8 [N/16, K/8, 16, 4], zeros uint8 [N/16, K/G, 16], scales float16 [N/16, K/G, 16] "
      "(csrc/w4a8/w4a8.h).",
      py::arg("qweight"), py::arg("qzeros"), py::arg("scales"), py::arg("codes"), py::arg("zeros"),
      py::arg("scales_out"), py::arg("k"), py::arg("n"), py::arg("group_size"),
      py::arg("num_threads"));

  m.def(
      "w4a8_quantize_x",
      [](std::uintptr_t x, std::uintptr_t xq, std::uintptr_t d, std::uintptr_t s, int64_t m,
         int64_t k) {
        py::gil_scoped_release release;
        w4a8_quantize_x(address<const float>(x, "x", m == 0), address<int8_t>(xq, "xq", m == 0),
                        address<float>(d, "d", m == 0), address<int32_t>(s, "s", m == 0), m, k);
      },
      "x float32 [M, K] -> xq int8 [M, K], d float32 [M, K/32], s int32 [M, K/32].",
      py::arg("x"), py::arg("xq"), py::arg("d"), py::arg("s"), py::arg("m"), py::arg("k"));

  m.def("w4a8_cpu_isas", &w4a8_cpu_isas,
        "Instruction-set paths of the CPU W4A8 GEMV this machine runs, fastest first; the last is "
        "'scalar', the reference the others return the bits of.");

  m.def(
      "w4a8_gemv_cpu",
      [](std::uintptr_t xq, std::uintptr_t d, std::uintptr_t s, std::uintptr_t codes,
         std::uintptr_t zeros, std::uintptr_t scales, std::uintptr_t bias, std::uintptr_t y,
         int64_t m, int64_t k, int64_t n, int64_t group_size, int num_threads,
         const std::string& isa) {
        py::gil_scoped_release release;
        w4a8_gemv_cpu(address<const int8_t>(xq, "xq", m == 0), address<const float>(d, "d", m == 0),
                      address<const int32_t>(s, "s", m == 0),
                      address<const uint8_t>(codes, "codes"),
                      address<const uint8_t>(zeros, "zeros"),
                      address<const uint16_t>(scales, "scales"),
                      address<const uint16_t>(bias, "bias", true), address<float>(y, "y", m == 0),
                      m, k, n, group_size, num_threads, isa);
      },
      "y float32 [M, N] from quantized activations and repacked weights (w4a8.h); bias float16 "
      "[N] or 0; isa an entry of w4a8_cpu_isas() or 'auto'.",
      py::arg("xq"), py::arg("d"), py::arg("s"), py::arg("codes"), py::arg("zeros"),
      py::arg("scales"), py::arg("bias"), py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"),
      py::arg("group_size"), py::arg("num_threads"), py::arg("isa") = "auto");

  m.def(
      "w8a8_repack_cpu",
      [](std::uintptr_t w, std::uintptr_t codes8, int64_t n, int64_t k, int num_threads) {
        py::gil_scoped_release release;
        w8a8_repack_cpu(address<const int8_t>(w, "w"), address<uint8_t>(codes8, "codes8"), n, k,
                        num_threads);
      },
      "int8 codes [N, K] -> codes8 uint8 [ceil(N/16), K/4, 16, 4] (w + 128; padding rows 128).",
      py::arg("w"), py::arg("codes8"), py::arg("n"), py::arg("k"), py::arg("num_threads"));

  m.def(
      "w8a8_gemv_cpu",
      [](std::uintptr_t xq, std::uintptr_t d, std::uintptr_t s, std::uintptr_t codes8,
         std::uintptr_t scale, std::uintptr_t bias, std::uintptr_t y, int64_t m, int64_t k,
         int64_t n, int num_threads, const std::string& isa) {
        py::gil_scoped_release release;
        w8a8_gemv_cpu(address<const int8_t>(xq, "xq", m == 0), address<const float>(d, "d", m == 0),
                      address<const int32_t>(s, "s", m == 0),
                      address<const uint8_t>(codes8, "codes8"),
                      address<const float>(scale, "scale"),
                      address<const float>(bias, "bias", true), address<float>(y, "y", m == 0), m,
                      k, n, num_threads, isa);
      },
      "y float32 [M, N] from quantized activations and codes8 (w8a8_repack_cpu); scale float32 "
      "[N] per row, bias float32 [N] or 0; isa an entry of w4a8_cpu_isas() or 'auto'.",
      py::arg("xq"), py::arg("d"), py::arg("s"), py::arg("codes8"), py::arg("scale"),
      py::arg("bias"), py::arg("y"), py::arg("m"), py::arg("k"), py::arg("n"),
      py::arg("num_threads"), py::arg("isa") = "auto");
}

}  // namespace vilau
