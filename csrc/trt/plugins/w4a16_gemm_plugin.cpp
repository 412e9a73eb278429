#include "plugins/w4a16_gemm_plugin.h"

#include <exception>

#include "w4a16/w4a16.h"

namespace vilau::trt {

nvinfer1::IPluginV3* W4A16GemmPlugin::clone() noexcept {
  try {
    return new W4A16GemmPlugin(*this);
  } catch (std::exception const& e) {
    log_error(kName, std::string("clone: ") + e.what());
    return nullptr;
  }
}

int32_t W4A16GemmPlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in,
                                         int32_t nb_inputs,
                                         nvinfer1::DynamicPluginTensorDesc const* out,
                                         int32_t nb_outputs) noexcept {
  mHasBias = nb_inputs == 5;
  return PluginBase::configurePlugin(in, nb_inputs, out, nb_outputs);
}

int32_t W4A16GemmPlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_inputs,
                                       nvinfer1::PluginTensorDesc const* out,
                                       int32_t nb_outputs) noexcept {
  mHasBias = nb_inputs == 5;
  return PluginBase::onShapeChange(in, nb_inputs, out, nb_outputs);
}

std::string W4A16GemmPlugin::check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept {
  try {
    return w4a16_gemm_check(in, nb_in, group_size());
  } catch (std::exception const& e) {
    return e.what();
  }
}

int32_t W4A16GemmPlugin::enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                                 nvinfer1::PluginTensorDesc const*, void const* const* inputs,
                                 void* const* outputs, void*, cudaStream_t stream) noexcept {
  try {
    // TensorRT does not pass the input count to enqueue: onShapeChange recorded it.
    bool const has_bias = mHasBias;
    int32_t const nb_in = has_bias ? 5 : 4;
    nvinfer1::Dims in[5];
    for (int32_t i = 0; i < nb_in; ++i) in[i] = input_desc[i].dims;
    std::string const why = w4a16_gemm_check(in, nb_in, group_size());
    if (!why.empty()) {
      log_error(kName, "enqueue: " + why);
      return -1;
    }
    nvinfer1::Dims const& x = in[0];
    int64_t const k = x.d[x.nbDims - 1];
    int64_t const n = in[3].d[1];
    int64_t const m = volume(x, 0, x.nbDims - 1);
    w4a16_linear_cuda(inputs[0], static_cast<int32_t const*>(inputs[1]),
                      static_cast<int32_t const*>(inputs[2]), inputs[3],
                      has_bias ? inputs[4] : nullptr, outputs[0], m, k, n, group_size(),
                      to_dtype(input_desc[0].type), stream);
    return 0;
  } catch (std::exception const& e) {
    log_error(kName, std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* make_w4a16_gemm(std::vector<int32_t> values) {
  if (values.size() != 1 || values[0] < 1) {
    log_error(W4A16GemmPlugin::kName, "field group_size must be >= 1");
    return nullptr;
  }
  return new W4A16GemmPlugin(std::move(values));
}

}  // namespace vilau::trt
