// The int8-weight GEMV on the inputs tests/ops/test_gemv_w8.py wrote, on every path this machine
// runs (built by that test for aarch64 and run under qemu: the NEON path; the test compares the
// results with the x86-64 ones, bit for bit).
//
// Usage: gemv_w8_check CASE...; each CASE file holds int64 m, k, n, has_bias, then float32
// x[m * k], int8 w[n * k], float32 row_scale[n] and, if has_bias, float32 bias[n] (the machine's
// byte order: both ends are little-endian). Writes CASE.out: y[m * n] for each entry of
// gemv_f32_isas() in order, float32.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "gemv/gemv_f32.h"

namespace {

template <class T>
bool read(std::FILE* f, std::vector<T>& v, int64_t count) {
  v.resize(count);
  return std::fread(v.data(), sizeof(T), count, f) == static_cast<size_t>(count);
}

bool run_case(const std::vector<std::string>& isas, const std::string& path) {
  std::FILE* in = std::fopen(path.c_str(), "rb");
  if (!in) return false;
  std::vector<int64_t> head;
  std::vector<float> x, scale, bias;
  std::vector<int8_t> w;
  bool ok = read(in, head, 4);
  if (ok) {
    const int64_t m = head[0], k = head[1], n = head[2];
    ok = read(in, x, m * k) && read(in, w, n * k) && read(in, scale, n) &&
         (!head[3] || read(in, bias, n));
  }
  std::fclose(in);
  if (!ok) return false;
  const int64_t m = head[0], k = head[1], n = head[2];
  std::FILE* out = std::fopen((path + ".out").c_str(), "wb");
  if (!out) return false;
  for (const auto& isa : isas) {
    std::vector<float> y(m * n);
    vilau::gemv_w8_cpu(x.data(), w.data(), scale.data(), head[3] ? bias.data() : nullptr,
                       y.data(), m, k, n, 2, isa);
    ok = ok && std::fwrite(y.data(), sizeof(float), y.size(), out) == y.size();
  }
  return std::fclose(out) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> isas = vilau::gemv_f32_isas();
  std::printf("isas:");
  for (const auto& i : isas) std::printf(" %s", i.c_str());
  std::printf("\n");
  for (int i = 1; i < argc; ++i) {
    if (!run_case(isas, argv[i])) {
      std::printf("could not run %s\n", argv[i]);
      return 1;
    }
  }
  std::printf("%d cases\n", argc - 1);
  return 0;
}
