// Plugin harness: dlopens libvilau_trt_plugins.so and checks, without TensorRT and without a
// GPU: the creators (names, versions, namespaces, fields), createPlugin from fields, each
// plugin's build methods (output count, types, shapes through a fake IExprBuilder, format
// combinations, shape checks) and the serialise -> createPlugin round trip.
//   harness <path/to/libvilau_trt_plugins.so> [--gpu]
// --gpu additionally enqueues every plugin on small random inputs and compares with the CPU
// references (gpu_checks.cpp). Exit status 0 when every check passed.
#include "tests/harness.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "shape_rules.h"
#include "tests/fake_expr_builder.h"

namespace vilau::trt::test {

using nvinfer1::DataType;
using nvinfer1::Dims;

bool Report::expect(bool ok, std::string const& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s\n", what.c_str());
  }
  return ok;
}

Dims make_dims(std::initializer_list<int64_t> extents) {
  Dims d{};
  d.nbDims = static_cast<int32_t>(extents.size());
  int32_t i = 0;
  for (int64_t e : extents) d.d[i++] = e;
  return d;
}

std::string to_string(Dims const& dims) {
  std::string s = "[";
  for (int32_t i = 0; i < dims.nbDims; ++i) s += (i ? ", " : "") + std::to_string(dims.d[i]);
  return s + "]";
}

bool same_dims(Dims const& a, Dims const& b) {
  if (a.nbDims != b.nbDims) return false;
  for (int32_t i = 0; i < a.nbDims; ++i) {
    if (a.d[i] != b.d[i]) return false;
  }
  return true;
}

nvinfer1::IPluginV3* create_plugin(nvinfer1::IPluginCreatorV3One* creator,
                                   std::vector<char const*> const& names,
                                   std::vector<int32_t> const& values,
                                   nvinfer1::TensorRTPhase phase) {
  std::vector<nvinfer1::PluginField> fields;
  for (size_t i = 0; i < names.size(); ++i) {
    fields.emplace_back(names[i], &values[i], nvinfer1::PluginFieldType::kINT32, 1);
  }
  nvinfer1::PluginFieldCollection fc{};
  fc.nbFields = static_cast<int32_t>(fields.size());
  fc.fields = fields.data();
  return creator->createPlugin("node", &fc, phase);
}

Capabilities capabilities(nvinfer1::IPluginV3* plugin) {
  using nvinfer1::PluginCapabilityType;
  Capabilities c;
  c.core = static_cast<nvinfer1::IPluginV3OneCore*>(
      plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
  c.build = static_cast<nvinfer1::IPluginV3OneBuild*>(
      plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  c.runtime = static_cast<nvinfer1::IPluginV3OneRuntime*>(
      plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  return c;
}

int64_t depth_weights_for(int64_t e, int64_t layers, int64_t depth, int64_t c, int64_t h,
                          int64_t v) {
  return depth_weight_count(e, layers, depth, c, h, v);
}

namespace {

//! Prints the plugins' log lines and keeps the last error for the negative checks.
class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    if (severity <= Severity::kWARNING) {
      std::printf("  log: %s\n", msg);
      if (severity <= Severity::kERROR) mLastError = msg;
    }
  }
  std::string take_error() {
    std::string e;
    e.swap(mLastError);
    return e;
  }

 private:
  std::string mLastError;
};

class LoggerFinder final : public nvinfer1::ILoggerFinder {
 public:
  explicit LoggerFinder(Logger* logger) : mLogger(logger) {}
  nvinfer1::ILogger* findLogger() override { return mLogger; }

 private:
  Logger* mLogger;
};

Logger gLogger;
LoggerFinder gFinder(&gLogger);

//! One plugin configuration and the output it must declare.
struct Case {
  char const* plugin;
  std::vector<char const*> field_names;
  std::vector<int32_t> fields;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

std::vector<Case> cases(DataType t) {
  constexpr DataType kI64 = DataType::kINT64, kI32 = DataType::kINT32, kF32 = DataType::kFLOAT;
  int64_t const p = depth_weights_for(32, 2, 4, 8, 16, 50);
  TensorSpec const scalar_f{make_dims({}), kF32}, scalar_i{make_dims({}), kI64};
  // clang-format off: one case per row group reads best as a table
  return {
      {"RVQLookup", {}, {},
       {{make_dims({2, 3, 4}), kI64}, {make_dims({4, 17, 8}), t}},
       {{make_dims({2, 3, 8}), t}}},
      {"RVQLookup", {}, {},
       {{make_dims({5, 1}), kI32}, {make_dims({1, 17, 8}), t}},
       {{make_dims({5, 8}), t}}},
      {"RVQEncode", {"n_embed", "depth"}, {16, 4},
       {{make_dims({2, 5, 8}), t}, {make_dims({4, 17, 8}), t}},
       {{make_dims({2, 5, 4}), kI64}, {make_dims({2, 5, 8}), t}}},
      {"W4A16Gemm", {"group_size"}, {16},
       {{make_dims({3, 64}), t}, {make_dims({64, 4}), kI32}, {make_dims({4, 4}), kI32},
        {make_dims({4, 32}), DataType::kHALF}, {make_dims({32}), DataType::kHALF}},
       {{make_dims({3, 32}), t}}},
      {"W4A16Gemm", {"group_size"}, {32},
       {{make_dims({2, 7, 64}), t}, {make_dims({64, 2}), kI32}, {make_dims({2, 2}), kI32},
        {make_dims({2, 16}), DataType::kHALF}},
       {{make_dims({2, 7, 16}), t}}},
      {"DepthDecode", {"n_layer", "n_head", "embed_dim", "depth"}, {2, 4, 32, 4},
       {{make_dims({4, 16}), t}, {make_dims({p}), t}, {make_dims({4, 51, 8}), t}, scalar_f,
        scalar_f, scalar_i, scalar_f, scalar_i, {make_dims({2, 4}), kI64}},
       {{make_dims({2, 4}), kI64}, {make_dims({4, 4, 50}), kF32}}},
  };
  // clang-format on
}

nvinfer1::DynamicPluginTensorDesc dynamic_desc(TensorSpec const& t) {
  nvinfer1::DynamicPluginTensorDesc d{};
  d.desc.dims = t.dims;
  d.desc.type = t.type;
  d.desc.format = nvinfer1::TensorFormat::kLINEAR;
  d.desc.scale = 1.f;
  d.min = d.opt = d.max = t.dims;
  return d;
}

void check_creators(Creators const& creators, Report& r) {
  struct Expected {
    char const* name;
    std::vector<char const*> fields;
  };
  std::vector<Expected> const expected = {
      {"RVQLookup", {}},
      {"RVQEncode", {"n_embed", "depth"}},
      {"DepthDecode", {"n_layer", "n_head", "embed_dim", "depth"}},
      {"W4A16Gemm", {"group_size"}}};
  r.expect(creators.size() == expected.size(),
           "getCreators returns " + std::to_string(creators.size()) + " V3One creators, want 4");
  for (Expected const& e : expected) {
    auto it = creators.find(e.name);
    if (!r.expect(it != creators.end(), std::string("creator ") + e.name + " exists")) continue;
    nvinfer1::IPluginCreatorV3One* c = it->second;
    r.expect(std::strcmp(c->getPluginVersion(), "1") == 0, std::string(e.name) + " version 1");
    r.expect(std::strcmp(c->getPluginNamespace(), "") == 0, std::string(e.name) + " namespace");
    nvinfer1::PluginFieldCollection const* fc = c->getFieldNames();
    if (!r.expect(fc != nullptr && fc->nbFields == static_cast<int32_t>(e.fields.size()),
                  std::string(e.name) + " field count")) {
      continue;
    }
    for (int32_t i = 0; i < fc->nbFields; ++i) {
      r.expect(std::strcmp(fc->fields[i].name, e.fields[i]) == 0 &&
                   fc->fields[i].type == nvinfer1::PluginFieldType::kINT32 &&
                   fc->fields[i].length == 1,
               std::string(e.name) + " field " + e.fields[i] + " is kINT32 x 1");
    }
  }
}

void check_bad_fields(Creators const& creators, Report& r) {
  auto* encode = creators.at("RVQEncode");
  r.expect(create_plugin(encode, {"n_embed"}, {16}) == nullptr,
           "RVQEncode without field depth is refused");
  r.expect(gLogger.take_error().find("depth") != std::string::npos,
           "the refusal names the missing field");
  r.expect(create_plugin(encode, {"n_embed", "depth"}, {16, 0}) == nullptr,
           "RVQEncode with depth 0 is refused");
  gLogger.take_error();
  float const f = 1.f;
  nvinfer1::PluginField wrong("group_size", &f, nvinfer1::PluginFieldType::kFLOAT32, 1);
  nvinfer1::PluginFieldCollection fc{};
  fc.nbFields = 1;
  fc.fields = &wrong;
  r.expect(
      creators.at("W4A16Gemm")->createPlugin("n", &fc, nvinfer1::TensorRTPhase::kBUILD) == nullptr,
      "W4A16Gemm with a kFLOAT32 group_size is refused");
  gLogger.take_error();
  r.expect(create_plugin(creators.at("DepthDecode"), {"n_layer", "n_head", "embed_dim", "depth"},
                         {2, 3, 32, 4}) == nullptr,
           "DepthDecode with n_head not dividing embed_dim is refused");
  gLogger.take_error();
}

std::vector<int32_t> serialized_fields(nvinfer1::IPluginV3OneRuntime* runtime,
                                       std::vector<char const*>& names) {
  std::vector<int32_t> values;
  names.clear();
  nvinfer1::PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
  if (fc == nullptr) return values;
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    names.push_back(fc->fields[i].name);
    values.push_back(*static_cast<int32_t const*>(fc->fields[i].data));
  }
  return values;
}

void check_case(Creators const& creators, Case const& c, DataType t, Report& r) {
  std::string const tag = std::string(c.plugin) + " (" + std::to_string(c.inputs.size()) +
                          " inputs, T " + std::to_string(static_cast<int32_t>(t)) + ")";
  std::unique_ptr<nvinfer1::IPluginV3> plugin(
      create_plugin(creators.at(c.plugin), c.field_names, c.fields));
  if (!r.expect(plugin != nullptr, tag + ": createPlugin")) return;
  Capabilities const cap = capabilities(plugin.get());
  if (!r.expect(cap.core && cap.build && cap.runtime, tag + ": three capabilities")) return;
  r.expect(std::strcmp(cap.core->getPluginName(), c.plugin) == 0, tag + ": core name");
  r.expect(std::strcmp(plugin->getInterfaceInfo().kind, "PLUGIN") == 0, tag + ": kind PLUGIN");
  r.expect(std::strcmp(cap.build->getInterfaceInfo().kind, "PLUGIN_V3ONE_BUILD") == 0,
           tag + ": build capability kind");

  int32_t const nb_in = static_cast<int32_t>(c.inputs.size());
  int32_t const nb_out = static_cast<int32_t>(c.outputs.size());
  r.expect(cap.build->getNbOutputs() == nb_out, tag + ": getNbOutputs");

  // types
  std::vector<DataType> in_types, out_types(nb_out);
  for (TensorSpec const& s : c.inputs) in_types.push_back(s.type);
  r.expect(cap.build->getOutputDataTypes(out_types.data(), nb_out, in_types.data(), nb_in) == 0,
           tag + ": getOutputDataTypes");
  for (int32_t o = 0; o < nb_out; ++o) {
    r.expect(out_types[o] == c.outputs[o].type, tag + ": output " + std::to_string(o) + " type");
  }
  std::vector<DataType> bad_types = in_types;
  bad_types[0] = DataType::kBOOL;
  r.expect(cap.build->getOutputDataTypes(out_types.data(), nb_out, bad_types.data(), nb_in) != 0,
           tag + ": a kBOOL first input is refused");
  gLogger.take_error();

  // shapes through the fake expression builder
  FakeExprBuilder builder;
  std::vector<nvinfer1::DimsExprs> in_exprs, out_exprs(nb_out);
  for (TensorSpec const& s : c.inputs) in_exprs.push_back(builder.exprs(s.dims));
  int32_t const status = cap.build->getOutputShapes(in_exprs.data(), nb_in, nullptr, 0,
                                                    out_exprs.data(), nb_out, builder);
  if (r.expect(status == 0, tag + ": getOutputShapes")) {
    for (int32_t o = 0; o < nb_out; ++o) {
      Dims got{};
      got.nbDims = out_exprs[o].nbDims;
      for (int32_t i = 0; i < got.nbDims; ++i) {
        got.d[i] = out_exprs[o].d[i]->isConstant() ? out_exprs[o].d[i]->getConstantValue() : -99;
      }
      r.expect(same_dims(got, c.outputs[o].dims), tag + ": output " + std::to_string(o) +
                                                      " shape " + to_string(got) + ", want " +
                                                      to_string(c.outputs[o].dims));
    }
  }

  // format combinations: the case's own types pass at every position; a wrong type does not
  std::vector<nvinfer1::DynamicPluginTensorDesc> io;
  for (TensorSpec const& s : c.inputs) io.push_back(dynamic_desc(s));
  for (TensorSpec const& s : c.outputs) io.push_back(dynamic_desc(s));
  for (int32_t pos = 0; pos < nb_in + nb_out; ++pos) {
    r.expect(cap.build->supportsFormatCombination(pos, io.data(), nb_in, nb_out),
             tag + ": supportsFormatCombination pos " + std::to_string(pos));
  }
  auto wrong = io;
  wrong[nb_in].desc.type =
      wrong[nb_in].desc.type == DataType::kINT8 ? DataType::kBOOL : DataType::kINT8;
  r.expect(!cap.build->supportsFormatCombination(nb_in, wrong.data(), nb_in, nb_out),
           tag + ": a kINT8 output is not supported");
  wrong = io;
  wrong[0].desc.format = nvinfer1::TensorFormat::kCHW32;
  r.expect(!cap.build->supportsFormatCombination(0, wrong.data(), nb_in, nb_out),
           tag + ": a kCHW32 input is not supported");
  r.expect(cap.build->configurePlugin(io.data(), nb_in, io.data() + nb_in, nb_out) == 0,
           tag + ": configurePlugin accepts the shapes");
  cap.build->getWorkspaceSize(io.data(), nb_in, io.data() + nb_in, nb_out);

  // serialise -> createPlugin -> the same fields; clone keeps them too
  std::vector<char const*> names;
  std::vector<int32_t> const values = serialized_fields(cap.runtime, names);
  r.expect(values == c.fields, tag + ": getFieldsToSerialize holds the creation fields");
  std::unique_ptr<nvinfer1::IPluginV3> again(
      create_plugin(creators.at(c.plugin), names, values, nvinfer1::TensorRTPhase::kRUNTIME));
  if (r.expect(again != nullptr, tag + ": createPlugin from serialised fields")) {
    std::vector<char const*> names2;
    r.expect(serialized_fields(capabilities(again.get()).runtime, names2) == c.fields,
             tag + ": round trip keeps the fields");
  }
  std::unique_ptr<nvinfer1::IPluginV3> copy(plugin->clone());
  if (r.expect(copy != nullptr, tag + ": clone")) {
    std::vector<char const*> names3;
    r.expect(serialized_fields(capabilities(copy.get()).runtime, names3) == c.fields,
             tag + ": clone keeps the fields");
  }
}

//! configurePlugin refuses inconsistent shapes, naming the input.
void check_bad_shapes(Creators const& creators, Report& r) {
  for (Case c : cases(DataType::kFLOAT)) {
    std::string culprit;
    if (std::strcmp(c.plugin, "RVQEncode") == 0) {
      c.inputs[1].dims = make_dims({4, 20, 8});  // R != n_embed + 1
      culprit = "codebooks";
    } else if (std::strcmp(c.plugin, "DepthDecode") == 0) {
      c.inputs[1].dims.d[0] += 1;  // P does not match the fields
      culprit = "weights";
    } else if (std::strcmp(c.plugin, "W4A16Gemm") == 0 && c.inputs.size() == 5) {
      c.inputs[2].dims = make_dims({3, 4});  // qzeros rows != K / G
      culprit = "qzeros";
    } else {
      continue;
    }
    std::unique_ptr<nvinfer1::IPluginV3> plugin(
        create_plugin(creators.at(c.plugin), c.field_names, c.fields));
    if (plugin == nullptr) continue;
    std::vector<nvinfer1::DynamicPluginTensorDesc> io;
    for (TensorSpec const& s : c.inputs) io.push_back(dynamic_desc(s));
    for (TensorSpec const& s : c.outputs) io.push_back(dynamic_desc(s));
    int32_t const nb_in = static_cast<int32_t>(c.inputs.size());
    int32_t const nb_out = static_cast<int32_t>(c.outputs.size());
    r.expect(capabilities(plugin.get())
                     .build->configurePlugin(io.data(), nb_in, io.data() + nb_in, nb_out) != 0,
             std::string(c.plugin) + ": configurePlugin refuses a bad " + culprit);
    r.expect(gLogger.take_error().find(culprit) != std::string::npos,
             std::string(c.plugin) + ": the refusal names " + culprit);
  }
}

}  // namespace
}  // namespace vilau::trt::test

int main(int argc, char** argv) {
  using namespace vilau::trt::test;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <libvilau_trt_plugins.so> [--gpu]\n", argv[0]);
    return 2;
  }
  bool const gpu = argc > 2 && std::strcmp(argv[2], "--gpu") == 0;
  void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::printf("FAIL dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  using GetCreators = nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&);
  using SetLoggerFinder = void (*)(nvinfer1::ILoggerFinder*);
  auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
  auto set_logger_finder = reinterpret_cast<SetLoggerFinder>(dlsym(lib, "setLoggerFinder"));
  if (get_creators == nullptr || set_logger_finder == nullptr) {
    std::printf("FAIL the library does not export getCreators and setLoggerFinder\n");
    return 1;
  }
  set_logger_finder(&gFinder);
  Report report;
  int32_t count = -1;
  nvinfer1::IPluginCreatorInterface* const* list = get_creators(count);
  Creators creators;
  for (int32_t i = 0; i < count; ++i) {
    nvinfer1::InterfaceInfo const info = list[i]->getInterfaceInfo();
    if (report.expect(std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") == 0 && info.major == 1,
                      std::string("creator ") + std::to_string(i) + " is a V3One creator")) {
      auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(list[i]);
      creators[c->getPluginName()] = c;
    }
  }
  check_creators(creators, report);
  if (report.failures == 0) {
    check_bad_fields(creators, report);
    for (nvinfer1::DataType t : {nvinfer1::DataType::kFLOAT, nvinfer1::DataType::kHALF}) {
      for (Case const& c : cases(t)) check_case(creators, c, t, report);
    }
    check_bad_shapes(creators, report);
    if (gpu) run_gpu_checks(creators, report);
  }
  std::printf("%s: %d checks, %d failed%s\n", report.failures ? "FAILED" : "OK", report.checks,
              report.failures, gpu ? " (with --gpu)" : " (CPU only; --gpu not requested)");
  return report.failures ? 1 : 0;
}
