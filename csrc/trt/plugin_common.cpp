#include "plugin_common.h"

#include <cstdio>
#include <exception>
#include <stdexcept>

namespace vilau::trt {

using nvinfer1::DataType;
using nvinfer1::ILogger;

namespace {
nvinfer1::ILoggerFinder* gLoggerFinder = nullptr;

char const* severity_name(ILogger::Severity severity) {
  switch (severity) {
    case ILogger::Severity::kINTERNAL_ERROR:
      return "INTERNAL_ERROR";
    case ILogger::Severity::kERROR:
      return "ERROR";
    case ILogger::Severity::kWARNING:
      return "WARNING";
    case ILogger::Severity::kINFO:
      return "INFO";
    case ILogger::Severity::kVERBOSE:
      return "VERBOSE";
  }
  return "?";
}
}  // namespace

void set_logger_finder(nvinfer1::ILoggerFinder* finder) noexcept { gLoggerFinder = finder; }

void log(ILogger::Severity severity, char const* plugin, std::string const& message) noexcept {
  try {
    std::string const line = std::string("[vilau_trt] ") + plugin + ": " + message;
    ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr) {
      logger->log(severity, line.c_str());
    } else {
      std::fprintf(stderr, "%s %s\n", severity_name(severity), line.c_str());
    }
  } catch (...) {
    std::fprintf(stderr, "[vilau_trt] %s: (out of memory while logging)\n", plugin);
  }
}

void log_error(char const* plugin, std::string const& message) noexcept {
  log(ILogger::Severity::kERROR, plugin, message);
}

DType to_dtype(DataType type) {
  switch (type) {
    case DataType::kFLOAT:
      return DType::kFloat32;
    case DataType::kHALF:
      return DType::kFloat16;
    case DataType::kBF16:
      return DType::kBFloat16;
    default:
      throw std::invalid_argument(
          "float tensors must be kFLOAT, kHALF or kBF16, got " + type_name(type));
  }
}

std::string dims_string(nvinfer1::Dims const& dims) {
  std::string s = "[";
  for (int32_t i = 0; i < dims.nbDims; ++i) s += (i ? ", " : "") + std::to_string(dims.d[i]);
  return s + "]";
}

int64_t volume(nvinfer1::Dims const& dims) noexcept { return volume(dims, 0, dims.nbDims); }

int64_t volume(nvinfer1::Dims const& dims, int32_t begin, int32_t end) noexcept {
  int64_t v = 1;
  for (int32_t i = begin; i < end; ++i) v *= dims.d[i];
  return v;
}

bool read_int_fields(char const* plugin, nvinfer1::PluginFieldCollection const* fc,
                     std::vector<char const*> const& names, std::vector<int32_t>& values) noexcept {
  try {
    values.assign(names.size(), 0);
    std::vector<bool> seen(names.size(), false);
    int32_t const count = fc == nullptr ? 0 : fc->nbFields;
    for (int32_t i = 0; i < count; ++i) {
      nvinfer1::PluginField const& f = fc->fields[i];
      std::string const name = f.name == nullptr ? "" : f.name;
      size_t j = 0;
      while (j < names.size() && name != names[j]) ++j;
      if (j == names.size()) {
        log(ILogger::Severity::kWARNING, plugin, "ignoring unknown field '" + name + "'");
        continue;
      }
      if (f.data == nullptr || f.length != 1) {
        log_error(plugin, "field '" + name + "' must hold one value, got length " +
                              std::to_string(f.length));
        return false;
      }
      if (f.type == nvinfer1::PluginFieldType::kINT32) {
        values[j] = *static_cast<int32_t const*>(f.data);
      } else if (f.type == nvinfer1::PluginFieldType::kINT64) {
        int64_t const v = *static_cast<int64_t const*>(f.data);
        if (v != static_cast<int32_t>(v)) {
          log_error(plugin, "field '" + name + "' = " + std::to_string(v) + " exceeds int32");
          return false;
        }
        values[j] = static_cast<int32_t>(v);
      } else {
        log_error(plugin, "field '" + name +
                              "' must be kINT32 (an ONNX INT attribute), got "
                              "PluginFieldType " +
                              std::to_string(static_cast<int32_t>(f.type)));
        return false;
      }
      seen[j] = true;
    }
    for (size_t j = 0; j < names.size(); ++j) {
      if (!seen[j]) {
        log_error(plugin, std::string("missing field '") + names[j] + "' (an INT attribute)");
        return false;
      }
    }
    return true;
  } catch (std::exception const& e) {
    log_error(plugin, std::string("reading fields: ") + e.what());
    return false;
  }
}

// ---------------------------------------------------------------------------- PluginBase

PluginBase::PluginBase(char const* name, std::vector<char const*> field_names,
                       std::vector<int32_t> values)
    : mName(name), mFieldNames(std::move(field_names)), mValues(std::move(values)) {}

nvinfer1::IPluginCapability* PluginBase::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kCORE:
      return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD:
      return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME:
      return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
  }
  log_error(mName, "unknown capability type " + std::to_string(static_cast<int32_t>(type)));
  return nullptr;
}

int32_t PluginBase::getNbOutputs() const noexcept {
  try {
    return static_cast<int32_t>(slots(-1).outputs.size());
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return -1;
  }
}

int32_t PluginBase::getOutputDataTypes(DataType* output_types, int32_t nb_outputs,
                                       DataType const* input_types,
                                       int32_t nb_inputs) const noexcept {
  try {
    std::string const why =
        output_types_of(slots(nb_inputs), input_types, nb_inputs, output_types, nb_outputs);
    if (!why.empty()) {
      log_error(mName, "getOutputDataTypes: " + why);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return -1;
  }
}

int32_t PluginBase::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nb_inputs,
                                    nvinfer1::DimsExprs const* /*shape_inputs*/,
                                    int32_t /*nb_shape_inputs*/, nvinfer1::DimsExprs* outputs,
                                    int32_t nb_outputs, nvinfer1::IExprBuilder& builder) noexcept {
  try {
    std::vector<int32_t> ranks;
    for (int32_t i = 0; i < nb_inputs; ++i) ranks.push_back(inputs[i].nbDims);
    std::string why;
    std::vector<ShapeRule> const rules = shape_rules(ranks, why);
    if (rules.empty()) {
      log_error(mName, "getOutputShapes: " + why);
      return -1;
    }
    if (static_cast<int32_t>(rules.size()) != nb_outputs) {
      log_error(mName, "getOutputShapes: " + std::to_string(nb_outputs) + " outputs asked, " +
                           std::to_string(rules.size()) + " produced");
      return -1;
    }
    for (int32_t o = 0; o < nb_outputs; ++o) {
      outputs[o].nbDims = static_cast<int32_t>(rules[o].size());
      for (size_t i = 0; i < rules[o].size(); ++i) {
        DimRule const& r = rules[o][i];
        nvinfer1::IDimensionExpr const* e =
            r.input < 0 ? builder.constant(r.value) : inputs[r.input].d[r.dim];
        if (r.input >= 0 && r.div != 1) {
          e = builder.operation(nvinfer1::DimensionOperation::kFLOOR_DIV, *e,
                                *builder.constant(r.div));
        }
        if (r.input >= 0 && r.sub != 0) {
          e = builder.operation(nvinfer1::DimensionOperation::kSUB, *e, *builder.constant(r.sub));
        }
        if (e == nullptr) {
          log_error(mName, "getOutputShapes: the expression builder returned nullptr");
          return -1;
        }
        outputs[o].d[i] = e;
      }
    }
    return 0;
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return -1;
  }
}

bool PluginBase::supportsFormatCombination(int32_t pos,
                                           nvinfer1::DynamicPluginTensorDesc const* in_out,
                                           int32_t nb_inputs, int32_t nb_outputs) noexcept {
  try {
    std::vector<DataType> types;
    std::vector<nvinfer1::TensorFormat> formats;
    for (int32_t i = 0; i < nb_inputs + nb_outputs; ++i) {
      types.push_back(in_out[i].desc.type);
      formats.push_back(in_out[i].desc.format);
    }
    return supports_format(slots(nb_inputs), pos, types.data(), formats.data(),
                           nb_inputs + nb_outputs);
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return false;
  }
}

int32_t PluginBase::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nb_inputs,
                                    nvinfer1::DynamicPluginTensorDesc const* /*out*/,
                                    int32_t /*nb_outputs*/) noexcept {
  try {
    std::vector<nvinfer1::Dims> dims;
    for (int32_t i = 0; i < nb_inputs; ++i) dims.push_back(in[i].desc.dims);
    std::string const why = check_shapes(dims.data(), nb_inputs);
    if (!why.empty()) {
      log_error(mName, "configurePlugin: " + why);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return -1;
  }
}

int32_t PluginBase::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nb_inputs,
                                  nvinfer1::PluginTensorDesc const* /*out*/,
                                  int32_t /*nb_outputs*/) noexcept {
  try {
    std::vector<nvinfer1::Dims> dims;
    for (int32_t i = 0; i < nb_inputs; ++i) dims.push_back(in[i].dims);
    std::string const why = check_shapes(dims.data(), nb_inputs);
    if (!why.empty()) {
      log_error(mName, "onShapeChange: " + why);
      return -1;
    }
    return 0;
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return -1;
  }
}

nvinfer1::IPluginV3* PluginBase::attachToContext(nvinfer1::IPluginResourceContext*) noexcept {
  return clone();
}

nvinfer1::PluginFieldCollection const* PluginBase::getFieldsToSerialize() noexcept {
  try {
    // rebuilt at every call: a clone's fields must point at its own values
    mFields.clear();
    for (size_t i = 0; i < mFieldNames.size(); ++i) {
      mFields.emplace_back(mFieldNames[i], &mValues[i], nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
    return &mCollection;
  } catch (std::exception const& e) {
    log_error(mName, e.what());
    return nullptr;
  }
}

std::string PluginBase::check_shapes(nvinfer1::Dims const*, int32_t) const noexcept { return ""; }

// ---------------------------------------------------------------------------- IntFieldCreator

IntFieldCreator::IntFieldCreator(char const* name, std::vector<char const*> field_names,
                                 PluginFactory make)
    : mName(name), mFieldNames(std::move(field_names)), mMake(make) {
  for (char const* field : mFieldNames) {
    mFields.emplace_back(field, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
  }
  mCollection.nbFields = static_cast<int32_t>(mFields.size());
  mCollection.fields = mFields.data();
}

nvinfer1::IPluginV3* IntFieldCreator::createPlugin(nvinfer1::AsciiChar const* /*name*/,
                                                   nvinfer1::PluginFieldCollection const* fc,
                                                   nvinfer1::TensorRTPhase /*phase*/) noexcept {
  try {
    std::vector<int32_t> values;
    if (!read_int_fields(mName, fc, mFieldNames, values)) return nullptr;
    return mMake(std::move(values));
  } catch (std::exception const& e) {
    log_error(mName, std::string("createPlugin: ") + e.what());
    return nullptr;
  }
}

}  // namespace vilau::trt
