// Shared pieces of the plugin harness (harness.cpp: CPU checks, gpu_checks.cpp: --gpu).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

namespace vilau::trt::test {

//! Counts failed expectations and prints each with its context.
struct Report {
  int failures = 0;
  int checks = 0;
  //! Prints "FAIL <what>" unless @p ok; returns @p ok.
  bool expect(bool ok, std::string const& what);
};

//! A tensor's shape and type as TensorRT would describe it.
struct TensorSpec {
  nvinfer1::Dims dims;
  nvinfer1::DataType type;
};

nvinfer1::Dims make_dims(std::initializer_list<int64_t> extents);
std::string to_string(nvinfer1::Dims const& dims);
bool same_dims(nvinfer1::Dims const& a, nvinfer1::Dims const& b);

//! Creators by plugin name, from the library's getCreators.
using Creators = std::map<std::string, nvinfer1::IPluginCreatorV3One*>;

//! createPlugin with kINT32 fields @p names = @p values (nullptr on failure).
nvinfer1::IPluginV3* create_plugin(nvinfer1::IPluginCreatorV3One* creator,
                                   std::vector<char const*> const& names,
                                   std::vector<int32_t> const& values,
                                   nvinfer1::TensorRTPhase phase = nvinfer1::TensorRTPhase::kBUILD);

//! The three capability interfaces of @p plugin (nullptr members where missing).
struct Capabilities {
  nvinfer1::IPluginV3OneCore* core = nullptr;
  nvinfer1::IPluginV3OneBuild* build = nullptr;
  nvinfer1::IPluginV3OneRuntime* runtime = nullptr;
};
Capabilities capabilities(nvinfer1::IPluginV3* plugin);

//! Packed DepthDecode weight count for the harness's small depth transformer.
int64_t depth_weights_for(int64_t e, int64_t layers, int64_t depth, int64_t c, int64_t h,
                          int64_t v);

//! Enqueue checks against the CPU references; needs a CUDA device.
//! @return false when no device is usable (reported as a failure by the caller).
bool run_gpu_checks(Creators const& creators, Report& report);

}  // namespace vilau::trt::test
