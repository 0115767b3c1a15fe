// Threading for the CPU kernels: a context that says how many threads a kernel may use, and a
// parallel_for over contiguous chunks. No torch here; the torch layer fills the context from
// at::get_num_threads(), so torch.set_num_threads is honoured. OpenMP is the same runtime torch
// uses (libgomp), so the two never fight over cores; without OpenMP everything runs serially.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "isa.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastlayers::cpu {

// What a kernel may use: how many threads, and which instruction set.
struct Context {
  int num_threads = 1;
  Isa isa = Isa::best;
  bool winograd = true;  // whether 3x3 and 5x5 convs may take the Winograd path (conv2d.cpp)
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
constexpr int64_t round_up_constexpr(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Calls f(chunk) for chunk in [0, num_chunks), chunks spread over at most ctx.num_threads threads.
// Callers that keep per-chunk scratch (partial sums, packing buffers) allocate it before the call,
// indexed by chunk, so nothing is allocated or thrown inside the parallel region.
template <typename F>
void parallel_chunks(const Context& ctx, int64_t num_chunks, const F& f) {
  if (num_chunks <= 0) return;
#ifdef _OPENMP
  const int64_t threads = std::min<int64_t>(ctx.num_threads, num_chunks);
  if (threads > 1 && !omp_in_parallel()) {
#pragma omp parallel for num_threads(static_cast<int>(threads)) schedule(static, 1)
    for (int64_t c = 0; c < num_chunks; ++c) f(c);
    return;
  }
#endif
  for (int64_t c = 0; c < num_chunks; ++c) f(c);
}

// Calls f(begin, end) on contiguous ranges covering [0, n): one range per thread, each at least
// `grain` items long, so small work stays on one thread instead of paying fork/join.
template <typename F>
void parallel_for(const Context& ctx, int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(ctx.num_threads, ceil_div(n, std::max<int64_t>(grain, 1)));
  if (chunks <= 1) {
    f(int64_t{0}, n);
    return;
  }
  const int64_t per = ceil_div(n, chunks);
  parallel_chunks(ctx, chunks, [&](int64_t c) {
    const int64_t begin = c * per, end = std::min(n, begin + per);
    if (begin < end) f(begin, end);
  });
}

// A scratch buffer of at least n elements, one per calling thread and Tag, kept for that thread's
// next call: packing buffers are needed on every call, and a fresh allocation of a few hundred KiB
// costs more than a small GEMM (glibc maps it anew, and every page faults on first touch). The
// contents are left as the last call left them. A Tag is one call site: a user must not call
// code that uses the same Tag while it holds the buffer.
template <typename T, typename Tag>
T* thread_scratch(int64_t n) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < n) buffer.resize(static_cast<size_t>(n));
  return buffer.data();
}

// How many threads an op of `work` scalar operations deserves: fork/join in libgomp costs a few
// microseconds, so anything under ~64K multiply-adds (tens of microseconds serial) stays serial.
inline Context context_for_work(const Context& ctx, double work) {
  constexpr double kMinWorkPerThread = 65536.0;
  const int64_t useful = static_cast<int64_t>(work / kMinWorkPerThread);
  Context run = ctx;
  run.num_threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(ctx.num_threads, useful)));
  return run;
}

}  // namespace fastlayers::cpu
