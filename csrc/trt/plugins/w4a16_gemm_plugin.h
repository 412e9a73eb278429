// W4A16Gemm: y [..., N] = x [..., K] @ W_T + bias over AutoAWQ GEMM-layout buffers
// (w4a16_linear_cuda; zero points kept exact): x T, qweight int32 [K, N/8], qzeros int32
// [K/G, N/8], scales fp16 [K/G, N], optional bias fp16 [N]. Field: group_size (G).
// The ONNX node is op_type "W4A16Gemm" with the INT attribute group_size (export/ writes
// com.microsoft::MatMulNBits for ONNX Runtime instead; a TensorRT graph swaps it for this).
#pragma once

#include "plugin_common.h"

namespace vilau::trt {

class W4A16GemmPlugin final : public PluginBase {
 public:
  static constexpr char const* kName = "W4A16Gemm";
  //! Creator fields (ONNX INT attributes), in order.
  static std::vector<char const*> field_names() { return {"group_size"}; }
  //! @param values {group_size}
  explicit W4A16GemmPlugin(std::vector<int32_t> values)
      : PluginBase(kName, field_names(), std::move(values)) {}

  nvinfer1::IPluginV3* clone() noexcept override;
  //! Both record whether a bias input is bound (enqueue is not told the input count).
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_inputs,
                          nvinfer1::DynamicPluginTensorDesc const* out,
                          int32_t nb_outputs) noexcept override;
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_inputs,
                        nvinfer1::PluginTensorDesc const* out,
                        int32_t nb_outputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                  nvinfer1::PluginTensorDesc const* output_desc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

 protected:
  IoSlots slots(int32_t nb_inputs) const override { return w4a16_gemm_slots(nb_inputs); }
  std::vector<ShapeRule> shape_rules(std::vector<int32_t> const& ranks,
                                     std::string& why) const override {
    return w4a16_gemm_shapes(ranks, why);
  }
  std::string check_shapes(nvinfer1::Dims const* in, int32_t nb_in) const noexcept override;

 private:
  int32_t group_size() const { return field(0); }
  bool mHasBias = false;
};

//! Creator factory: values {group_size >= 1} (nullptr, logged, otherwise).
nvinfer1::IPluginV3* make_w4a16_gemm(std::vector<int32_t> values);

}  // namespace vilau::trt
