#include "plugins/rvq_encode_plugin.h"

#include <exception>

#include "rvq/rvq.h"

namespace vilau::trt {

nvinfer1::IPluginV3* RvqEncodePlugin::clone() noexcept {
  try {
    return new RvqEncodePlugin(*this);
  } catch (std::exception const& e) {
    log_error(kName, std::string("clone: ") + e.what());
    return nullptr;
  }
}

std::string RvqEncodePlugin::check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept {
  try {
    return rvq_encode_check(in, nb_in, n_embed(), depth());
  } catch (std::exception const& e) {
    return e.what();
  }
}

int32_t RvqEncodePlugin::enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                                 nvinfer1::PluginTensorDesc const*, void const* const* inputs,
                                 void* const* outputs, void*, cudaStream_t stream) noexcept {
  try {
    nvinfer1::Dims const in[2] = {input_desc[0].dims, input_desc[1].dims};
    std::string const why = rvq_encode_check(in, 2, n_embed(), depth());
    if (!why.empty()) {
      log_error(kName, "enqueue: " + why);
      return -1;
    }
    nvinfer1::Dims const& f = in[0];
    nvinfer1::Dims const& cb = in[1];
    int64_t const rows = volume(f, 0, f.nbDims - 1);
    rvq_encode_cuda(inputs[0], inputs[1], static_cast<int64_t*>(outputs[0]), outputs[1], rows,
                    depth(), cb.d[0], cb.d[1], cb.d[2], n_embed(), to_dtype(input_desc[0].type),
                    stream);
    return 0;
  } catch (std::exception const& e) {
    log_error(kName, std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* make_rvq_encode(std::vector<int32_t> values) {
  if (values.size() != 2 || values[0] < 1 || values[1] < 1) {
    log_error(RvqEncodePlugin::kName, "fields n_embed and depth must be >= 1");
    return nullptr;
  }
  return new RvqEncodePlugin(std::move(values));
}

}  // namespace vilau::trt
