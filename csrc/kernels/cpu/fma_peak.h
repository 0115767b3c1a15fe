// The machine's measured FMA peak: independent fused multiply-add chains on every vector
// register, with no memory traffic. The benchmark quotes kernel speed as a fraction of it.
#pragma once

#include "parallel.h"

namespace fastlayers::cpu {

// GFLOP/s (2 per lane per FMA) of float32 FMAs at ctx.isa's vector width on ctx.num_threads
// threads, over about `seconds` of work.
double fma_peak_gflops(const Context& ctx, double seconds);

}  // namespace fastlayers::cpu
