#include "isa.h"

#include <cstring>
#include <initializer_list>

namespace fastlayers::cpu {
namespace {

Isa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0).
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return Isa::avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

}  // namespace

Isa best_isa() {
  static const Isa best = detect();
  return best;
}

bool isa_supported(Isa isa) {
  return isa == Isa::best || static_cast<int>(isa) <= static_cast<int>(best_isa());
}

Isa resolve_isa(Isa isa) { return isa == Isa::best ? best_isa() : isa; }

Isa runnable_isa(Isa requested) {
  const Isa isa = resolve_isa(requested);
  return isa_supported(isa) ? isa : best_isa();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::generic: return "generic";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::best: return "best";
  }
  return "unknown";
}

bool parse_isa(const char* name, Isa* out) {
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::best}) {
    if (std::strcmp(name, isa_name(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace fastlayers::cpu
