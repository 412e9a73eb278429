#include "common/cpu_isa.h"

#include <algorithm>
#include <stdexcept>

namespace vilau {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(_M_X64)
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

std::vector<std::string> cpu_isas() {
  std::vector<std::string> isas;
  if (cpu_has_avx512()) isas.push_back("avx512");
  if (cpu_has_avx2()) isas.push_back("avx2");
#if defined(__aarch64__)
  isas.push_back("neon");  // part of every aarch64 CPU
#endif
  isas.push_back("scalar");
  return isas;
}

std::string cpu_isa(const char* op, const std::string& isa) {
  return pick_isa(op, isa, cpu_isas());
}

std::string pick_isa(const char* op, const std::string& isa, const std::vector<std::string>& isas) {
  const std::string name = isa == "auto" ? isas.front() : isa;
  if (std::find(isas.begin(), isas.end(), name) == isas.end()) {
    std::string known;
    for (const auto& i : isas) known += (known.empty() ? "" : ", ") + i;
    throw std::invalid_argument(std::string(op) + ": isa '" + isa + "' is not available here (" +
                                known + ", auto)");
  }
  return name;
}

}  // namespace vilau
