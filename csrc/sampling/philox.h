// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the
// counter-based generator of Random123 and cuRAND, written once for host and device code so
// that the CPU and CUDA samplers draw the same numbers.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define VILAU_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VILAU_HOST_DEVICE inline
#endif

namespace vilau {

//! Four 32-bit words of Philox4x32-10 output for @p counter under @p key.
struct Philox4x32 {
  uint32_t v[4];
};

VILAU_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

//! Philox4x32 with 10 rounds; matches Random123's philox4x32_R(10, ctr, key).
VILAU_HOST_DEVICE Philox4x32 philox4x32_10(const uint32_t counter[4], const uint32_t key[2]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c0, &hi0, &lo0);
    philox_mulhilo(0xCD9E8D57u, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

//! The 64-bit uniform draw of one sampled row: Philox4x32-10 with key = seed and counter
//! words (counter low, counter high, row, subsequence); the first two output words.
VILAU_HOST_DEVICE uint64_t sample_draw_bits(uint64_t seed, uint64_t counter, uint32_t row,
                                            uint32_t subsequence) {
  const uint32_t ctr[4] = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                           row, subsequence};
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const Philox4x32 out = philox4x32_10(ctr, key);
  return (static_cast<uint64_t>(out.v[0]) << 32) | out.v[1];
}

//! floor(bits * total / 2^64): a uniform integer in [0, total), exact on host and device.
VILAU_HOST_DEVICE uint64_t scale_draw(uint64_t bits, uint64_t total) {
#ifdef __CUDA_ARCH__
  return __umul64hi(bits, total);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * total) >> 64);
#endif
}

//! Order-preserving map float32 -> uint32 (larger float, larger key; -0 just below +0;
//! a positive NaN above +inf, a negative NaN below -inf).
VILAU_HOST_DEVICE uint32_t float_order_key(uint32_t bits) {
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

//! Inverse of float_order_key.
VILAU_HOST_DEVICE uint32_t order_key_bits(uint32_t key) {
  return (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
}

}  // namespace vilau
