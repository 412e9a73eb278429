// The AutoAWQ GEMM nibble order, shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define VILAU_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VILAU_HOST_DEVICE inline
#endif

namespace vilau {

//! Nibble of a packed word that holds output column 8c + j: {0, 4, 1, 5, 2, 6, 3, 7}[j]
//! (the packer writes columns {0, 2, 4, 6, 1, 3, 5, 7} into nibbles 0..7).
VILAU_HOST_DEVICE int awq_nibble_of_column(int j) { return (j >> 1) + ((j & 1) << 2); }

//! 4-bit value for output column 8c + j of a packed word (read as unsigned: the top
//! nibble may make the int32 negative).
VILAU_HOST_DEVICE int awq_unpack(int32_t word, int j) {
  return static_cast<int>((static_cast<uint32_t>(word) >> (4 * awq_nibble_of_column(j))) & 0xfu);
}

}  // namespace vilau
