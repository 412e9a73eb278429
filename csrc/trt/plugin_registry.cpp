// The library's only exported symbols: TensorRT looks up getCreators (and setLoggerFinder)
// when it loads a plugin library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins).
// No REGISTER_TENSORRT_PLUGIN: that would pull in getPluginRegistry from libnvinfer.
#include "plugin_common.h"
#include "plugins/depth_decode_plugin.h"
#include "plugins/rvq_encode_plugin.h"
#include "plugins/rvq_lookup_plugin.h"
#include "plugins/w4a16_gemm_plugin.h"

#define VILAU_TRT_EXPORT extern "C" __attribute__((visibility("default")))

namespace vilau::trt {
namespace {

//! Built on first use (function-local statics: thread-safe, never destroyed before use).
nvinfer1::IPluginCreatorInterface* const* creators(int32_t& count) {
  static IntFieldCreator rvq_lookup(RvqLookupPlugin::kName, RvqLookupPlugin::field_names(),
                                    make_rvq_lookup);
  static IntFieldCreator rvq_encode(RvqEncodePlugin::kName, RvqEncodePlugin::field_names(),
                                    make_rvq_encode);
  static IntFieldCreator depth_decode(DepthDecodePlugin::kName, DepthDecodePlugin::field_names(),
                                      make_depth_decode);
  static IntFieldCreator w4a16_gemm(W4A16GemmPlugin::kName, W4A16GemmPlugin::field_names(),
                                    make_w4a16_gemm);
  static nvinfer1::IPluginCreatorInterface* const all[] = {&rvq_lookup, &rvq_encode, &depth_decode,
                                                           &w4a16_gemm};
  count = static_cast<int32_t>(sizeof all / sizeof all[0]);
  return all;
}

}  // namespace
}  // namespace vilau::trt

//! Creators of RVQLookup, RVQEncode, DepthDecode and W4A16Gemm (version "1", namespace "").
VILAU_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  return vilau::trt::creators(nbCreators);
}

//! Plugins log through the logger TensorRT finds for them (stderr before this is called).
VILAU_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
  vilau::trt::set_logger_finder(finder);
}
