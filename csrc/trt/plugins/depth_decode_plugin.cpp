#include "plugins/depth_decode_plugin.h"

#include <exception>

#include "common/cuda_check.h"
#include "kernels/depth_decode_cuda.h"

namespace vilau::trt {

namespace {

//! Sizes from the input shapes (hidden [2n, H], codebooks [Dc, R, C]) and the fields.
DepthDecodeSizes sizes_of(nvinfer1::Dims const& hidden, nvinfer1::Dims const& cb,
                          std::vector<int32_t> const& f) {
  DepthDecodeSizes s;
  s.n = hidden.d[0] / 2;
  s.llm_dim = hidden.d[1];
  s.n_layer = f[0];
  s.n_head = f[1];
  s.embed_dim = f[2];
  s.depth = f[3];
  s.n_codebooks = cb.d[0];
  s.codebook_rows = cb.d[1];
  s.code_dim = cb.d[2];
  return s;
}

}  // namespace

nvinfer1::IPluginV3* DepthDecodePlugin::clone() noexcept {
  try {
    return new DepthDecodePlugin(*this);
  } catch (std::exception const& e) {
    log_error(kName, std::string("clone: ") + e.what());
    return nullptr;
  }
}

size_t DepthDecodePlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs,
                                           int32_t nb_inputs,
                                           nvinfer1::DynamicPluginTensorDesc const*,
                                           int32_t) const noexcept {
  try {
    if (nb_inputs != 9) return 0;
    return depth_decode_workspace_bytes(sizes_of(inputs[0].max, inputs[2].max, mValues));
  } catch (std::exception const& e) {
    log_error(kName, std::string("getWorkspaceSize: ") + e.what());
    return 0;
  }
}

std::string DepthDecodePlugin::check_shapes(nvinfer1::Dims const* in,
                                            int32_t nb_in) const noexcept {
  try {
    return depth_decode_check(in, nb_in, field(0), field(1), field(2), field(3));
  } catch (std::exception const& e) {
    return e.what();
  }
}

int32_t DepthDecodePlugin::enqueue(nvinfer1::PluginTensorDesc const* input_desc,
                                   nvinfer1::PluginTensorDesc const*, void const* const* inputs,
                                   void* const* outputs, void* workspace,
                                   cudaStream_t stream) noexcept {
  try {
    nvinfer1::Dims in[9];
    for (int32_t i = 0; i < 9; ++i) in[i] = input_desc[i].dims;
    std::string const why = check_shapes(in, 9);
    if (!why.empty()) {
      log_error(kName, "enqueue: " + why);
      return -1;
    }
    DepthDecodeSizes const s = sizes_of(in[0], in[2], mValues);
    // the sampler decides its path (greedy, top-k, top-p) on the host
    float scale = 0.f, temperature = 0.f, top_p = 0.f;
    int64_t top_k = 0;
    cuda_check(cudaMemcpyAsync(&scale, inputs[3], sizeof scale, cudaMemcpyDeviceToHost, stream),
               "DepthDecode: reading cfg_scale");
    cuda_check(cudaMemcpyAsync(&temperature, inputs[4], sizeof temperature, cudaMemcpyDeviceToHost,
                               stream),
               "DepthDecode: reading temperature");
    cuda_check(cudaMemcpyAsync(&top_k, inputs[5], sizeof top_k, cudaMemcpyDeviceToHost, stream),
               "DepthDecode: reading top_k");
    cuda_check(cudaMemcpyAsync(&top_p, inputs[6], sizeof top_p, cudaMemcpyDeviceToHost, stream),
               "DepthDecode: reading top_p");
    cuda_check(cudaStreamSynchronize(stream), "DepthDecode: waiting for the sampling scalars");
    DepthSampling const sampling{scale, temperature, top_k, top_p};
    depth_decode_cuda(inputs[0], inputs[1], inputs[2], static_cast<int64_t const*>(inputs[7]),
                      static_cast<int64_t const*>(inputs[8]), static_cast<int64_t*>(outputs[0]),
                      static_cast<float*>(outputs[1]), workspace, s, sampling,
                      to_dtype(input_desc[0].type), stream);
    return 0;
  } catch (std::exception const& e) {
    log_error(kName, std::string("enqueue: ") + e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* make_depth_decode(std::vector<int32_t> values) {
  if (values.size() != 4 || values[0] < 1 || values[1] < 1 || values[2] < 1 || values[3] < 1 ||
      values[2] % values[1] || values[3] > kDepthDecodeMaxDepth) {
    log_error(DepthDecodePlugin::kName,
              "fields n_layer, n_head, embed_dim, depth must be >= 1, n_head must divide "
              "embed_dim and depth <= " +
                  std::to_string(kDepthDecodeMaxDepth));
    return nullptr;
  }
  return new DepthDecodePlugin(std::move(values));
}

}  // namespace vilau::trt
