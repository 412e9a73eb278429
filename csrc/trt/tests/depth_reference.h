// Plain C++ depth loop of vilau::DepthDecode in float32 (the harness's CPU reference): the
// maths of vilau_rt.native_ops.depth_loop, one operation at a time, sampling with the csrc
// CPU sampler (sample_codes_cpu at (seed, counter 0, subsequence = depth)).
#pragma once

#include <cstdint>

#include "kernels/depth_decode_cuda.h"

namespace vilau::trt::test {

//! codes [n, D] and logits [D, 2n, V] from hidden [2n, H], weights [P] and codebooks
//! [Dc, R, C] (all float32, packed as depth_decode_cuda.h describes).
void depth_decode_reference(float const* hidden, float const* weights, float const* codebooks,
                            int64_t seed, int64_t const* forced_codes, int64_t* codes,
                            float* logits, DepthDecodeSizes const& s, DepthSampling const& sp);

}  // namespace vilau::trt::test
