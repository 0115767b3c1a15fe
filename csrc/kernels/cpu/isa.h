// Which instruction set the CPU kernels use. Each ISA has its own GEMM micro-kernel, compiled for
// that ISA alone (see gemm_avx2.cpp, gemm_avx512.cpp) and chosen at run time from what the CPU
// reports, so one build runs everywhere and uses the widest vectors the machine has.
#pragma once

namespace fastlayers::cpu {

// Ordered from narrowest to widest: a CPU that supports one supports every ISA before it.
enum class Isa {
  generic,  // portable C++ (any CPU; the compiler's baseline vectors)
  avx2,     // x86-64 AVX2 + FMA: 256-bit vectors
  avx512,   // x86-64 AVX-512 (F, DQ, VL): 512-bit vectors
  best,     // the widest ISA this CPU supports
};

// The widest ISA this CPU and OS support (detected once).
Isa best_isa();
bool isa_supported(Isa isa);
// `best` becomes best_isa(); any other value is returned as is.
Isa resolve_isa(Isa isa);
// The ISA a context asks for, or the widest this CPU has where it lacks that one.
Isa runnable_isa(Isa requested);
// "generic", "avx2", "avx512", "best"; parse_isa returns false for an unknown name.
const char* isa_name(Isa isa);
bool parse_isa(const char* name, Isa* out);

}  // namespace fastlayers::cpu
