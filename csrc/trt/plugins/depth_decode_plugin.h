// vilau::DepthDecode: the D codes of one image position (depth_decode_cuda), node as in
// vilau_rt/depth_ops.py and export/onnx_ops.py:
//
// | input / field  | shape / type       | notes                                              |
// |----------------|--------------------|----------------------------------------------------|
// | hidden         | [2n, H] T          | rows [conditional..., unconditional...]            |
// | weights        | [P] T              | pack_depth_weights order (depth_decode_cuda.h)     |
// | codebooks      | [Dc, R, C] T       | Dc = D or 1, R = n_embed + 1                       |
// | cfg_scale      | [] float32         | l_u + cfg * (l_c - l_u)                            |
// | temperature    | [] float32         | > 0                                                |
// | top_k          | [] int64           | 0 = off, 1 = greedy                                |
// | top_p          | [] float32         | 1.0 = off                                          |
// | seed           | [] int64           | Philox key (counter 0, subsequence = depth)        |
// | forced_codes   | [n, D] int64       | -1 = sample, >= 0 = use                            |
// | n_layer, n_head, embed_dim, depth | INT fields (ONNX attributes)                    |
// | -> codes       | [n, D] int64       |                                                    |
// | -> logits      | [D, 2n, V] float32 | raw per-depth logits before CFG                    |
//
// Sampling is the csrc sampler (the native backend's), so greedy codes equal the ONNX Runtime
// op's; sampled codes do not: that op draws with splitmix64 (vilau_rt.depth_ops).
// enqueue copies the four sampling scalars to the host and waits for them (one stream
// synchronisation per call), because the sampler takes them as host values.
#pragma once

#include "plugin_common.h"

namespace vilau::trt {

class DepthDecodePlugin final : public PluginBase {
 public:
  static constexpr char const* kName = "DepthDecode";
  //! Creator fields (ONNX INT attributes), in order.
  static std::vector<char const*> field_names() {
    return {"n_layer", "n_head", "embed_dim", "depth"};
  }
  //! @param values {n_layer, n_head, embed_dim, depth}
  explicit DepthDecodePlugin(std::vector<int32_t> values)
      : PluginBase(kName, field_names(), std::move(values)) {}

  nvinfer1::IPluginV3* clone() noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nb_inputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nb_outputs) const noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                  nvinfer1::PluginTensorDesc const* output_desc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  IoSlots slots(int32_t) const override { return depth_decode_slots(); }
  std::vector<ShapeRule> shape_rules(std::vector<int32_t> const& ranks,
                                     std::string& why) const override {
    return depth_decode_shapes(ranks, field(3), why);
  }
  std::string check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept override;
};

//! Creator factory: values {n_layer, n_head, embed_dim, depth}, each >= 1 and n_head dividing
//! embed_dim (nullptr, logged, otherwise).
nvinfer1::IPluginV3* make_depth_decode(std::vector<int32_t> values);

}  // namespace vilau::trt
