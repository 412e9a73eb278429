// Bindings of csrc/sampling.
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "sampling/philox.h"
#include "sampling/sampling.h"

namespace py = pybind11;

namespace vilau {

void bind_sampling(py::module_& m) {
  m.attr("SAMPLE_MAX_VOCAB") = kSampleMaxVocab;
  m.attr("SAMPLE_WEIGHT_BITS") = kSampleWeightBits;

  m.def(
      "sample_codes_cpu",
      [](std::uintptr_t logits, std::uintptr_t codes, int64_t n_rows, int64_t vocab,
         bool with_cfg, float cfg_scale, float temperature, int64_t top_k, float top_p,
         std::uintptr_t rng, int64_t subsequence, int dtype, int num_threads) {
        const DType dt = dtype_from_code(dtype, "sample_codes_cpu dtype");
        py::gil_scoped_release release;
        sample_codes_cpu(address<const void>(logits, "logits", n_rows == 0),
                         address<int64_t>(codes, "codes", n_rows == 0), n_rows, vocab, with_cfg,
                         cfg_scale, temperature, top_k, top_p, address<const int64_t>(rng, "rng"),
                         subsequence, dt, num_threads);
      },
      "codes int64 [n] sampled from logits [2n, V] (with_cfg: guided = u + cfg_scale * (c - u) "
      "in the logits' dtype) or [n, V]: temperature, top_k (<= 0 or >= V off, 1 argmax), top_p "
      "(>= 1 off), one Philox4x32-10 draw per row keyed by rng = int64 [2] (seed, counter) and "
      "subsequence. Raises ValueError naming a row with a NaN or infinite maximum.",
      py::arg("logits"), py::arg("codes"), py::arg("n_rows"), py::arg("vocab"),
      py::arg("with_cfg"), py::arg("cfg_scale"), py::arg("temperature"), py::arg("top_k"),
      py::arg("top_p"), py::arg("rng"), py::arg("subsequence"), py::arg("dtype"),
      py::arg("num_threads"));

  m.def(
      "sample_codes_cuda",
      [](std::uintptr_t logits, std::uintptr_t codes, std::uintptr_t workspace, int64_t n_rows,
         int64_t vocab, bool with_cfg, float cfg_scale, float temperature, int64_t top_k,
         float top_p, std::uintptr_t rng, int64_t subsequence, int dtype, std::uintptr_t stream) {
#ifdef VILAU_WITH_CUDA
        const DType dt = dtype_from_code(dtype, "sample_codes_cuda dtype");
        py::gil_scoped_release release;
        sample_codes_cuda(address<const void>(logits, "logits", n_rows == 0),
                          address<int64_t>(codes, "codes", n_rows == 0),
                          address<void>(workspace, "workspace", n_rows == 0), n_rows, vocab,
                          with_cfg, cfg_scale, temperature, top_k, top_p,
                          address<const int64_t>(rng, "rng"), subsequence, dt, as_stream(stream));
#else
        (void)logits, (void)codes, (void)workspace, (void)n_rows, (void)vocab, (void)with_cfg;
        (void)cfg_scale, (void)temperature, (void)top_k, (void)top_p, (void)rng;
        (void)subsequence, (void)dtype, (void)stream;
        no_cuda("sample_codes_cuda");
#endif
      },
      "CUDA sample_codes_cpu on a stream (device addresses; rng in device memory so that a "
      "captured graph reads new values on replay). workspace: sample_workspace_bytes(n, V) "
      "bytes. A row with a NaN or infinite maximum gets code -1 (no host check).",
      py::arg("logits"), py::arg("codes"), py::arg("workspace"), py::arg("n_rows"),
      py::arg("vocab"), py::arg("with_cfg"), py::arg("cfg_scale"), py::arg("temperature"),
      py::arg("top_k"), py::arg("top_p"), py::arg("rng"), py::arg("subsequence"),
      py::arg("dtype"), py::arg("stream"));

  m.def("sample_workspace_bytes", &sample_workspace_bytes,
        "Bytes of device workspace that sample_codes_cuda needs for n rows of V logits.",
        py::arg("n_rows"), py::arg("vocab"));

  m.def(
      "philox4x32_10",
      [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
        const uint32_t ctr[4] = {c0, c1, c2, c3};
        const uint32_t key[2] = {k0, k1};
        const Philox4x32 out = philox4x32_10(ctr, key);
        return py::make_tuple(out.v[0], out.v[1], out.v[2], out.v[3]);
      },
      "The four 32-bit words of Philox4x32-10 for counter (c0..c3) and key (k0, k1), for "
      "known-answer tests of the generator the samplers use.",
      py::arg("c0"), py::arg("c1"), py::arg("c2"), py::arg("c3"), py::arg("k0"), py::arg("k1"));
}

}  // namespace vilau
