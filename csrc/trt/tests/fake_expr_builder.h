// A minimal IExprBuilder over constant extents, so that the harness can call a plugin's
// getOutputShapes without TensorRT. IExprBuilder and IDimensionExpr forward every call to
// their apiv implementation objects (header-only inline code), so concrete apiv classes are
// all a fake needs.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <memory>

namespace vilau::trt::test {

//! A constant extent.
class ConstDim final : public nvinfer1::IDimensionExpr {
 public:
  explicit ConstDim(int64_t value);
  ~ConstDim() noexcept override;

 private:
  class Impl;
  std::unique_ptr<Impl> mOwned;
};

//! Evaluates constant() and operation() on constants; declareSizeTensor is unsupported.
class FakeExprBuilder final : public nvinfer1::IExprBuilder {
 public:
  FakeExprBuilder();
  ~FakeExprBuilder() noexcept override;

  //! A constant owned by the builder (for building the inputs' DimsExprs).
  nvinfer1::IDimensionExpr const* make(int64_t value);
  //! DimsExprs of a concrete shape.
  nvinfer1::DimsExprs exprs(nvinfer1::Dims const& dims);

 private:
  class Impl;
  std::unique_ptr<Impl> mOwned;
};

}  // namespace vilau::trt::test
