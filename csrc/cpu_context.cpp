#include "cpu_context.h"

#include <ATen/Parallel.h>

#include <atomic>

namespace fastlayers {
namespace {

std::atomic<cpu::Isa> requested_isa{cpu::Isa::best};
std::atomic<bool> winograd{true};

}  // namespace

cpu::Context cpu_context() {
  return cpu::Context{at::get_num_threads(), requested_isa.load(std::memory_order_relaxed),
                      winograd.load(std::memory_order_relaxed)};
}

cpu::Isa cpu_isa() { return cpu::resolve_isa(requested_isa.load(std::memory_order_relaxed)); }

bool set_cpu_isa(cpu::Isa isa) {
  if (!cpu::isa_supported(isa)) return false;
  requested_isa.store(isa, std::memory_order_relaxed);
  return true;
}

bool cpu_winograd() { return winograd.load(std::memory_order_relaxed); }

void set_cpu_winograd(bool enabled) { winograd.store(enabled, std::memory_order_relaxed); }

}  // namespace fastlayers
