// The process-wide CPU settings the torch layer hands to every CPU kernel: the thread count
// (torch.set_num_threads), the instruction set (fastlayers.set_cpu_isa, default the best the
// CPU has) and whether 3x3 and 5x5 convs may use Winograd (fastlayers.set_cpu_winograd, default
// on). The kernels themselves hold no global state; they read these from their Context.
#pragma once

#include "kernels/cpu/parallel.h"

namespace fastlayers {

cpu::Context cpu_context();
cpu::Isa cpu_isa();  // resolved: never Isa::best
// Returns false (and changes nothing) when this CPU cannot run `isa`.
bool set_cpu_isa(cpu::Isa isa);
bool cpu_winograd();
void set_cpu_winograd(bool enabled);

}  // namespace fastlayers
