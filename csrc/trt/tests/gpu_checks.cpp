// harness --gpu: each plugin's enqueue on small random inputs against the CPU references
// (the csrc CPU kernels of the native backend; depth_reference.cpp for DepthDecode).
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/float_cpu.h"
#include "rvq/rvq.h"
#include "tests/depth_reference.h"
#include "tests/harness.h"
#include "w4a16/w4a16.h"

namespace vilau::trt::test {

namespace {

using nvinfer1::DataType;
using Bytes = std::vector<unsigned char>;

size_t element_size(DataType t) {
  switch (t) {
    case DataType::kINT64:
      return 8;
    case DataType::kHALF:
    case DataType::kBF16:
      return 2;
    default:
      return 4;
  }
}

int64_t count(nvinfer1::Dims const& d) {
  int64_t v = 1;
  for (int32_t i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

template <class T>
Bytes bytes_of(std::vector<T> const& v) {
  Bytes b(v.size() * sizeof(T));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

template <class T>
std::vector<T> values_of(Bytes const& b) {
  std::vector<T> v(b.size() / sizeof(T));
  std::memcpy(v.data(), b.data(), b.size());
  return v;
}

std::vector<Half> to_half(std::vector<float> const& v) {
  std::vector<Half> h;
  for (float x : v) h.push_back(from_float<Half>(x));
  return h;
}

std::vector<float> uniform(std::mt19937& g, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(g);
  return v;
}

//! Device buffer freed on scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr, bytes ? bytes : 1) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(DeviceBuffer const&) = delete;
  DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

//! Creates the plugin, runs onShapeChange + enqueue on @p inputs, and returns the outputs.
bool run(Creators const& creators, char const* name, std::vector<char const*> const& field_names,
         std::vector<int32_t> const& fields, std::vector<TensorSpec> const& in_specs,
         std::vector<Bytes> const& inputs, std::vector<TensorSpec> const& out_specs,
         std::vector<Bytes>& outputs, Report& r) {
  std::string const tag = std::string(name) + " enqueue";
  std::unique_ptr<nvinfer1::IPluginV3> plugin(
      create_plugin(creators.at(name), field_names, fields, nvinfer1::TensorRTPhase::kRUNTIME));
  if (!r.expect(plugin != nullptr, tag + ": createPlugin")) return false;
  Capabilities const cap = capabilities(plugin.get());
  std::vector<nvinfer1::PluginTensorDesc> in_desc, out_desc;
  std::vector<nvinfer1::DynamicPluginTensorDesc> in_dyn, out_dyn;
  for (auto const* specs : {&in_specs, &out_specs}) {
    for (TensorSpec const& s : *specs) {
      nvinfer1::PluginTensorDesc d{};
      d.dims = s.dims;
      d.type = s.type;
      d.format = nvinfer1::TensorFormat::kLINEAR;
      d.scale = 1.f;
      nvinfer1::DynamicPluginTensorDesc dyn{};
      dyn.desc = d;
      dyn.min = dyn.opt = dyn.max = s.dims;
      (specs == &in_specs ? in_desc : out_desc).push_back(d);
      (specs == &in_specs ? in_dyn : out_dyn).push_back(dyn);
    }
  }
  int32_t const nb_in = static_cast<int32_t>(in_specs.size());
  int32_t const nb_out = static_cast<int32_t>(out_specs.size());
  size_t const ws_bytes = cap.build->getWorkspaceSize(in_dyn.data(), nb_in, out_dyn.data(), nb_out);
  if (!r.expect(cap.runtime->onShapeChange(in_desc.data(), nb_in, out_desc.data(), nb_out) == 0,
                tag + ": onShapeChange")) {
    return false;
  }
  std::vector<std::unique_ptr<DeviceBuffer>> in_buf, out_buf;
  std::vector<void const*> in_ptr;
  std::vector<void*> out_ptr;
  for (int32_t i = 0; i < nb_in; ++i) {
    in_buf.push_back(std::make_unique<DeviceBuffer>(inputs[i].size()));
    cudaMemcpy(in_buf.back()->ptr, inputs[i].data(), inputs[i].size(), cudaMemcpyHostToDevice);
    in_ptr.push_back(in_buf.back()->ptr);
  }
  for (int32_t i = 0; i < nb_out; ++i) {
    size_t const bytes =
        static_cast<size_t>(count(out_specs[i].dims)) * element_size(out_specs[i].type);
    out_buf.push_back(std::make_unique<DeviceBuffer>(bytes));
    out_ptr.push_back(out_buf.back()->ptr);
  }
  DeviceBuffer workspace(ws_bytes);
  cudaStream_t stream = nullptr;
  cudaStreamCreate(&stream);
  int32_t const status = cap.runtime->enqueue(in_desc.data(), out_desc.data(), in_ptr.data(),
                                              out_ptr.data(), workspace.ptr, stream);
  cudaError_t const err = cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
  if (!r.expect(
          status == 0 && err == cudaSuccess,
          tag + ": enqueue returns 0 and the stream finishes (" + cudaGetErrorString(err) + ")")) {
    return false;
  }
  outputs.clear();
  for (int32_t i = 0; i < nb_out; ++i) {
    Bytes host(static_cast<size_t>(count(out_specs[i].dims)) * element_size(out_specs[i].type));
    cudaMemcpy(host.data(), out_ptr[i], host.size(), cudaMemcpyDeviceToHost);
    outputs.push_back(std::move(host));
  }
  return true;
}

float max_abs_diff(std::vector<float> const& a, std::vector<float> const& b) {
  if (a.size() != b.size()) return INFINITY;
  float m = 0.f;
  for (size_t i = 0; i < a.size(); ++i) m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

void check_rvq(Creators const& creators, std::mt19937& g, Report& r) {
  int64_t const n = 6, depth = 4, rows = 17, c = 8, n_embed = rows - 1;
  std::vector<float> books = uniform(g, depth * rows * c, -1.f, 1.f);
  std::vector<int64_t> codes(n * depth);
  std::uniform_int_distribution<int64_t> pick(0, n_embed - 1);
  for (int64_t& code : codes) code = pick(g);
  std::vector<float> want(n * c);
  rvq_lookup_cpu(codes.data(), books.data(), want.data(), n, depth, depth, rows, c, DType::kFloat32,
                 1);
  TensorSpec const books_spec{make_dims({depth, rows, c}), DataType::kFLOAT};
  std::vector<Bytes> out;
  if (run(creators, "RVQLookup", {}, {}, {{make_dims({n, depth}), DataType::kINT64}, books_spec},
          {bytes_of(codes), bytes_of(books)}, {{make_dims({n, c}), DataType::kFLOAT}}, out, r)) {
    r.expect(max_abs_diff(values_of<float>(out[0]), want) < 1e-5f,
             "RVQLookup int64 codes equal rvq_lookup_cpu");
  }
  std::vector<int32_t> codes32(codes.begin(), codes.end());
  if (run(creators, "RVQLookup", {}, {}, {{make_dims({n, depth}), DataType::kINT32}, books_spec},
          {bytes_of(codes32), bytes_of(books)}, {{make_dims({n, c}), DataType::kFLOAT}}, out, r)) {
    r.expect(max_abs_diff(values_of<float>(out[0]), want) < 1e-5f,
             "RVQLookup int32 codes equal rvq_lookup_cpu");
  }

  int64_t const m = 10;
  std::vector<float> features = uniform(g, m * c, -1.f, 1.f);
  std::vector<int64_t> want_codes(m * depth);
  std::vector<float> want_zq(m * c);
  rvq_encode_cpu(features.data(), books.data(), want_codes.data(), want_zq.data(), m, depth, depth,
                 rows, c, n_embed, DType::kFloat32, 1);
  if (run(creators, "RVQEncode", {"n_embed", "depth"},
          {static_cast<int32_t>(n_embed), static_cast<int32_t>(depth)},
          {{make_dims({2, m / 2, c}), DataType::kFLOAT}, books_spec},
          {bytes_of(features), bytes_of(books)},
          {{make_dims({2, m / 2, depth}), DataType::kINT64},
           {make_dims({2, m / 2, c}), DataType::kFLOAT}},
          out, r)) {
    r.expect(values_of<int64_t>(out[0]) == want_codes, "RVQEncode codes equal rvq_encode_cpu");
    r.expect(max_abs_diff(values_of<float>(out[1]), want_zq) < 1e-5f,
             "RVQEncode z_q equals rvq_encode_cpu");
  }
}

void check_w4a16(Creators const& creators, std::mt19937& g, Report& r) {
  int64_t const k = 128, n = 64, group = 32;
  std::uniform_int_distribution<int32_t> word(INT32_MIN, INT32_MAX);
  std::vector<int32_t> qweight(k * n / 8), qzeros(k / group * n / 8);
  for (int32_t& w : qweight) w = word(g);
  for (int32_t& z : qzeros) z = word(g);
  std::vector<Half> scales = to_half(uniform(g, k / group * n, 0.005f, 0.02f));
  std::vector<Half> bias = to_half(uniform(g, n, -0.5f, 0.5f));
  for (int64_t m : {int64_t{3}, int64_t{20}}) {  // the GEMV and the GEMM path (kGemvMaxM = 8)
    std::vector<Half> x = to_half(uniform(g, m * k, -1.f, 1.f));
    std::vector<Half> want(m * n);
    w4a16_linear_cpu(x.data(), qweight.data(), qzeros.data(), scales.data(), bias.data(),
                     want.data(), m, k, n, group, DType::kFloat16, 1);
    std::vector<Bytes> out;
    if (!run(creators, "W4A16Gemm", {"group_size"}, {static_cast<int32_t>(group)},
             {{make_dims({m, k}), DataType::kHALF},
              {make_dims({k, n / 8}), DataType::kINT32},
              {make_dims({k / group, n / 8}), DataType::kINT32},
              {make_dims({k / group, n}), DataType::kHALF},
              {make_dims({n}), DataType::kHALF}},
             {bytes_of(x), bytes_of(qweight), bytes_of(qzeros), bytes_of(scales), bytes_of(bias)},
             {{make_dims({m, n}), DataType::kHALF}}, out, r)) {
      continue;
    }
    std::vector<Half> const got = values_of<Half>(out[0]);
    float worst = 0.f;
    for (size_t i = 0; i < got.size(); ++i) {
      float const a = to_float(got[i]), b = to_float(want[i]);
      worst = std::fmax(worst, std::fabs(a - b) / (1.f + std::fabs(b)));
    }
    r.expect(worst < 1e-2f, "W4A16Gemm M = " + std::to_string(m) +
                                " matches w4a16_linear_cpu (worst relative error " +
                                std::to_string(worst) + ")");
  }
}

void check_depth(Creators const& creators, std::mt19937& g, Report& r) {
  DepthDecodeSizes s;
  s.n = 2, s.llm_dim = 16, s.embed_dim = 32, s.n_layer = 2, s.n_head = 4, s.depth = 4;
  s.n_codebooks = 4, s.codebook_rows = 51, s.code_dim = 8;
  int64_t const rows = 2 * s.n, v = s.codebook_rows - 1;
  DepthWeightOffsets const o = depth_weight_offsets(s);
  std::vector<float> weights = uniform(g, o.total, -0.3f, 0.3f);
  for (int64_t l = 0; l < s.n_layer; ++l) {  // LayerNorm gains near 1, as trained ones are
    int64_t const b = o.blocks + l * o.block.size;
    for (int64_t at : {b + o.block.ln1_w, b + o.block.ln2_w}) {
      for (int64_t i = 0; i < s.embed_dim; ++i) weights[at + i] += 1.f;
    }
  }
  for (int64_t i = 0; i < s.embed_dim; ++i) weights[o.cls_ln_w + i] += 1.f;
  std::vector<float> hidden = uniform(g, rows * s.llm_dim, -1.f, 1.f);
  std::vector<float> books = uniform(g, s.n_codebooks * s.codebook_rows * s.code_dim, -1.f, 1.f);
  std::vector<int64_t> forced(s.n * s.depth, -1);
  forced[1 * s.depth + 2] = 5;  // teacher forcing of one code

  struct Mode {
    char const* name;
    DepthSampling sampling;
    int64_t seed;
    DataType type;  //!< of hidden, weights and codebooks
  };
  for (Mode const& mode :
       {Mode{"float32 greedy", {3.f, 1.f, 1, 1.f}, 7, DataType::kFLOAT},
        Mode{"float32 top-k 10 / top-p 0.9", {3.f, 1.f, 10, 0.9f}, 123, DataType::kFLOAT},
        Mode{"float16 greedy", {3.f, 1.f, 1, 1.f}, 7, DataType::kHALF}}) {
    bool const half = mode.type == DataType::kHALF;
    // float16 inputs: the reference runs in float32 on the same (rounded) values, as the
    // kernels do after loading them
    auto rounded = [half](std::vector<float> v) {
      if (half) {
        for (float& x : v) x = to_float(from_float<Half>(x));
      }
      return v;
    };
    auto as_bytes = [half](std::vector<float> const& v) {
      return half ? bytes_of(to_half(v)) : bytes_of(v);
    };
    std::vector<float> const h = rounded(hidden), w = rounded(weights), b = rounded(books);
    std::vector<int64_t> want_codes(s.n * s.depth);
    std::vector<float> want_logits(s.depth * rows * v);
    depth_decode_reference(h.data(), w.data(), b.data(), mode.seed, forced.data(),
                           want_codes.data(), want_logits.data(), s, mode.sampling);
    std::vector<Bytes> out;
    TensorSpec const f32{make_dims({}), DataType::kFLOAT}, i64{make_dims({}), DataType::kINT64};
    bool const ok = run(creators, "DepthDecode", {"n_layer", "n_head", "embed_dim", "depth"},
                        {static_cast<int32_t>(s.n_layer), static_cast<int32_t>(s.n_head),
                         static_cast<int32_t>(s.embed_dim), static_cast<int32_t>(s.depth)},
                        {{make_dims({rows, s.llm_dim}), mode.type},
                         {make_dims({o.total}), mode.type},
                         {make_dims({s.n_codebooks, s.codebook_rows, s.code_dim}), mode.type},
                         f32,
                         f32,
                         i64,
                         f32,
                         i64,
                         {make_dims({s.n, s.depth}), DataType::kINT64}},
                        {as_bytes(h), as_bytes(w), as_bytes(b),
                         bytes_of(std::vector<float>{mode.sampling.cfg_scale}),
                         bytes_of(std::vector<float>{mode.sampling.temperature}),
                         bytes_of(std::vector<int64_t>{mode.sampling.top_k}),
                         bytes_of(std::vector<float>{mode.sampling.top_p}),
                         bytes_of(std::vector<int64_t>{mode.seed}), bytes_of(forced)},
                        {{make_dims({s.n, s.depth}), DataType::kINT64},
                         {make_dims({s.depth, rows, v}), DataType::kFLOAT}},
                        out, r);
    if (!ok) continue;
    std::vector<int64_t> const codes = values_of<int64_t>(out[0]);
    std::string got_s, want_s;
    for (size_t i = 0; i < codes.size(); ++i) {
      got_s += std::to_string(codes[i]) + " ";
      want_s += std::to_string(want_codes[i]) + " ";
    }
    r.expect(codes == want_codes, std::string("DepthDecode ") + mode.name +
                                      " codes equal the CPU reference: got " + got_s + "want " +
                                      want_s);
    float const diff = max_abs_diff(values_of<float>(out[1]), want_logits);
    r.expect(diff < 1e-3f, std::string("DepthDecode ") + mode.name +
                               " logits match the CPU reference (max abs diff " +
                               std::to_string(diff) + ")");
  }
}

}  // namespace

bool run_gpu_checks(Creators const& creators, Report& r) {
  int devices = 0;
  cudaError_t const err = cudaGetDeviceCount(&devices);
  if (!r.expect(err == cudaSuccess && devices > 0,
                std::string("--gpu needs a CUDA device: ") + cudaGetErrorString(err))) {
    return false;
  }
  std::mt19937 g(1234);
  check_rvq(creators, g, r);
  check_w4a16(creators, g, r);
  check_depth(creators, g, r);
  return true;
}

}  // namespace vilau::trt::test
