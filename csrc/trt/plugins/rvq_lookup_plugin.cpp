#include "plugins/rvq_lookup_plugin.h"

#include <exception>

#include "kernels/convert_cuda.h"
#include "rvq/rvq.h"

namespace vilau::trt {

nvinfer1::IPluginV3* RvqLookupPlugin::clone() noexcept {
  try {
    return new RvqLookupPlugin(*this);
  } catch (std::exception const& e) {
    log_error(kName, std::string("clone: ") + e.what());
    return nullptr;
  }
}

size_t RvqLookupPlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs,
                                         int32_t nb_inputs,
                                         nvinfer1::DynamicPluginTensorDesc const*,
                                         int32_t) const noexcept {
  if (nb_inputs < 1 || inputs[0].desc.type != nvinfer1::DataType::kINT32) return 0;
  return static_cast<size_t>(volume(inputs[0].max)) * sizeof(int64_t);
}

std::string RvqLookupPlugin::check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept {
  try {
    return rvq_lookup_check(in, nb_in);
  } catch (std::exception const& e) {
    return e.what();
  }
}

int32_t RvqLookupPlugin::enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                                 nvinfer1::PluginTensorDesc const*, void const* const* inputs,
                                 void* const* outputs, void* workspace,
                                 cudaStream_t stream) noexcept {
  try {
    nvinfer1::Dims const in[2] = {input_desc[0].dims, input_desc[1].dims};
    std::string const why = rvq_lookup_check(in, 2);
    if (!why.empty()) {
      log_error(kName, "enqueue: " + why);
      return -1;
    }
    nvinfer1::Dims const& codes = in[0];
    nvinfer1::Dims const& cb = in[1];
    int64_t const depth = codes.d[codes.nbDims - 1];
    int64_t const rows = volume(codes, 0, codes.nbDims - 1);
    auto const* codes64 = static_cast<int64_t const*>(inputs[0]);
    if (input_desc[0].type == nvinfer1::DataType::kINT32) {
      auto* converted = static_cast<int64_t*>(workspace);
      int32_to_int64_cuda(static_cast<int32_t const*>(inputs[0]), converted, rows * depth, stream);
      codes64 = converted;
    }
    rvq_lookup_cuda(codes64, inputs[1], outputs[0], rows, depth, cb.d[0], cb.d[1], cb.d[2],
                    to_dtype(input_desc[1].type), stream);
    return 0;
  } catch (std::exception const& e) {
    log_error(kName, std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* make_rvq_lookup(std::vector<int32_t>) { return new RvqLookupPlugin(); }

}  // namespace vilau::trt
