// Bindings of csrc/rvq.
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "rvq/rvq.h"

namespace py = pybind11;

namespace vilau {

void bind_rvq(py::module_& m) {
  m.attr("RVQ_ENCODE_CUDA_MAX_DIM") = kRvqEncodeCudaMaxDim;

  m.def(
      "rvq_lookup_cpu",
      [](std::uintptr_t codes, std::uintptr_t codebooks, std::uintptr_t out, int64_t n_rows,
         int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim, int dtype,
         int num_threads) {
        const DType dt = dtype_from_code(dtype, "rvq_lookup_cpu dtype");
        py::gil_scoped_release release;
        rvq_lookup_cpu(address<const int64_t>(codes, "codes"),
                       address<const void>(codebooks, "codebooks"), address<void>(out, "out"),
                       n_rows, depth, n_codebooks, codebook_rows, dim, dt, num_threads);
      },
      "out[N, C] = sum over d of codebooks[d or 0, codes[n, d]] (float32 sums). codes int64 "
      "[N, D]; codebooks [Dc, R, C] with Dc = D or 1, R = n_embed + 1 (last row padding). Raises "
      "ValueError naming the first code outside [0, n_embed).",
      py::arg("codes"), py::arg("codebooks"), py::arg("out"), py::arg("n_rows"), py::arg("depth"),
      py::arg("n_codebooks"), py::arg("codebook_rows"), py::arg("dim"), py::arg("dtype"),
      py::arg("num_threads"));

  m.def(
      "rvq_encode_cpu",
      [](std::uintptr_t features, std::uintptr_t codebooks, std::uintptr_t codes,
         std::uintptr_t z_q, int64_t n_rows, int64_t depth, int64_t n_codebooks,
         int64_t codebook_rows, int64_t dim, int64_t n_embed, int dtype, int num_threads) {
        const DType dt = dtype_from_code(dtype, "rvq_encode_cpu dtype");
        py::gil_scoped_release release;
        rvq_encode_cpu(address<const void>(features, "features"),
                       address<const void>(codebooks, "codebooks"),
                       address<int64_t>(codes, "codes"), address<void>(z_q, "z_q"), n_rows, depth,
                       n_codebooks, codebook_rows, dim, n_embed, dt, num_threads);
      },
      "Residual quantization of features [N, C] against codebooks [Dc, R = n_embed + 1, C]: "
      "writes codes int64 [N, D] (float32 argmin of the distance, ties to the smallest index, "
      "padding row never chosen) and z_q [N, C] = sum of the chosen rows.",
      py::arg("features"), py::arg("codebooks"), py::arg("codes"), py::arg("z_q"),
      py::arg("n_rows"), py::arg("depth"), py::arg("n_codebooks"), py::arg("codebook_rows"),
      py::arg("dim"), py::arg("n_embed"), py::arg("dtype"), py::arg("num_threads"));

  m.def(
      "rvq_lookup_cuda",
      [](std::uintptr_t codes, std::uintptr_t codebooks, std::uintptr_t out, int64_t n_rows,
         int64_t depth, int64_t n_codebooks, int64_t codebook_rows, int64_t dim, int dtype,
         std::uintptr_t stream) {
#ifdef VILAU_WITH_CUDA
        const DType dt = dtype_from_code(dtype, "rvq_lookup_cuda dtype");
        py::gil_scoped_release release;
        rvq_lookup_cuda(address<const int64_t>(codes, "codes"),
                        address<const void>(codebooks, "codebooks"), address<void>(out, "out"),
                        n_rows, depth, n_codebooks, codebook_rows, dim, dt, as_stream(stream));
#else
        (void)codes, (void)codebooks, (void)out, (void)n_rows, (void)depth, (void)n_codebooks;
        (void)codebook_rows, (void)dim, (void)dtype, (void)stream;
        no_cuda("rvq_lookup_cuda");
#endif
      },
      "CUDA rvq_lookup_cpu on a stream (device addresses). A row with a code outside "
      "[0, n_embed) is written as NaN (the kernel does not raise).",
      py::arg("codes"), py::arg("codebooks"), py::arg("out"), py::arg("n_rows"), py::arg("depth"),
      py::arg("n_codebooks"), py::arg("codebook_rows"), py::arg("dim"), py::arg("dtype"),
      py::arg("stream"));

  m.def(
      "rvq_encode_cuda",
      [](std::uintptr_t features, std::uintptr_t codebooks, std::uintptr_t codes,
         std::uintptr_t z_q, int64_t n_rows, int64_t depth, int64_t n_codebooks,
         int64_t codebook_rows, int64_t dim, int64_t n_embed, int dtype, std::uintptr_t stream) {
#ifdef VILAU_WITH_CUDA
        const DType dt = dtype_from_code(dtype, "rvq_encode_cuda dtype");
        py::gil_scoped_release release;
        rvq_encode_cuda(address<const void>(features, "features"),
                        address<const void>(codebooks, "codebooks"),
                        address<int64_t>(codes, "codes"), address<void>(z_q, "z_q"), n_rows,
                        depth, n_codebooks, codebook_rows, dim, n_embed, dt, as_stream(stream));
#else
        (void)features, (void)codebooks, (void)codes, (void)z_q, (void)n_rows, (void)depth;
        (void)n_codebooks, (void)codebook_rows, (void)dim, (void)n_embed, (void)dtype;
        (void)stream;
        no_cuda("rvq_encode_cuda");
#endif
      },
      "CUDA rvq_encode_cpu on a stream (device addresses); C <= RVQ_ENCODE_CUDA_MAX_DIM.",
      py::arg("features"), py::arg("codebooks"), py::arg("codes"), py::arg("z_q"),
      py::arg("n_rows"), py::arg("depth"), py::arg("n_codebooks"), py::arg("codebook_rows"),
      py::arg("dim"), py::arg("n_embed"), py::arg("dtype"), py::arg("stream"));
}

}  // namespace vilau
