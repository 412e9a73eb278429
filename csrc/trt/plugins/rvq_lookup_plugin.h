// vilau::RVQLookup: codes [..., D] (int32 or int64) + codebooks [Dc, R, C] -> z [..., C], the
// summed code embeddings (rvq_lookup_cuda). No fields. A code outside [0, R - 1) gives a NaN
// row (the CUDA kernel has no error flag).
#pragma once

#include "plugin_common.h"

namespace vilau::trt {

class RvqLookupPlugin final : public PluginBase {
 public:
  static constexpr char const* kName = "RVQLookup";
  //! Creator fields (ONNX INT attributes), in order.
  static std::vector<char const*> field_names() { return {}; }
  RvqLookupPlugin() : PluginBase(kName, field_names(), {}) {}

  nvinfer1::IPluginV3* clone() noexcept override;
  //! int64 copies of int32 codes: 8 bytes per code at the largest shape.
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nb_inputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nb_outputs) const noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                  nvinfer1::PluginTensorDesc const* output_desc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  IoSlots slots(int32_t) const override { return rvq_lookup_slots(); }
  std::vector<ShapeRule> shape_rules(std::vector<int32_t> const& ranks,
                                     std::string& why) const override {
    return rvq_lookup_shapes(ranks, why);
  }
  std::string check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept override;
};

//! Creator factory (no fields).
nvinfer1::IPluginV3* make_rvq_lookup(std::vector<int32_t> values);

}  // namespace vilau::trt
