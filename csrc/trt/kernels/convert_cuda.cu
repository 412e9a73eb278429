#include "common/cuda_check.h"
#include "kernels/convert_cuda.h"

namespace vilau {

namespace {
__global__ void int32_to_int64_kernel(int32_t const* src, int64_t* dst, int64_t count) {
  int64_t const stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += stride) {
    dst[i] = src[i];
  }
}
}  // namespace

void int32_to_int64_cuda(int32_t const* src, int64_t* dst, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  constexpr int kThreads = 256;
  int64_t const blocks = (count + kThreads - 1) / kThreads;
  int32_to_int64_kernel<<<static_cast<unsigned>(blocks < 65535 ? blocks : 65535), kThreads, 0,
                          stream>>>(src, dst, count);
  cuda_check_launch("int32_to_int64_cuda");
}

}  // namespace vilau
