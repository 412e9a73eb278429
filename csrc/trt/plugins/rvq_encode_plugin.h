// vilau::RVQEncode: features [..., C] + codebooks [Dc, n_embed + 1, C] -> codes [..., D] int64
// and z_q [..., C] (residual quantization, rvq_encode_cuda). Fields (ONNX INT attributes):
// n_embed (valid codes per codebook), depth (D).
#pragma once

#include "plugin_common.h"

namespace vilau::trt {

class RvqEncodePlugin final : public PluginBase {
 public:
  static constexpr char const* kName = "RVQEncode";
  //! Creator fields (ONNX INT attributes), in order.
  static std::vector<char const*> field_names() { return {"n_embed", "depth"}; }
  //! @param values {n_embed, depth}
  explicit RvqEncodePlugin(std::vector<int32_t> values)
      : PluginBase(kName, field_names(), std::move(values)) {}

  nvinfer1::IPluginV3* clone() noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                  nvinfer1::PluginTensorDesc const* output_desc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  IoSlots slots(int32_t) const override { return rvq_encode_slots(); }
  std::vector<ShapeRule> shape_rules(std::vector<int32_t> const& ranks,
                                     std::string& why) const override {
    return rvq_encode_shapes(ranks, depth(), why);
  }
  std::string check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept override;

 private:
  int32_t n_embed() const { return field(0); }
  int32_t depth() const { return field(1); }
};

//! Creator factory: values {n_embed, depth}, each >= 1 (nullptr, logged, otherwise).
nvinfer1::IPluginV3* make_rvq_encode(std::vector<int32_t> values);

}  // namespace vilau::trt
