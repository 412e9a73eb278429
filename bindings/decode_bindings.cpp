// Bindings of csrc/decode.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "bindings/bindings.h"
#include "common/dtype.h"
#include "decode/llama_decode.h"

namespace py = pybind11;

namespace vilau {

void bind_decode(py::module_& m) {
  py::class_<DecodeLinear>(m, "DecodeLinear",
                           "One linear of a LlamaDecoder layer (buffer addresses, not owned).")
      .def_static(
          "float32",
          [](std::uintptr_t weight, std::uintptr_t bias, int64_t n, int64_t k) {
            DecodeLinear lin;
            lin.kind = DecodeLinear::Kind::kFloat32;
            lin.n = n;
            lin.k = k;
            lin.weight = address<const float>(weight, "weight");
            lin.bias = address<const float>(bias, "bias", true);
            return lin;
          },
          "float32 weight [N, K] (torch.nn.Linear), bias float32 [N] or 0.", py::arg("weight"),
          py::arg("bias"), py::arg("n"), py::arg("k"))
      .def_static(
          "w16",
          [](std::uintptr_t weight, int w_dtype, std::uintptr_t bias, int64_t n, int64_t k) {
            DecodeLinear lin;
            lin.kind = DecodeLinear::Kind::kW16;
            lin.n = n;
            lin.k = k;
            lin.weight16 = address<const uint16_t>(weight, "weight");
            lin.w16_dtype = dtype_from_code(w_dtype, "DecodeLinear.w16 w_dtype");
            lin.bias = address<const float>(bias, "bias", true);
            return lin;
          },
          "float16 / bfloat16 weight [N, K] (w_dtype: the dtype code, 1 or 2), read by the "
          "16-bit GEMV (the bits of float32 on its upcast); bias float32 [N] or 0.",
          py::arg("weight"), py::arg("w_dtype"), py::arg("bias"), py::arg("n"), py::arg("k"))
      .def_static(
          "w4a16_packed",
          [](std::uintptr_t packed, std::uintptr_t qzeros, std::uintptr_t scales,
             std::uintptr_t bias, int64_t n, int64_t k, int64_t group_size) {
            DecodeLinear lin;
            lin.kind = DecodeLinear::Kind::kW4A16Packed;
            lin.n = n;
            lin.k = k;
            lin.packed = address<const uint8_t>(packed, "packed");
            lin.qzeros = address<const int32_t>(qzeros, "qzeros");
            lin.scales = address<const void>(scales, "scales");
            lin.bias16 = address<const void>(bias, "bias", true);
            lin.group_size = group_size;
            return lin;
          },
          "The packed W4A16 layout (w4a16_repack_cpu), qzeros int32 [K/G, N/8], scales float16 "
          "[K/G, N], bias float16 [N] or 0.",
          py::arg("packed"), py::arg("qzeros"), py::arg("scales"), py::arg("bias"), py::arg("n"),
          py::arg("k"), py::arg("group_size"))
      .def_static(
          "w4a8",
          [](std::uintptr_t codes, std::uintptr_t zeros, std::uintptr_t scales,
             std::uintptr_t bias, int64_t n, int64_t k, int64_t group_size) {
            DecodeLinear lin;
            lin.kind = DecodeLinear::Kind::kW4A8;
            lin.n = n;
            lin.k = k;
            lin.packed = address<const uint8_t>(codes, "codes");
            lin.zeros8 = address<const uint8_t>(zeros, "zeros");
            lin.scales = address<const void>(scales, "scales");
            lin.bias16 = address<const void>(bias, "bias", true);
            lin.group_size = group_size;
            return lin;
          },
          "The W4A8 layout (w4a8_repack_cpu, csrc/w4a8/w4a8.h): codes, zeros uint8 [N/16, K/G, "
          "16], scales float16 [N/16, K/G, 16], bias float16 [N] or 0. int8 activations: an "
          "approximation of the W4A16 layer.",
          py::arg("codes"), py::arg("zeros"), py::arg("scales"), py::arg("bias"), py::arg("n"),
          py::arg("k"), py::arg("group_size"))
      .def_property_readonly("n", [](const DecodeLinear& l) { return l.n; })
      .def_property_readonly("k", [](const DecodeLinear& l) { return l.k; });

  py::class_<LlamaDecoder>(m, "LlamaDecoder",
                           "A LLaMA decode step (T = 1) on the CPU, every layer in one call; see "
                           "csrc/decode/llama_decode.h. Holds addresses: the caller keeps the "
                           "weights and caches alive.")
      .def(py::init([](int64_t hidden, int64_t heads, int64_t kv_heads, int64_t head_dim,
                       int64_t intermediate, float eps, std::uintptr_t final_norm) {
             LlamaDecodeShape shape{hidden, heads, kv_heads, head_dim, intermediate, eps};
             return new LlamaDecoder(shape, address<const float>(final_norm, "final_norm"));
           }),
           py::arg("hidden"), py::arg("heads"), py::arg("kv_heads"), py::arg("head_dim"),
           py::arg("intermediate"), py::arg("eps"), py::arg("final_norm"))
      .def(
          "add_layer",
          [](LlamaDecoder& self, std::uintptr_t input_norm, std::uintptr_t post_norm,
             const std::vector<DecodeLinear>& qkv, const DecodeLinear& o,
             const std::vector<DecodeLinear>& gate_up, const DecodeLinear& down) {
            LlamaDecodeLayer layer;
            layer.input_norm = address<const float>(input_norm, "input_norm");
            layer.post_norm = address<const float>(post_norm, "post_norm");
            layer.qkv = qkv;
            layer.o = o;
            layer.gate_up = gate_up;
            layer.down = down;
            self.add_layer(layer);
          },
          "qkv: [q/k/v] or [q, k, v]; gate_up: [gate/up] or [gate, up] (rows side by side).",
          py::arg("input_norm"), py::arg("post_norm"), py::arg("qkv"), py::arg("o"),
          py::arg("gate_up"), py::arg("down"))
      .def(
          "set_cache",
          [](LlamaDecoder& self, int64_t layer, std::uintptr_t k, std::uintptr_t v, int64_t batch,
             int64_t capacity) {
            self.set_cache(layer, address<float>(k, "k"), address<float>(v, "v"), batch, capacity);
          },
          py::arg("layer"), py::arg("k"), py::arg("v"), py::arg("batch"), py::arg("capacity"))
      .def_property_readonly("max_batch", &LlamaDecoder::max_batch)
      .def_property_readonly("num_layers", &LlamaDecoder::num_layers)
      .def(
          "step",
          [](LlamaDecoder& self, std::uintptr_t x, std::uintptr_t out, int64_t batch,
             std::uintptr_t cos, std::uintptr_t sin, std::uintptr_t valid, int64_t valid_stride,
             int64_t slot, int num_threads) {
            py::gil_scoped_release release;
            self.step(address<const float>(x, "x"), address<float>(out, "out"), batch,
                      address<const float>(cos, "cos"), address<const float>(sin, "sin"),
                      address<const uint8_t>(valid, "valid"), valid_stride, slot, num_threads);
          },
          "x, out float32 [batch, hidden]; cos, sin float32 [batch, head_dim]; valid bool "
          "[batch, valid_stride]; one token per sequence at cache slot `slot`.",
          py::arg("x"), py::arg("out"), py::arg("batch"), py::arg("cos"), py::arg("sin"),
          py::arg("valid"), py::arg("valid_stride"), py::arg("slot"), py::arg("num_threads"));
}

}  // namespace vilau
