#include "shape_rules.h"

#include "kernels/depth_decode_cuda.h"
#include "rvq/rvq.h"

namespace vilau::trt {

using nvinfer1::DataType;
using nvinfer1::Dims;

namespace {

bool is_float_t(DataType t) {
  return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16;
}

bool slot_accepts(Slot slot, DataType t) {
  switch (slot) {
    case Slot::kFloatT:
      return is_float_t(t);
    case Slot::kCodes:
      return t == DataType::kINT32 || t == DataType::kINT64;
    case Slot::kInt64:
      return t == DataType::kINT64;
    case Slot::kInt32:
      return t == DataType::kINT32;
    case Slot::kFloat32:
      return t == DataType::kFLOAT;
    case Slot::kHalf:
      return t == DataType::kHALF;
  }
  return false;
}

char const* slot_name(Slot slot) {
  switch (slot) {
    case Slot::kFloatT:
      return "float32/float16/bfloat16";
    case Slot::kCodes:
      return "int32/int64";
    case Slot::kInt64:
      return "int64";
    case Slot::kInt32:
      return "int32";
    case Slot::kFloat32:
      return "float32";
    case Slot::kHalf:
      return "float16";
  }
  return "?";
}

DimRule from(int32_t input, int32_t dim, int64_t div = 1, int64_t sub = 0) {
  return DimRule{input, dim, div, sub, 0};
}
DimRule constant(int64_t value) { return DimRule{-1, 0, 1, 0, value}; }

//! in[input].d[0 .. rank-2] followed by @p last.
ShapeRule leading_then(int32_t input, int32_t rank, DimRule last) {
  ShapeRule rule;
  for (int32_t i = 0; i + 1 < rank; ++i) rule.push_back(from(input, i));
  rule.push_back(last);
  return rule;
}

std::string str(int64_t v) { return std::to_string(v); }

std::string dims_str(Dims const& d) {
  std::string s = "[";
  for (int32_t i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + str(d.d[i]);
  return s + "]";
}

//! "" when a and b are equal or either is unknown (-1), else a message.
bool differ(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; }

std::string want(char const* name, Dims const& got, std::string const& expected) {
  return std::string(name) + " must be " + expected + ", got " + dims_str(got);
}

std::string check_scalar(char const* name, Dims const& d) {
  if (d.nbDims == 0 || (d.nbDims == 1 && (d.d[0] == 1 || d.d[0] < 0))) return "";
  return want(name, d, "a scalar ([] or [1])");
}

std::string check_codebooks(Dims const& cb, int64_t depth) {
  if (cb.nbDims != 3) return want("codebooks", cb, "[Dc, n_embed + 1, C]");
  if (cb.d[0] >= 0 && depth >= 0 && cb.d[0] != depth && cb.d[0] != 1) {
    return want("codebooks", cb, "[D or 1, R, C] with D = " + str(depth));
  }
  if (cb.d[1] >= 0 && cb.d[1] < 2) return want("codebooks", cb, "[Dc, R >= 2, C]");
  return "";
}

}  // namespace

std::string type_name(DataType t) {
  switch (t) {
    case DataType::kFLOAT:
      return "kFLOAT";
    case DataType::kHALF:
      return "kHALF";
    case DataType::kBF16:
      return "kBF16";
    case DataType::kINT32:
      return "kINT32";
    case DataType::kINT64:
      return "kINT64";
    default:
      return "DataType " + std::to_string(static_cast<int32_t>(t));
  }
}

IoSlots rvq_lookup_slots() { return {{Slot::kCodes, Slot::kFloatT}, {Slot::kFloatT}}; }

IoSlots rvq_encode_slots() {
  return {{Slot::kFloatT, Slot::kFloatT}, {Slot::kInt64, Slot::kFloatT}};
}

IoSlots w4a16_gemm_slots(int32_t nb_inputs) {
  IoSlots s{{Slot::kFloatT, Slot::kInt32, Slot::kInt32, Slot::kHalf}, {Slot::kFloatT}};
  if (nb_inputs == 5) s.inputs.push_back(Slot::kHalf);
  return s;
}

IoSlots depth_decode_slots() {
  return {{Slot::kFloatT, Slot::kFloatT, Slot::kFloatT, Slot::kFloat32, Slot::kFloat32,
           Slot::kInt64, Slot::kFloat32, Slot::kInt64, Slot::kInt64},
          {Slot::kInt64, Slot::kFloat32}};
}

bool supports_format(IoSlots const& slots, int32_t pos, DataType const* types,
                     nvinfer1::TensorFormat const* formats, int32_t nb_in_out) {
  int32_t const nb_in = static_cast<int32_t>(slots.inputs.size());
  if (nb_in_out != nb_in + static_cast<int32_t>(slots.outputs.size()) || pos < 0 ||
      pos >= nb_in_out) {
    return false;
  }
  auto slot_at = [&](int32_t p) { return p < nb_in ? slots.inputs[p] : slots.outputs[p - nb_in]; };
  if (formats[pos] != nvinfer1::TensorFormat::kLINEAR) return false;
  Slot const slot = slot_at(pos);
  if (!slot_accepts(slot, types[pos])) return false;
  if (slot == Slot::kFloatT) {
    for (int32_t p = 0; p < pos; ++p) {
      if (slot_at(p) == Slot::kFloatT) return types[p] == types[pos];
    }
  }
  return true;
}

std::string output_types_of(IoSlots const& slots, DataType const* in, int32_t nb_in, DataType* out,
                            int32_t nb_out) {
  if (nb_in != static_cast<int32_t>(slots.inputs.size()) ||
      nb_out != static_cast<int32_t>(slots.outputs.size())) {
    return "expected " + str(slots.inputs.size()) + " inputs and " + str(slots.outputs.size()) +
           " outputs, got " + str(nb_in) + " and " + str(nb_out);
  }
  bool have_t = false;
  DataType t = DataType::kFLOAT;
  for (int32_t i = 0; i < nb_in; ++i) {
    Slot const slot = slots.inputs[i];
    if (!slot_accepts(slot, in[i])) {
      return "input " + str(i) + " must be " + slot_name(slot) + ", got " + type_name(in[i]);
    }
    if (slot != Slot::kFloatT) continue;
    if (have_t && in[i] != t) {
      return "input " + str(i) + " must have the float type of the other float inputs";
    }
    have_t = true;
    t = in[i];
  }
  for (int32_t i = 0; i < nb_out; ++i) {
    switch (slots.outputs[i]) {
      case Slot::kFloatT:
        out[i] = t;
        break;
      case Slot::kInt64:
        out[i] = DataType::kINT64;
        break;
      case Slot::kInt32:
        out[i] = DataType::kINT32;
        break;
      case Slot::kFloat32:
        out[i] = DataType::kFLOAT;
        break;
      case Slot::kHalf:
        out[i] = DataType::kHALF;
        break;
      case Slot::kCodes:
        return "internal: an output slot cannot be kCodes";
    }
  }
  return "";
}

std::vector<ShapeRule> rvq_lookup_shapes(std::vector<int32_t> const& ranks, std::string& why) {
  if (ranks.size() != 2 || ranks[0] < 1 || ranks[1] != 3) {
    why = "expects codes [..., D] (rank >= 1) and codebooks [Dc, R, C] (rank 3)";
    return {};
  }
  return {leading_then(0, ranks[0], from(1, 2))};
}

std::vector<ShapeRule> rvq_encode_shapes(std::vector<int32_t> const& ranks, int32_t depth,
                                         std::string& why) {
  if (ranks.size() != 2 || ranks[0] < 1 || ranks[1] != 3) {
    why = "expects features [..., C] (rank >= 1) and codebooks [Dc, R, C] (rank 3)";
    return {};
  }
  return {leading_then(0, ranks[0], constant(depth)),
          leading_then(0, ranks[0], from(0, ranks[0] - 1))};
}

std::vector<ShapeRule> w4a16_gemm_shapes(std::vector<int32_t> const& ranks, std::string& why) {
  if ((ranks.size() != 4 && ranks.size() != 5) || ranks[0] < 1 || ranks[3] != 2) {
    why =
        "expects x [..., K] (rank >= 1), qweight, qzeros, scales [K/G, N] (rank 2), "
        "optionally bias";
    return {};
  }
  return {leading_then(0, ranks[0], from(3, 1))};
}

std::vector<ShapeRule> depth_decode_shapes(std::vector<int32_t> const& ranks, int32_t depth,
                                           std::string& why) {
  if (ranks.size() != 9 || ranks[0] != 2 || ranks[2] != 3) {
    why = "expects 9 inputs with hidden [2n, H] (rank 2) and codebooks [Dc, R, C] (rank 3)";
    return {};
  }
  return {{from(0, 0, 2), constant(depth)}, {constant(depth), from(0, 0), from(2, 1, 1, 1)}};
}

std::vector<Dims> eval_shapes(std::vector<ShapeRule> const& rules, std::vector<Dims> const& in) {
  std::vector<Dims> out;
  for (ShapeRule const& rule : rules) {
    Dims d{};
    d.nbDims = static_cast<int32_t>(rule.size());
    for (size_t i = 0; i < rule.size(); ++i) {
      DimRule const& r = rule[i];
      d.d[i] = r.input < 0 ? r.value : in[r.input].d[r.dim] / r.div - r.sub;
    }
    out.push_back(d);
  }
  return out;
}

std::string rvq_lookup_check(Dims const* in, int32_t nb_in) {
  if (nb_in != 2) return "expects 2 inputs (codes, codebooks), got " + str(nb_in);
  if (in[0].nbDims < 1) return want("codes", in[0], "[..., D]");
  return check_codebooks(in[1], in[0].d[in[0].nbDims - 1]);
}

std::string rvq_encode_check(Dims const* in, int32_t nb_in, int32_t n_embed, int32_t depth) {
  if (nb_in != 2) return "expects 2 inputs (features, codebooks), got " + str(nb_in);
  if (n_embed < 1 || depth < 1) {
    return "fields n_embed = " + str(n_embed) + " and depth = " + str(depth) + " must be >= 1";
  }
  Dims const& f = in[0];
  Dims const& cb = in[1];
  if (f.nbDims < 1) return want("features", f, "[..., C]");
  std::string why = check_codebooks(cb, depth);
  if (!why.empty()) return why;
  if (differ(cb.d[1], int64_t{n_embed} + 1)) {
    return want("codebooks", cb, "[Dc, n_embed + 1 = " + str(int64_t{n_embed} + 1) + ", C]");
  }
  int64_t const c = f.d[f.nbDims - 1];
  if (differ(cb.d[2], c)) return want("codebooks", cb, "[Dc, R, C = " + str(c) + "] (features' C)");
  if (c > kRvqEncodeCudaMaxDim) {
    return "features width C = " + str(c) + " exceeds the CUDA kernel's limit " +
           str(kRvqEncodeCudaMaxDim);
  }
  return "";
}

std::string w4a16_gemm_check(Dims const* in, int32_t nb_in, int32_t group_size) {
  if (nb_in != 4 && nb_in != 5) {
    return "expects 4 or 5 inputs (x, qweight, qzeros, scales[, bias]), got " + str(nb_in);
  }
  if (group_size < 1) return "field group_size = " + str(group_size) + " must be >= 1";
  Dims const& x = in[0];
  if (x.nbDims < 1) return want("x", x, "[..., K]");
  if (in[3].nbDims != 2) return want("scales", in[3], "[K/G, N]");
  int64_t const k = x.d[x.nbDims - 1];
  int64_t const n = in[3].d[1];
  if (k >= 0 && k % group_size) {
    return "x's K = " + str(k) + " is not a multiple of group_size = " + str(group_size);
  }
  if (n >= 0 && (n < 8 || n % 8)) return want("scales", in[3], "[K/G, N] with N a multiple of 8");
  int64_t const groups = k < 0 ? -1 : k / group_size;
  int64_t const words = n < 0 ? -1 : n / 8;
  std::string const kn8 = "[K = " + str(k) + ", N/8 = " + str(words) + "]";
  std::string const gn8 = "[K/G = " + str(groups) + ", N/8 = " + str(words) + "]";
  if (in[1].nbDims != 2 || differ(in[1].d[0], k) || differ(in[1].d[1], words)) {
    return want("qweight", in[1], kn8);
  }
  if (in[2].nbDims != 2 || differ(in[2].d[0], groups) || differ(in[2].d[1], words)) {
    return want("qzeros", in[2], gn8);
  }
  if (differ(in[3].d[0], groups)) return want("scales", in[3], "[K/G = " + str(groups) + ", N]");
  if (nb_in == 5 && (in[4].nbDims != 1 || differ(in[4].d[0], n))) {
    return want("bias", in[4], "[N = " + str(n) + "]");
  }
  return "";
}

std::string depth_decode_check(Dims const* in, int32_t nb_in, int32_t n_layer, int32_t n_head,
                               int32_t embed_dim, int32_t depth) {
  if (nb_in != 9) return "expects 9 inputs (see vilau_rt/depth_ops.py), got " + str(nb_in);
  if (n_layer < 1 || n_head < 1 || embed_dim < 1 || depth < 1) {
    return "fields n_layer, n_head, embed_dim, depth must be >= 1";
  }
  if (embed_dim % n_head) {
    return "field n_head = " + str(n_head) + " must divide embed_dim = " + str(embed_dim);
  }
  if (depth > kDepthDecodeMaxDepth) {
    return "field depth = " + str(depth) + " exceeds the kernel's limit " +
           str(kDepthDecodeMaxDepth);
  }
  Dims const& hidden = in[0];
  if (hidden.nbDims != 2 || (hidden.d[0] >= 0 && hidden.d[0] % 2)) {
    return want("hidden", hidden, "[2n, H] (rows [cond..., uncond...])");
  }
  std::string why = check_codebooks(in[2], depth);
  if (!why.empty()) return why;
  Dims const& cb = in[2];
  if (in[1].nbDims != 1) return want("weights", in[1], "[P] (pack_depth_weights)");
  if (hidden.d[1] >= 0 && cb.d[1] >= 0 && cb.d[2] >= 0) {
    int64_t const p =
        depth_weight_count(embed_dim, n_layer, depth, cb.d[2], hidden.d[1], cb.d[1] - 1);
    if (differ(in[1].d[0], p)) {
      return want("weights", in[1], "[P = " + str(p) + "] for these fields, H and codebooks");
    }
  }
  char const* scalars[] = {"cfg_scale", "temperature", "top_k", "top_p", "seed"};
  for (int i = 0; i < 5; ++i) {
    why = check_scalar(scalars[i], in[3 + i]);
    if (!why.empty()) return why;
  }
  Dims const& forced = in[8];
  int64_t const n = hidden.d[0] < 0 ? -1 : hidden.d[0] / 2;
  if (forced.nbDims != 2 || differ(forced.d[0], n) || differ(forced.d[1], depth)) {
    return want("forced_codes", forced, "[n = " + str(n) + ", D = " + str(depth) + "]");
  }
  return "";
}

int64_t depth_weight_count(int64_t e, int64_t n_layer, int64_t depth, int64_t c, int64_t h,
                           int64_t v) {
  int64_t const block = 2 * e + 4 * (e * e + e) + 2 * e + (4 * e * e + 4 * e) + (4 * e * e + e);
  return depth * e + (e * c + e) + (e * h + e) + n_layer * block + 2 * e + (v * e + v);
}

}  // namespace vilau::trt
