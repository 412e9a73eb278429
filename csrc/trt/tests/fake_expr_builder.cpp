#include "tests/fake_expr_builder.h"

#include <algorithm>

namespace vilau::trt::test {

using nvinfer1::DimensionOperation;
using nvinfer1::IDimensionExpr;

class ConstDim::Impl final : public nvinfer1::apiv::VDimensionExpr {
 public:
  explicit Impl(int64_t value) : mValue(value) {}
  bool isConstant() const override { return true; }
  int64_t getConstantValue() const override { return mValue; }
  bool isSizeTensor() const override { return false; }

 private:
  int64_t mValue;
};

ConstDim::ConstDim(int64_t value) : mOwned(new Impl(value)) { mImpl = mOwned.get(); }
ConstDim::~ConstDim() noexcept = default;

class FakeExprBuilder::Impl final : public nvinfer1::apiv::VExprBuilder {
 public:
  IDimensionExpr const* constant(int64_t value) override {
    mPool.push_back(std::make_unique<ConstDim>(value));
    return mPool.back().get();
  }

  IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first,
                                  IDimensionExpr const& second) override {
    if (!first.isConstant() || !second.isConstant()) return nullptr;
    int64_t const a = first.getConstantValue(), b = second.getConstantValue();
    switch (op) {
      case DimensionOperation::kSUM:
        return constant(a + b);
      case DimensionOperation::kPROD:
        return constant(a * b);
      case DimensionOperation::kMAX:
        return constant(std::max(a, b));
      case DimensionOperation::kMIN:
        return constant(std::min(a, b));
      case DimensionOperation::kSUB:
        return constant(a - b);
      case DimensionOperation::kEQUAL:
        return constant(a == b);
      case DimensionOperation::kLESS:
        return constant(a < b);
      case DimensionOperation::kFLOOR_DIV:
        if (b == 0) return nullptr;
        return constant(a / b - ((a % b != 0) && ((a < 0) != (b < 0))));
      case DimensionOperation::kCEIL_DIV:
        if (b == 0) return nullptr;
        return constant(a / b + ((a % b != 0) && ((a < 0) == (b < 0))));
    }
    return nullptr;
  }

  IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&,
                                          IDimensionExpr const&) override {
    return nullptr;
  }

 private:
  std::deque<std::unique_ptr<ConstDim>> mPool;
};

FakeExprBuilder::FakeExprBuilder() : mOwned(new Impl()) { mImpl = mOwned.get(); }
FakeExprBuilder::~FakeExprBuilder() noexcept = default;

IDimensionExpr const* FakeExprBuilder::make(int64_t value) { return mOwned->constant(value); }

nvinfer1::DimsExprs FakeExprBuilder::exprs(nvinfer1::Dims const& dims) {
  nvinfer1::DimsExprs e{};
  e.nbDims = dims.nbDims;
  for (int32_t i = 0; i < dims.nbDims; ++i) e.d[i] = make(dims.d[i]);
  return e;
}

}  // namespace vilau::trt::test
