// What every vilau TensorRT plugin shares: logging through TensorRT's logger, INT fields, and
// one base class that wires IPluginV3 to its three capability interfaces.
//
// Only TensorRT's headers are used (inline code and virtual calls): the library needs no
// TensorRT library symbol. Plugins are noexcept; a failure is logged with its reason before
// the method returns -1 (or false / nullptr).
#pragma once

#include <NvInferRuntime.h>

#if NV_TENSORRT_MAJOR < 10
#error "the vilau plugins implement IPluginV3, which TensorRT 10.0 introduced"
#endif
// The IPluginV3 / IPluginV3One* / IPluginCreatorV3One signatures used here are the same in the
// 10.3 and 11.1 headers; what differs (ILoggerFinder and ILogger derive from
// IVersionedInterface in 11.x) changes their vtables, so build once per TensorRT major version.

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "shape_rules.h"

namespace vilau::trt {

//! Plugin version of every vilau plugin (ONNX node attribute `plugin_version`, default "1").
constexpr char const* kPluginVersion = "1";
//! Plugin namespace: empty, so that the ONNX parser finds the plugins by op_type alone.
constexpr char const* kPluginNamespace = "";

//! Stores the logger finder TensorRT hands to setLoggerFinder (nullptr: log to stderr).
void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept;
//! Logs "[vilau_trt] <plugin>: <message>" at @p severity through TensorRT's logger.
void log(nvinfer1::ILogger::Severity severity, char const* plugin,
         std::string const& message) noexcept;
//! log(kERROR, ...), for the reason a method is about to fail.
void log_error(char const* plugin, std::string const& message) noexcept;

//! The csrc DType of a float TensorRT type. @throws std::invalid_argument for other types.
DType to_dtype(nvinfer1::DataType type);
//! "[2, 3, 4]" for messages.
std::string dims_string(nvinfer1::Dims const& dims);
//! Product of the extents of @p dims (1 for a scalar).
int64_t volume(nvinfer1::Dims const& dims) noexcept;
//! Product of dims[begin..end).
int64_t volume(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept;

//! Reads INT fields @p names from @p fc (kINT32, or kINT64 that fits, length 1) into @p values.
//! Unknown fields are logged as warnings and ignored (the ONNX parser may add its own).
//! @return false, after logging which field is missing or mistyped.
bool read_int_fields(char const* plugin, nvinfer1::PluginFieldCollection const* fc,
                     std::vector<char const*> const& names, std::vector<int32_t>& values) noexcept;

//! IPluginV3 with its core, build and runtime capabilities. A subclass holds INT fields
//! (attribute values in ONNX), serialises them, and implements the shape rules and enqueue.
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
 public:
  PluginBase(char const* name, std::vector<char const*> field_names, std::vector<int32_t> values);

  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override;

  nvinfer1::AsciiChar const* getPluginName() const noexcept override { return mName; }
  nvinfer1::AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
  nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override {
    return kPluginNamespace;
  }

  // Build rules: wrappers over shape_rules.h (slots() and shape_rules() of the subclass).
  int32_t getNbOutputs() const noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* output_types, int32_t nb_outputs,
                             nvinfer1::DataType const* input_types,
                             int32_t nb_inputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_inputs,
                          nvinfer1::DimsExprs const* shape_inputs, int32_t nb_shape_inputs,
                          nvinfer1::DimsExprs* outputs, int32_t nb_outputs,
                          nvinfer1::IExprBuilder& expr_builder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* in_out,
                                 int32_t nb_inputs, int32_t nb_outputs) noexcept override;

  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_inputs,
                          nvinfer1::DynamicPluginTensorDesc const* out,
                          int32_t nb_outputs) noexcept override;
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_inputs,
                        nvinfer1::PluginTensorDesc const* out,
                        int32_t nb_outputs) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 protected:
  //! Accepted types of inputs and outputs when the node has @p nb_inputs inputs.
  virtual IoSlots slots(int32_t nb_inputs) const = 0;
  //! Output extents from input ranks (shape_rules.h); empty with @p why on bad ranks.
  virtual std::vector<ShapeRule> shape_rules(std::vector<int32_t> const& ranks,
                                             std::string& why) const = 0;
  //! Shared by configurePlugin and onShapeChange: "" when the input shapes are acceptable,
  //! else the reason (naming the input). Default: accept.
  virtual std::string check_shapes(nvinfer1::Dims const* in, int32_t nb_inputs) const noexcept;
  //! Value of field @p i (in the order of the creator's field names).
  int32_t field(int i) const { return mValues[static_cast<size_t>(i)]; }

  char const* mName;
  std::vector<char const*> mFieldNames;
  std::vector<int32_t> mValues;

 private:
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mCollection{};
};

//! Factory of one plugin type from its INT field values.
using PluginFactory = nvinfer1::IPluginV3* (*)(std::vector<int32_t> values);

//! IPluginCreatorV3One for a plugin whose fields are all INT (kINT32, as the ONNX parser
//! passes INT attributes).
class IntFieldCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  IntFieldCreator(char const* name, std::vector<char const*> field_names, PluginFactory make);

  nvinfer1::IPluginV3* createPlugin(nvinfer1::AsciiChar const* name,
                                    nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }
  nvinfer1::AsciiChar const* getPluginName() const noexcept override { return mName; }
  nvinfer1::AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
  nvinfer1::AsciiChar const* getPluginNamespace() const noexcept override {
    return kPluginNamespace;
  }

 private:
  char const* mName;
  std::vector<char const*> mFieldNames;
  PluginFactory mMake;
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mCollection{};
};

}  // namespace vilau::trt
