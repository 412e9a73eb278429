// <immintrin.h> for the run-time-dispatched x86-64 SIMD paths. GCC 12's AVX-512 intrinsics start
// from _mm512_undefined_*() and trip -W(maybe-)uninitialized inside the header (GCC bug 105593,
// fixed in 13); the warnings are about the header, not the kernels, so they are off for it only.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
