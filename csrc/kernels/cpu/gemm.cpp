// Blocked GEMM in the BLIS layout: the K x NC block of B is packed into NR-wide panels that stay
// in L2, the MC x KC block of A into MR-tall panels, and an MR x NR register-blocked micro-kernel
// sweeps them. Threads split C into tiles; each packs its own operands, so no thread waits on
// another. The epilogue (accumulate, bias, ReLU) runs on the last K block, while C's tile is hot.
#include "gemm.h"

#include <cmath>
#include <memory>
#include <vector>

namespace fastlayers::cpu {
namespace {

// Register tile and cache blocks. MR x NR accumulators fill 8 of the 16 vector registers of the
// x86-64 baseline (SSE2: 4 floats or 2 doubles each), leaving room for the A broadcast and B loads.
// KC x NR of B (16 KiB for float) fits L1; MC x KC of A (128 KiB) and KC x NC of B (512 KiB) fit L2.
template <typename T>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int64_t MR = 4, NR = 8, MC = 128, KC = 256, NC = 512;
};
template <>
struct Blocking<double> {
  static constexpr int64_t MR = 4, NR = 4, MC = 64, KC = 256, NC = 256;
};

template <typename T>
inline T relu_value(T v) {
  return (v > T(0) || std::isnan(v)) ? v : T(0);
}

template <typename T>
inline T read(const Operand<T>& op, int64_t i, int64_t k) {
  const int64_t offset = i * op.row_stride + k * op.col_stride;
  const T v = op.data[offset];
  return (op.relu_mask && !(op.relu_mask[offset] > T(0))) ? T(0) : v;
}

// Packs rows [i0, i0 + mc) x cols [p0, p0 + kc) of A as MR-row panels, k-major inside a panel:
// panel[p * MR + r]. Rows past mc are zero so the micro-kernel never needs a remainder path.
template <typename T>
void pack_a(const Operand<T>& A, int64_t i0, int64_t mc, int64_t p0, int64_t kc, T* out) {
  constexpr int64_t MR = Blocking<T>::MR;
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int64_t rows = std::min(MR, mc - ir);
    T* panel = out + ir * kc;
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t r = 0; r < MR; ++r) {
        panel[p * MR + r] = r < rows ? read(A, i0 + ir + r, p0 + p) : T(0);
      }
    }
  }
}

// Packs rows [p0, p0 + kc) x cols [j0, j0 + nc) of B as NR-column panels: panel[p * NR + c].
template <typename T>
void pack_b(const Operand<T>& B, int64_t p0, int64_t kc, int64_t j0, int64_t nc, T* out) {
  constexpr int64_t NR = Blocking<T>::NR;
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t cols = std::min(NR, nc - jr);
    T* panel = out + jr * kc;
    for (int64_t p = 0; p < kc; ++p) {
      for (int64_t c = 0; c < NR; ++c) {
        panel[p * NR + c] = c < cols ? read(B, p0 + p, j0 + jr + c) : T(0);
      }
    }
  }
}

// acc[MR][NR] = sum_p a[p][:] (outer) b[p][:]. Fixed trip counts let the compiler keep acc in
// registers and vectorise the NR loop.
template <typename T>
inline void micro_kernel(int64_t kc, const T* __restrict a, const T* __restrict b,
                         T* __restrict acc_out) {
  constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR;
  T acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t r = 0; r < MR; ++r) {
      const T ar = a[p * MR + r];
      for (int64_t c = 0; c < NR; ++c) acc[r][c] += ar * b[p * NR + c];
    }
  }
  for (int64_t r = 0; r < MR; ++r)
    for (int64_t c = 0; c < NR; ++c) acc_out[r * NR + c] = acc[r][c];
}

template <typename T>
struct TileJob {
  int64_t M, N, K;
  Operand<T> A, B;
  T* C;
  int64_t ldc;
  Epilogue<T> ep;
  int64_t mc, nc;  // tile size for this call
};

// Computes the C tile at rows [i0, i0 + mc), cols [j0, j0 + nc).
template <typename T>
void compute_tile(const TileJob<T>& job, int64_t i0, int64_t mc, int64_t j0, int64_t nc, T* apack,
                  T* bpack) {
  constexpr int64_t MR = Blocking<T>::MR, NR = Blocking<T>::NR, KC = Blocking<T>::KC;
  T acc[MR * NR];
  for (int64_t p0 = 0; p0 < job.K; p0 += KC) {
    const int64_t kc = std::min(KC, job.K - p0);
    const bool first = p0 == 0, last = p0 + kc >= job.K;
    const bool add_old = !first || job.ep.accumulate;
    pack_b(job.B, p0, kc, j0, nc, bpack);
    pack_a(job.A, i0, mc, p0, kc, apack);
    for (int64_t jr = 0; jr < nc; jr += NR) {
      const int64_t cols = std::min(NR, nc - jr);
      for (int64_t ir = 0; ir < mc; ir += MR) {
        const int64_t rows = std::min(MR, mc - ir);
        micro_kernel<T>(kc, apack + ir * kc, bpack + jr * kc, acc);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t i = i0 + ir + r;
          T* c_row = job.C + i * job.ldc + j0 + jr;
          for (int64_t c = 0; c < cols; ++c) {
            T v = acc[r * NR + c];
            if (add_old) v += c_row[c];
            if (last) {
              if (job.ep.row_bias) v += job.ep.row_bias[i];
              if (job.ep.col_bias) v += job.ep.col_bias[j0 + jr + c];
              if (job.ep.relu) v = relu_value(v);
            }
            c_row[c] = v;
          }
        }
      }
    }
  }
}

// K == 0: the product is zero and only the epilogue remains.
template <typename T>
void epilogue_only(int64_t M, int64_t N, T* C, int64_t ldc, const Epilogue<T>& ep) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T v = ep.accumulate ? C[i * ldc + j] : T(0);
      if (ep.row_bias) v += ep.row_bias[i];
      if (ep.col_bias) v += ep.col_bias[j];
      C[i * ldc + j] = ep.relu ? relu_value(v) : v;
    }
  }
}

}  // namespace

template <typename T>
void gemm(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B, T* C,
          int64_t ldc, const Epilogue<T>& epilogue) {
  using Blk = Blocking<T>;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    epilogue_only(M, N, C, ldc, epilogue);
    return;
  }
  const Context run = context_for_work(ctx, double(M) * double(N) * double(K));
  const int64_t threads = run.num_threads;

  // Tiles of at most MC x NC; when there are fewer tiles than threads, narrow them (keeping
  // whole register tiles) so every thread gets work.
  int64_t mc = std::min(Blk::MC, round_up(M, Blk::MR));
  int64_t nc = std::min(Blk::NC, round_up(N, Blk::NR));
  if (ceil_div(M, mc) * ceil_div(N, nc) < threads) {
    const int64_t n_split = ceil_div(threads, ceil_div(M, mc));
    nc = std::max(Blk::NR, round_up(ceil_div(N, n_split), Blk::NR));
    if (ceil_div(M, mc) * ceil_div(N, nc) < threads) {
      const int64_t m_split = ceil_div(threads, ceil_div(N, nc));
      mc = std::max(Blk::MR, round_up(ceil_div(M, m_split), Blk::MR));
    }
  }
  const int64_t tiles_m = ceil_div(M, mc), tiles_n = ceil_div(N, nc);
  const int64_t tiles = tiles_m * tiles_n;
  const int64_t chunks = std::min<int64_t>(threads, tiles);

  const int64_t kc = std::min(Blk::KC, K);
  const int64_t a_size = round_up(mc, Blk::MR) * kc, b_size = round_up(nc, Blk::NR) * kc;
  std::vector<T> scratch(static_cast<size_t>(chunks * (a_size + b_size)));

  const TileJob<T> job{M, N, K, A, B, C, ldc, epilogue, mc, nc};
  // Parallel over C tiles (rows of tiles first, so neighbouring threads share B panels in L3).
  parallel_chunks(run, chunks, [&](int64_t chunk) {
    T* apack = scratch.data() + chunk * (a_size + b_size);
    T* bpack = apack + a_size;
    for (int64_t t = chunk; t < tiles; t += chunks) {
      const int64_t tm = t / tiles_n, tn = t % tiles_n;
      const int64_t i0 = tm * mc, j0 = tn * nc;
      compute_tile(job, i0, std::min(mc, M - i0), j0, std::min(nc, N - j0), apack, bpack);
    }
  });
}

template void gemm<float>(const Context&, int64_t, int64_t, int64_t, Operand<float>, Operand<float>,
                          float*, int64_t, const Epilogue<float>&);
template void gemm<double>(const Context&, int64_t, int64_t, int64_t, Operand<double>,
                           Operand<double>, double*, int64_t, const Epilogue<double>&);

}  // namespace fastlayers::cpu
