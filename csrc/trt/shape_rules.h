// Shape, type and format rules of the vilau TensorRT plugins as plain functions: the plugins'
// IPluginV3OneBuild methods are thin wrappers over them, and the CPU harness calls them with
// concrete shapes. Only TensorRT header types are used (Dims, DataType, TensorFormat).
//
// | op          | inputs                                     | outputs                       |
// |-------------|--------------------------------------------|-------------------------------|
// | RVQLookup   | codes [..., D] int32/int64,                | z [..., C] T                  |
// |             | codebooks [Dc, R, C] T                     |                               |
// | RVQEncode   | features [..., C] T, codebooks [Dc, R, C] T| codes [..., D] int64,         |
// |             |                                            | z_q [..., C] T                |
// | W4A16Gemm   | x [..., K] T, qweight [K, N/8] int32,      | y [..., N] T                  |
// |             | qzeros [K/G, N/8] int32, scales [K/G, N]   |                               |
// |             | fp16, optional bias [N] fp16               |                               |
// | DepthDecode | hidden [2n, H] T, weights [P] T,           | codes [n, D] int64,           |
// |             | codebooks [Dc, R, C] T, cfg_scale [] f32,  | logits [D, 2n, V] f32,        |
// |             | temperature [] f32, top_k [] int64,        | V = R - 1                     |
// |             | top_p [] f32, seed [] int64,               |                               |
// |             | forced_codes [n, D] int64                  |                               |
// T: float32, float16 or bfloat16, one per op. Every tensor is linear (row-major).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace vilau::trt {

//! What an input or output position accepts.
enum class Slot : int32_t {
  kFloatT,   //!< float32 / float16 / bfloat16, the same T at every kFloatT position
  kCodes,    //!< int32 or int64
  kInt64,    //!< int64
  kInt32,    //!< int32
  kFloat32,  //!< float32
  kHalf,     //!< float16
};

//! Name of a TensorRT data type for messages ("kHALF", ..., or "DataType N").
std::string type_name(nvinfer1::DataType t);

//! Slots of an op: inputs then outputs.
struct IoSlots {
  std::vector<Slot> inputs;
  std::vector<Slot> outputs;
};

//! One output extent: in[input].d[dim] / div - sub, or the constant @p value when input < 0.
struct DimRule {
  int32_t input = -1;
  int32_t dim = 0;
  int64_t div = 1;
  int64_t sub = 0;
  int64_t value = 0;
};
//! Extents of one output.
using ShapeRule = std::vector<DimRule>;

IoSlots rvq_lookup_slots();
IoSlots rvq_encode_slots();
//! @param nb_inputs 4 (no bias) or 5 (bias)
IoSlots w4a16_gemm_slots(int32_t nb_inputs);
IoSlots depth_decode_slots();

//! Whether position @p pos of @p slots may have @p types[pos] / @p formats[pos], given the
//! positions before it (TensorRT asks position by position).
bool supports_format(IoSlots const& slots, int32_t pos, nvinfer1::DataType const* types,
                     nvinfer1::TensorFormat const* formats, int32_t nb_in_out);

//! Output types from input types. @return "" or why the input types are not accepted.
std::string output_types_of(IoSlots const& slots, nvinfer1::DataType const* in, int32_t nb_in,
                            nvinfer1::DataType* out, int32_t nb_out);

//! Output extents from input ranks (empty result: @p why says which input has a bad rank).
std::vector<ShapeRule> rvq_lookup_shapes(std::vector<int32_t> const& ranks, std::string& why);
std::vector<ShapeRule> rvq_encode_shapes(std::vector<int32_t> const& ranks, int32_t depth,
                                         std::string& why);
std::vector<ShapeRule> w4a16_gemm_shapes(std::vector<int32_t> const& ranks, std::string& why);
std::vector<ShapeRule> depth_decode_shapes(std::vector<int32_t> const& ranks, int32_t depth,
                                           std::string& why);

//! Concrete output shapes from concrete input shapes (the harness's expectation).
std::vector<nvinfer1::Dims> eval_shapes(std::vector<ShapeRule> const& rules,
                                        std::vector<nvinfer1::Dims> const& in);

//! Checks of concrete input shapes against each other and the fields, run in configurePlugin
//! and onShapeChange (extents may be -1 at build time: unknown extents are not checked).
//! @return "" or the reason, naming the input and the expected extent.
std::string rvq_lookup_check(nvinfer1::Dims const* in, int32_t nb_in);
std::string rvq_encode_check(nvinfer1::Dims const* in, int32_t nb_in, int32_t n_embed,
                             int32_t depth);
std::string w4a16_gemm_check(nvinfer1::Dims const* in, int32_t nb_in, int32_t group_size);
std::string depth_decode_check(nvinfer1::Dims const* in, int32_t nb_in, int32_t n_layer,
                               int32_t n_head, int32_t embed_dim, int32_t depth);

//! Number of elements of DepthDecode's packed weights (DepthTransformer.state_dict() order,
//! see depth_decode_cuda.h) for E, L layers, D depths, C code width, H LLM width, V codes.
int64_t depth_weight_count(int64_t embed_dim, int64_t n_layer, int64_t depth, int64_t code_dim,
                           int64_t llm_dim, int64_t vocab);

}  // namespace vilau::trt
