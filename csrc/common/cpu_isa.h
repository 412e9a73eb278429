// Instruction-set paths of the CPU kernels, detected at run time: one list and one way to pick
// a path for every kernel family (csrc/w4a16, csrc/gemv).
#pragma once

#include <string>
#include <vector>

namespace vilau {

bool cpu_has_avx2();    //!< AVX2, FMA and F16C at run time (false off x86-64)
bool cpu_has_avx512();  //!< AVX-512 F/BW/VL plus the above at run time (false off x86-64)

//! Paths this machine runs, fastest first: "avx512", "avx2" (x86-64), "neon" (aarch64), and
//! always "scalar" last, the reference every other path is tested against.
std::vector<std::string> cpu_isas();

//! @p isa ("auto": the first of cpu_isas()) checked against this machine.
//! @throws std::invalid_argument "<op>: isa '<isa>' is not available here (...)".
std::string cpu_isa(const char* op, const std::string& isa);

//! cpu_isa against a kernel family's own list (@p isas, fastest first).
std::string pick_isa(const char* op, const std::string& isa, const std::vector<std::string>& isas);

}  // namespace vilau
