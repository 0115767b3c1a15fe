// The CPU emulation of CUDA launches, barriers and warp collectives (see cuda_emulation.h), and the
// one runtime call the kernels' launchers make besides launches (cudaMemsetAsync). Each CUDA
// thread is a ucontext fiber; under AddressSanitizer every stack switch is announced to it
// (__sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber), so it tracks the fibers'
// stacks.
#include "cuda_emulation.h"

#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cuda/common.cuh"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define FASTLAYERS_START_SWITCH(save, bottom, size) \
  __sanitizer_start_switch_fiber(save, bottom, size)
#define FASTLAYERS_FINISH_SWITCH(save, bottom, size) \
  __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define FASTLAYERS_START_SWITCH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define FASTLAYERS_FINISH_SWITCH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

namespace fastlayers::cuda::emulation {

thread_local Position position;
Schedule schedule;

namespace {

constexpr unsigned kWarpSize = 32;
// Room for a kernel's frames, with AddressSanitizer's redzones.
constexpr size_t kStackBytes = size_t{256} << 10;

[[noreturn]] void fail(const char* what, const char* first, const char* second) {
  std::fprintf(stderr, "CUDA emulation: %s (%s; %s)\n", what, first, second);
  std::abort();
}

enum class Wait { none, block, warp, done };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  Wait wait = Wait::none;
  const char* where = nullptr;  // the barrier it waits at
  void* fake_stack = nullptr;   // AddressSanitizer's, while switched out
};

// One launch's block of fibers and the scheduler that runs them.
struct Block {
  unsigned threads = 0;
  std::vector<Fiber> fibers;
  std::vector<unsigned long long> exchange;  // match_any's values, one per thread
  const std::function<void()>* body = nullptr;
  ucontext_t scheduler;
  void* scheduler_fake_stack = nullptr;
  const void* scheduler_bottom = nullptr;
  size_t scheduler_size = 0;
};

thread_local Block* current = nullptr;

Fiber& running() { return current->fibers[position.thread.x]; }

// From the running fiber back to the scheduler; returns when the scheduler resumes it.
void yield() {
  Fiber& self = running();
  FASTLAYERS_START_SWITCH(&self.fake_stack, current->scheduler_bottom, current->scheduler_size);
  swapcontext(&self.context, &current->scheduler);
  FASTLAYERS_FINISH_SWITCH(self.fake_stack, nullptr, nullptr);
}

void fiber_main() {
  FASTLAYERS_FINISH_SWITCH(nullptr, &current->scheduler_bottom, &current->scheduler_size);
  (*current->body)();
  running().wait = Wait::done;
  FASTLAYERS_START_SWITCH(nullptr, current->scheduler_bottom, current->scheduler_size);
  setcontext(&current->scheduler);
}

// The threads [first, first + count) of the barrier the running fiber waits at.
void barrier_range(Wait kind, unsigned& first, unsigned& count) {
  if (kind == Wait::block) {
    first = 0;
    count = current->threads;
  } else {
    first = position.thread.x / kWarpSize * kWarpSize;
    count = std::min(kWarpSize, current->threads - first);
  }
}

// Waits at a barrier of the running fiber's block or warp. The last to arrive releases the
// others and goes on without yielding.
void arrive(Wait kind, const char* where) {
  unsigned first, count;
  barrier_range(kind, first, count);
  Fiber& self = running();
  self.wait = kind;
  self.where = where;
  for (unsigned t = first; t < first + count; ++t) {
    const Fiber& other = current->fibers[t];
    if (other.wait != kind) {
      // Not there yet (or gone: the scheduler reports a thread that left the kernel).
      yield();
      return;
    }
    if (std::strcmp(other.where, where) != 0) {
      fail("threads wait at different barriers", other.where, where);
    }
  }
  for (unsigned t = first; t < first + count; ++t) current->fibers[t].wait = Wait::none;
}

// Runs thread t until it waits at a barrier or leaves the kernel. A function of its own, so that
// no local of the scheduler's loop lives across the context switch.
__attribute__((noinline)) void resume(Block& block, unsigned t) {
  Fiber& f = block.fibers[t];
  position.thread = {t, 0, 0};
  FASTLAYERS_START_SWITCH(&block.scheduler_fake_stack, f.stack.get(), kStackBytes);
  swapcontext(&block.scheduler, &f.context);
  FASTLAYERS_FINISH_SWITCH(block.scheduler_fake_stack, nullptr, nullptr);
}

// Makes f start the kernel at its next resume.
__attribute__((noinline)) void restart(Fiber& f) {
  f.wait = Wait::none;
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.get();
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main, 0);
}

void run_block(Block& block) {
  for (unsigned t = 0; t < block.threads; ++t) restart(block.fibers[t]);
  for (;;) {
    bool ran = false;
    for (unsigned i = 0; i < block.threads; ++i) {
      const unsigned t = schedule.reverse ? block.threads - 1 - i : i;
      if (block.fibers[t].wait != Wait::none) continue;
      ran = true;
      resume(block, t);
    }
    if (ran) continue;
    // Nobody can run: either every thread is done, or some wait at a barrier that others left.
    for (unsigned t = 0; t < block.threads; ++t) {
      if (block.fibers[t].wait != Wait::done) {
        fail("a barrier was never completed: threads left the kernel or wait elsewhere",
             block.fibers[t].where, block.fibers[t].wait == Wait::warp ? "warp" : "block");
      }
    }
    return;
  }
}

void check_full_mask(unsigned mask, const char* where) {
  unsigned first, count;
  barrier_range(Wait::warp, first, count);
  const unsigned full = count == kWarpSize ? 0xffffffffu : (1u << count) - 1;
  if ((mask & full) != full) {
    fail("a warp collective without every lane of the warp is not emulated", where, "mask");
  }
}

}  // namespace

cudaError_t run_grid(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (grid == 0 || block == 0 || block > 1024) return cudaErrorInvalidConfiguration;
  if (current != nullptr) fail("a launch from inside a kernel", "run_grid", "not emulated");
  // Stacks are kept for the next launch of this thread.
  thread_local std::vector<Fiber> fibers;
  Block state;
  state.threads = block;
  fibers.resize(std::max<size_t>(fibers.size(), block));
  for (auto& f : fibers) {
    if (!f.stack) f.stack.reset(new char[kStackBytes]);  // not zeroed: touched as used
  }
  state.fibers.swap(fibers);
  state.exchange.resize(block);
  state.body = &body;
  current = &state;
  if (schedule.max_grid != 0) grid = std::min(grid, schedule.max_grid);
  position.block_dim = dim3(block);
  position.grid_dim = dim3(grid);
  for (unsigned b = 0; b < grid; ++b) {
    position.block = {b, 0, 0};
    run_block(state);
  }
  current = nullptr;
  state.fibers.swap(fibers);
  return cudaSuccess;
}

void sync_block(const char* where) { arrive(Wait::block, where); }

void sync_warp(const char* where, unsigned mask) {
  check_full_mask(mask, where);
  arrive(Wait::warp, where);
}

unsigned match_any(const char* where, unsigned mask, unsigned long long value) {
  check_full_mask(mask, where);
  unsigned first, count;
  barrier_range(Wait::warp, first, count);
  current->exchange[position.thread.x] = value;
  arrive(Wait::warp, where);
  unsigned peers = 0;
  for (unsigned l = 0; l < count; ++l) {
    if (current->exchange[first + l] == value) peers |= 1u << l;
  }
  arrive(Wait::warp, where);  // every lane has read the values before any lane rewrites its own
  return peers;
}

namespace {

// The sum in the accumulation type (float for half types), rounded back to T: what the
// hardware's atomicAdd stores.
template <typename T>
T fetch_add(T* address, T value) {
  const T old = *address;
  *address = from_acc<T>(to_acc(old) + to_acc(value));
  return old;
}

}  // namespace

float atomic_add(float* address, float value) { return fetch_add(address, value); }
double atomic_add(double* address, double value) { return fetch_add(address, value); }
__half atomic_add(__half* address, __half value) { return fetch_add(address, value); }
__nv_bfloat16 atomic_add(__nv_bfloat16* address, __nv_bfloat16 value) {
  return fetch_add(address, value);
}

}  // namespace fastlayers::cuda::emulation

// Device memory is host memory here, and the stream runs synchronously.
extern "C" cudaError_t cudaMemsetAsync(void* device_ptr, int value, size_t count, cudaStream_t) {
  std::memset(device_ptr, value, count);
  return cudaSuccess;
}

namespace nvcuda::wmma::detail {

void check(const void* pointer, unsigned ldm, size_t element_bytes, const char* where) {
  const bool aligned = reinterpret_cast<uintptr_t>(pointer) % 32 == 0;
  const bool whole_units = ldm * element_bytes % 16 == 0;
  if (!aligned || !whole_units) {
    std::fprintf(stderr, "CUDA emulation: %s with %s (pointer %p, ldm %u of %zu-byte elements)\n",
                 where, !aligned ? "a pointer not 256-bit aligned" : "ldm not whole 16 bytes",
                 pointer, ldm, element_bytes);
    std::abort();
  }
}

}  // namespace nvcuda::wmma::detail
