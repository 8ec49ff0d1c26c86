// Fused, cache-blocked causal attention for CPU (flash-attention style), forward and backward.
//
// Called from JAX through the XLA FFI; see cpu_attention.py for the Python side and
// docs/decisions/0003-cpu-fused-attention.md for the design.
//
// Layouts (row-major):
//   q, q_pos, out, dout, dq, dq_pos : [B, T, H, D] f32
//   k, v, dk, dv                    : [B, T, K, D] f32, query head h uses kv head h / (H / K)
//   segment_ids                     : [B, T] s32
//   rel_keys                        : [T, H, D] f32, row r = key vector of distance r = i - j
//   d rel_keys                      : [T, H, D] (summed over b) or [B, T, H, D] (per batch row)
//   alibi_slopes                    : [H] f32
//   lse                             : [B, H, T] f32 (natural-log logsumexp of each scaled score row)
//
// Score_ij = scale * (q_i . k_j + q_pos_i . rel_keys[i - j]) - slope_h * (i - j), allowed iff
// j <= i and seg_i == seg_j. The forward splits (b, h) pairs across threads, the backward
// (batch chunk, kv head) groups (so GQA heads accumulate dk/dv without races); each (b, h)'s rows
// are packed (head dimension zero-padded to a multiple of 16) into contiguous per-thread buffers,
// then processed in Bq x Bk tiles with an online softmax (flash-attention 2 backward: scores are
// recomputed from the saved logsumexp). Tiles with no allowed pair are skipped (causal: about
// half; packed documents: more).
//
// Everything is written with GCC vector extensions (16 x f32 = one AVX-512 register; GCC lowers
// them to narrower registers on other ISAs).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

// Tuning knobs (GOPHER_JAX_KERNEL_CXXFLAGS="-DGJ_BQ=.. -DGJ_BK=.. -DGJ_MR4=.."): on the 2-core
// AVX-512 dev VM, 64 x 64 tiles beat 32/128 x 64 and 64 x 128, and 4-row vs 6-row register
// blocking of the 64-wide score GEMM was a tie.
#ifndef GJ_BQ
#define GJ_BQ 64
#endif
#ifndef GJ_BK
#define GJ_BK 64
#endif
constexpr int kBq = GJ_BQ;  // query rows per tile
constexpr int kBk = GJ_BK;  // keys per tile (multiple of 16)
constexpr int kNVk = kBk / 16;
constexpr float kNegBig = -1e30f;  // finite "minus infinity" (code is built with -ffast-math)

inline v16 vload(const float* p) {
  v16 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void vstore(float* p, v16 v) { __builtin_memcpy(p, &v, sizeof(v)); }
inline v16i vloadi(const int32_t* p) {
  v16i v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline v16 vsplat(float x) { return v16{} + x; }
// Horizontal reductions as a tree of shuffles (the scalar loop compiles to 15 dependent ops).
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
inline v4 fold16(v16 v, bool mx) {
  v8 lo = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  v8 hi = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  v8 a = mx ? (lo > hi ? lo : hi) : lo + hi;
  v4 l4 = __builtin_shufflevector(a, a, 0, 1, 2, 3);
  v4 h4 = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return mx ? (l4 > h4 ? l4 : h4) : l4 + h4;
}
inline float hsum(v16 v) {
  v4 b = fold16(v, false);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
inline float hmax(v16 v) {
  v4 b = fold16(v, true);
  return std::max(std::max(b[0], b[2]), std::max(b[1], b[3]));
}

// exp(x) for x <= ~0 (clamped to [-87, 88]); Cephes-style polynomial, rel. error ~1e-7.
inline v16 vexp(v16 x) {
  x = x < vsplat(-87.f) ? vsplat(-87.f) : x;
  x = x > vsplat(88.f) ? vsplat(88.f) : x;
  const v16 log2e = vsplat(1.44269504088896341f);
  // n = round(x * log2e) with the 1.5 * 2^23 trick (the asm keeps -ffast-math from folding it)
  v16 t = x * log2e + vsplat(12582912.f);
#ifdef __AVX512F__
  __asm__("" : "+v"(t));
#else
  __asm__("" : "+m"(t));
#endif
  v16 nf = t - vsplat(12582912.f);
  v16i n;
  __builtin_memcpy(&n, &t, sizeof(n));
  n -= 0x4B400000;
  v16 r = x - nf * vsplat(0.693359375f) + nf * vsplat(2.12194440e-4f);
  v16 r2 = r * r;
  v16 y = vsplat(1.9875691500E-4f);
  y = y * r + vsplat(1.3981999507E-3f);
  y = y * r + vsplat(8.3334519073E-3f);
  y = y * r + vsplat(4.1665795894E-2f);
  y = y * r + vsplat(1.6666665459E-1f);
  y = y * r + vsplat(5.0000001201E-1f);
  y = y * r2 + r + vsplat(1.f);
  v16i bits = (n + 127) << 23;
  v16 scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// C[m, n] (+)= sum_k A[m*a_rs + k*a_cs] * B[m*b_ms + k*b_rs + n] for m < MR, n < 16*NV.
// kSharedB (b_ms == 0) reuses each B vector across the MR rows; every current caller uses it (the
// per-row-offset variant served an earlier per-tile relative-term GEMM).
template <int MR, int NV, bool kSharedB>
inline void mm_block(int K, const float* __restrict A, long a_rs, long a_cs,
                     const float* __restrict B, long b_rs, long b_ms, float* __restrict C,
                     long ldc, bool accumulate) {
  v16 c[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) c[m][n] = accumulate ? vload(C + m * ldc + 16 * n) : v16{};
  for (int k = 0; k < K; ++k) {
    const float* bk = B + k * b_rs;
    if constexpr (kSharedB) {
      v16 b[NV];
      for (int n = 0; n < NV; ++n) b[n] = vload(bk + 16 * n);
      for (int m = 0; m < MR; ++m) {
        v16 a = vsplat(A[m * a_rs + k * a_cs]);
        for (int n = 0; n < NV; ++n) c[m][n] += a * b[n];
      }
    } else {
      for (int m = 0; m < MR; ++m) {
        v16 a = vsplat(A[m * a_rs + k * a_cs]);
        for (int n = 0; n < NV; ++n) c[m][n] += a * vload(bk + m * b_ms + 16 * n);
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) vstore(C + m * ldc + 16 * n, c[m][n]);
}

template <int NV, bool kSharedB>
inline void mm_nv(int M, int K, const float* A, long a_rs, long a_cs, const float* B, long b_rs,
                  long b_ms, float* C, long ldc, bool accumulate) {
  #ifndef GJ_MR4
#define GJ_MR4 4
#endif
  constexpr int MR = NV <= 2 ? 8 : GJ_MR4;
  int m = 0;
  for (; m + MR <= M; m += MR)
    mm_block<MR, NV, kSharedB>(K, A + m * a_rs, a_rs, a_cs, B + m * b_ms, b_rs, b_ms, C + m * ldc,
                               ldc, accumulate);
  if constexpr (MR > 4) {
    if (m + 4 <= M) {
      mm_block<4, NV, kSharedB>(K, A + m * a_rs, a_rs, a_cs, B + m * b_ms, b_rs, b_ms,
                                C + m * ldc, ldc, accumulate);
      m += 4;
    }
  }
  if (m + 2 <= M) {
    mm_block<2, NV, kSharedB>(K, A + m * a_rs, a_rs, a_cs, B + m * b_ms, b_rs, b_ms, C + m * ldc,
                              ldc, accumulate);
    m += 2;
  }
  if (m < M)
    mm_block<1, NV, kSharedB>(K, A + m * a_rs, a_rs, a_cs, B + m * b_ms, b_rs, b_ms,
                              C + m * ldc, ldc, accumulate);
}

// Same as mm_block for an arbitrary N (multiple of 16), split into chunks of <= 64 columns.
template <bool kSharedB>
void mm(int M, int N, int K, const float* A, long a_rs, long a_cs, const float* B, long b_rs,
        long b_ms, float* C, long ldc, bool accumulate) {
  if (M <= 0) return;
  for (int n0 = 0; n0 < N; n0 += 64) {
    int nv = std::min(4, (N - n0) / 16);
    const float* Bn = B + n0;
    float* Cn = C + n0;
    switch (nv) {
      case 4: mm_nv<4, kSharedB>(M, K, A, a_rs, a_cs, Bn, b_rs, b_ms, Cn, ldc, accumulate); break;
      case 3: mm_nv<3, kSharedB>(M, K, A, a_rs, a_cs, Bn, b_rs, b_ms, Cn, ldc, accumulate); break;
      case 2: mm_nv<2, kSharedB>(M, K, A, a_rs, a_cs, Bn, b_rs, b_ms, Cn, ldc, accumulate); break;
      default: mm_nv<1, kSharedB>(M, K, A, a_rs, a_cs, Bn, b_rs, b_ms, Cn, ldc, accumulate); break;
    }
  }
}

// Runs fn(item, worker) for item in [0, n) on up to `threads` threads (the caller is one of them).
template <typename F>
void parallel_for(int n, int threads, F fn) {
  threads = std::max(1, std::min(threads, n));
  std::atomic<int> next{0};
  auto work = [&](int worker) {
    for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i, worker);
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
}

int num_threads() {
  if (const char* env = std::getenv("GOPHER_JAX_ATTN_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

struct Problem {
  int B, T, H, KH, D;
  int G, Dp, Tk, TR, TRld, PADL, ldW;
  float scale;
  bool rel, alibi;
  const float *q, *k, *v, *qp, *rk, *slopes;
  const float *relT_all = nullptr, *rel_all = nullptr;  // pack_rel of every head (if rel)
  const int32_t* seg;

  void init() {
    G = H / KH;
    Dp = round_up(D, 16);
    Tk = round_up(T, kBk);
    // Reversed relative keys: row PADL + T-1-r holds rel_keys[r]. PADL >= kBq makes every row a
    // tile can touch valid; (PADL + T) % 16 == 0 makes each query block's window start aligned.
    PADL = kBq + (16 - T % 16) % 16;
    TR = PADL + T + kBq + kBk + 16;
    ldW = round_up(T + 2 * kBq + kBk, 16) + 16;  // row stride of the per-query-block rel buffers
    TRld = round_up(TR, 16);  // row stride of its transpose: an odd number of cache lines
    if ((TRld / 16) % 2 == 0) TRld += 16;
  }
  // Element [b, t, head, :] of a [B, T, heads, D] array.
  long idx(int b, int t, int heads, int head) const {
    return ((static_cast<long>(b) * T + t) * heads + head) * D;
  }
};

// Tile classification from segment ids: 0 = skip (no allowed pair), 1 = allowed pairs exist.
// `uniform` tells whether all queries and keys of the tile share one segment.
inline bool tile_any_allowed(const int32_t* seg, int i0, int qb, int j0, int kb, bool* uniform) {
  int32_t s0 = seg[i0];
  bool uni = true;
  for (int i = 0; i < qb && uni; ++i) uni = seg[i0 + i] == s0;
  for (int j = 0; j < kb && uni; ++j) uni = seg[j0 + j] == s0;
  *uniform = uni;
  if (uni) return true;
  for (int i = 0; i < qb; ++i) {
    int jmax = std::min(kb, i0 + i - j0 + 1);
    for (int j = 0; j < jmax; ++j)
      if (seg[j0 + j] == seg[i0 + i]) return true;
  }
  return false;
}

// Per-worker scratch, sized once per call.
// Scratch memory is reused across calls: fresh allocations fault in new pages every call, which
// cost several percent. Buffers go back to a small process-wide pool when a call ends.
class PooledBuffer {
 public:
  PooledBuffer() = default;
  explicit PooledBuffer(size_t n) { acquire(n); }
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  PooledBuffer(PooledBuffer&& o) noexcept : data_(o.data_), cap_(o.cap_) { o.data_ = nullptr; }
  ~PooledBuffer() { release(); }
  void acquire(size_t n) {
    release();
    std::lock_guard<std::mutex> lock(mu());
    auto& p = pool();
    size_t best = p.size();
    for (size_t i = 0; i < p.size(); ++i)
      if (p[i].second >= n && (best == p.size() || p[i].second < p[best].second)) best = i;
    if (best < p.size()) {
      data_ = p[best].first;
      cap_ = p[best].second;
      p.erase(p.begin() + best);
      return;
    }
    cap_ = n;
    data_ = static_cast<float*>(std::aligned_alloc(64, (n + 15) / 16 * 16 * sizeof(float)));
  }
  float* data() const { return data_; }

 private:
  void release() {
    if (!data_) return;
    std::lock_guard<std::mutex> lock(mu());
    auto& p = pool();
    p.emplace_back(data_, cap_);
    if (p.size() > 16) {  // keep the pool small: drop the smallest buffer
      auto it = std::min_element(p.begin(), p.end(),
                                 [](auto& a, auto& b) { return a.second < b.second; });
      std::free(it->first);
      p.erase(it);
    }
    data_ = nullptr;
  }
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::pair<float*, size_t>>& pool() {
    static auto* p = new std::vector<std::pair<float*, size_t>>();
    return *p;
  }
  float* data_ = nullptr;
  size_t cap_ = 0;
};

struct Scratch {
  PooledBuffer buf;
  float* alloc(size_t n) {
    size_t off = used;
    used += round_up(static_cast<int>(n), 16);
    return buf.data() + off;
  }
  size_t used = 0;
};

// Packs the (b, h) slices: Qs = scale*q [T, Dp], QPs = scale*q_pos [T, Dp], Kt [Dp, Tk],
// K [Tk, Dp], V [Tk, Dp], Vt [Dp, Tk], RrevT [Dp, TR] (column PADL + T-1-r = rel_keys[r]),
// Rrev [TR, Dp]. Null destinations are skipped. Padding is zero.
struct Packed {
  float *Qs = nullptr, *QPs = nullptr, *Kt = nullptr, *K = nullptr, *V = nullptr, *Vt = nullptr,
        *RrevT = nullptr, *Rrev = nullptr;
};

inline void prefetch_row(const float* p, int n) {
  for (int i = 0; i < n; i += 16) __builtin_prefetch(p + i);
}

// With kv == false the k/v slices are left as they are (already packed for this kv head).
void pack(const Problem& P, int b, int h, Packed& pk, bool kv = true) {
  const int T = P.T, D = P.D, Dp = P.Dp, Tk = P.Tk, kh = h / P.G;
  auto rows = [&](float* dst, const float* src, int heads, int head, float s, int nrows) {
    for (int t = 0; t < T; ++t) {
      const float* x = src + P.idx(b, t, heads, head);
      prefetch_row(src + P.idx(b, std::min(t + 8, T - 1), heads, head), D);
      for (int d = 0; d < D; ++d) dst[t * Dp + d] = s * x[d];
      for (int d = D; d < Dp; ++d) dst[t * Dp + d] = 0.f;
    }
    std::memset(dst + static_cast<long>(T) * Dp, 0, sizeof(float) * (nrows - T) * Dp);
  };
  // Transposed and blocked by kBk keys: element (d, t) at ((t / kBk) * Dp + d) * kBk + t % kBk,
  // so one tile's keys are a contiguous [Dp, kBk] block.
  auto cols = [&](float* dst, const float* src, int heads, int head, int ncols) {
    if (D != Dp || ncols != T) std::memset(dst, 0, sizeof(float) * Dp * ncols);
    for (int t = 0; t < T; ++t) {
      const float* x = src + P.idx(b, t, heads, head);
      prefetch_row(src + P.idx(b, std::min(t + 8, T - 1), heads, head), D);
      float* blk = dst + static_cast<long>(t / kBk) * Dp * kBk + t % kBk;
      for (int d = 0; d < D; ++d) blk[d * kBk] = x[d];
    }
  };
  if (pk.Qs) rows(pk.Qs, P.q, P.H, h, P.scale, T);
  if (kv) {
    if (pk.K) rows(pk.K, P.k, P.KH, kh, 1.f, Tk);
    if (pk.V) rows(pk.V, P.v, P.KH, kh, 1.f, Tk);
    if (pk.Kt) cols(pk.Kt, P.k, P.KH, kh, Tk);
    if (pk.Vt) cols(pk.Vt, P.v, P.KH, kh, Tk);
  }
  if (P.rel) {
    if (pk.QPs) rows(pk.QPs, P.qp, P.H, h, P.scale, T);
  }
  if (P.relT_all) pk.RrevT = const_cast<float*>(P.relT_all) + static_cast<long>(h) * Dp * P.TRld;
  if (P.rel_all) pk.Rrev = const_cast<float*>(P.rel_all) + static_cast<long>(h) * P.TR * Dp;
}

// Packs head h's relative keys (shared by every batch row): RrevT [Dp, TRld] (column
// PADL + T-1-r = rel_keys[r]) and Rrev [TR, Dp] (row PADL + T-1-r); either may be null.
void pack_rel(const Problem& P, int h, float* RrevT, float* Rrev) {
  const int T = P.T, D = P.D, Dp = P.Dp, TR = P.TR;
  if (RrevT) {
    for (int d = 0; d < Dp; ++d) {
      float* row = RrevT + static_cast<long>(d) * P.TRld;
      if (d >= D) {
        std::memset(row, 0, sizeof(float) * P.TRld);
      } else {
        std::memset(row, 0, sizeof(float) * P.PADL);
        std::memset(row + P.PADL + T, 0, sizeof(float) * (P.TRld - P.PADL - T));
      }
    }
    for (int r = 0; r < T; ++r) {
      const float* x = P.rk + (static_cast<long>(r) * P.H + h) * D;
      for (int d = 0; d < D; ++d) RrevT[d * P.TRld + P.PADL + T - 1 - r] = x[d];
    }
  }
  if (Rrev) {
    std::memset(Rrev, 0, sizeof(float) * Dp * P.PADL);
    std::memset(Rrev + static_cast<long>(P.PADL + T) * Dp, 0,
                sizeof(float) * Dp * (TR - P.PADL - T));
    for (int r = 0; r < T; ++r) {
      const float* x = P.rk + (static_cast<long>(r) * P.H + h) * D;
      float* y = Rrev + static_cast<long>(P.PADL + T - 1 - r) * Dp;
      for (int d = 0; d < D; ++d) y[d] = x[d];
      for (int d = D; d < Dp; ++d) y[d] = 0.f;
    }
  }
}

// The relative term of a query block [i0, i0 + qb) is Prel[r, c] = QPs[i0 + r] . Rrev[wb + c]:
// query i0 + r and key j use column c = j - r + kBq - 1 (distance i - j is Rrev row wb + c).
// All tiles of the block share it, so the Toeplitz structure costs one GEMM per query block.
inline int rel_window_base(const Problem& P, int i0) { return P.PADL + P.T - i0 - kBq; }
inline int rel_window_width(int i0, int qb) {
  const int jlast = (i0 + qb - 1) / kBk * kBk;
  return round_up(jlast + kBk + kBq - 1, 16);
}

inline void rel_block_scores(const Problem& P, const Packed& pk, int i0, int qb, float* Prel) {
  mm<true>(qb, rel_window_width(i0, qb), P.Dp, pk.QPs + i0 * P.Dp, P.Dp, 1,
           pk.RrevT + rel_window_base(P, i0), P.TRld, 0, Prel, P.ldW, false);
}

// Scores of one tile into S [qb, kBk] (scaled; before ALiBi and masking).
inline void tile_scores(const Problem& P, const Packed& pk, int i0, int qb, int j0, float* S,
                        const float* Prel) {
  const int Dp = P.Dp;
  mm<true>(qb, kBk, Dp, pk.Qs + i0 * Dp, Dp, 1, pk.Kt + j0 * Dp, kBk, 0, S, kBk, false);
  if (P.rel) {
    for (int r = 0; r < qb; ++r) {
      const float* pr = Prel + r * P.ldW + j0 - r + kBq - 1;
      float* sr = S + r * kBk;
      for (int n = 0; n < kNVk; ++n) vstore(sr + 16 * n, vload(sr + 16 * n) + vload(pr + 16 * n));
    }
  }
}

// Adds ALiBi to row r of a tile and returns the allowed-mask for its kBk/16 vectors.
struct RowCtx {
  const int32_t* seg;  // segment ids of this batch row, padded to Tk (pad = INT32_MIN)
  bool masked;         // whether masking is needed in this tile at all
  float slope;
  bool alibi;
};

inline void row_prepare(const RowCtx& c, int i, int j0, float* srow, v16i* allowed) {
  const v16 iota = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  for (int n = 0; n < kNVk; ++n) {
    v16 jv = iota + static_cast<float>(j0 + 16 * n);
    if (c.alibi) {
      v16 s = vload(srow + 16 * n);
      s += vsplat(c.slope) * (jv - static_cast<float>(i));
      vstore(srow + 16 * n, s);
    }
    if (c.masked) {
      v16i ok = jv <= vsplat(static_cast<float>(i));
      v16i sk = vloadi(c.seg + j0 + 16 * n);
      ok &= sk == c.seg[i];
      allowed[n] = ok;
    } else {
      allowed[n] = v16i{} - 1;
    }
  }
}

void forward_item(const Problem& P, int b, int h, Scratch& sc, const int32_t* segpad,
                  float* out, float* lse) {
  const int T = P.T, Dp = P.Dp, D = P.D;
  sc.used = 0;
  Packed pk;
  pk.Qs = sc.alloc(T * Dp);
  pk.Kt = sc.alloc(Dp * P.Tk);
  pk.V = sc.alloc(P.Tk * Dp);
  if (P.rel) {
    pk.QPs = sc.alloc(T * Dp);
  }
  float* S = sc.alloc(kBq * kBk);
  float* acc = sc.alloc(kBq * Dp);
  float* Prel = P.rel ? sc.alloc(kBq * P.ldW) : nullptr;
  pack(P, b, h, pk);
  const int32_t* seg = P.seg + static_cast<long>(b) * T;
  RowCtx ctx{segpad, false, P.alibi ? P.slopes[h] : 0.f, P.alibi};
  float mrow[kBq], lrow[kBq];

  for (int i0 = 0; i0 < T; i0 += kBq) {
    const int qb = std::min(kBq, T - i0);
    std::fill(mrow, mrow + qb, kNegBig);
    std::fill(lrow, lrow + qb, 0.f);
    std::memset(acc, 0, sizeof(float) * qb * Dp);
    if (P.rel) rel_block_scores(P, pk, i0, qb, Prel);
    for (int j0 = 0; j0 < i0 + qb; j0 += kBk) {
      const int kb = std::min(kBk, T - j0);
      bool uniform;
      if (!tile_any_allowed(seg, i0, qb, j0, kb, &uniform)) continue;
      ctx.masked = !uniform || j0 + kBk - 1 > i0;
      tile_scores(P, pk, i0, qb, j0, S, Prel);
      for (int r = 0; r < qb; ++r) {
        float* srow = S + r * kBk;
        v16i allowed[kNVk];
        row_prepare(ctx, i0 + r, j0, srow, allowed);
        v16 mx = vsplat(kNegBig);
        for (int n = 0; n < kNVk; ++n) {
          v16 s = vload(srow + 16 * n);
          s = allowed[n] ? s : vsplat(kNegBig);
          mx = mx > s ? mx : s;
        }
        const float m_old = mrow[r];
        const float m_new = std::max(m_old, hmax(mx));
        const float alpha = std::exp(m_old - m_new);
        v16 sum = {};
        for (int n = 0; n < kNVk; ++n) {
          v16 p = vexp(vload(srow + 16 * n) - m_new);
          p = allowed[n] ? p : v16{};
          sum += p;
          vstore(srow + 16 * n, p);
        }
        mrow[r] = m_new;
        lrow[r] = lrow[r] * alpha + hsum(sum);
        if (alpha != 1.f) {
          float* a = acc + r * Dp;
          for (int d = 0; d < Dp; d += 16) vstore(a + d, vload(a + d) * alpha);
        }
      }
      // acc += P V
      mm<true>(qb, Dp, kb, S, kBk, 1, pk.V + j0 * Dp, Dp, 0, acc, Dp, true);
    }
    for (int r = 0; r < qb; ++r) {
      const int i = i0 + r;
      const float inv = 1.f / lrow[r];
      float* o = out + P.idx(b, i, P.H, h);
      for (int d = 0; d < D; ++d) o[d] = acc[r * Dp + d] * inv;
      lse[(static_cast<long>(b) * P.H + h) * T + i] = mrow[r] + std::log(lrow[r]);
    }
  }
}

struct Grads {
  float *dq, *dk, *dv, *dqp, *drel;  // outputs
  const float *out, *lse, *dout;
};

// Backward of one (b, h): writes dq and dq_pos rows, adds into dK, dV ([Tk, Dp] packed, shared
// by the heads of one kv group) and into rel_dst (element (r, d) at rel_dst[r * H * D + d]).
// pack_kv == false: the same worker just ran another head of this (b, kv head), whose packed k/v
// are still in its scratch.
void backward_item(const Problem& P, int b, int h, Scratch& sc, const int32_t* segpad,
                   const Grads& g, float* dK, float* dV, float* rel_dst, bool pack_kv) {
  const int T = P.T, Dp = P.Dp, D = P.D, Tk = P.Tk, TR = P.TR;
  sc.used = 0;
  Packed pk;
  pk.Qs = sc.alloc(T * Dp);
  pk.Kt = sc.alloc(Dp * Tk);
  pk.K = sc.alloc(Tk * Dp);
  pk.Vt = sc.alloc(Dp * Tk);
  float* dO = sc.alloc(Tk * Dp);
  float* Di = sc.alloc(T);
  float* L = sc.alloc(T);
  float* dQ = sc.alloc(T * Dp);
  float *dQP = nullptr, *dR = nullptr, *Prel = nullptr, *dSrel = nullptr;
  if (P.rel) {
    pk.QPs = sc.alloc(T * Dp);
    dQP = sc.alloc(T * Dp);
    dR = sc.alloc(TR * Dp);
    Prel = sc.alloc(kBq * P.ldW);
    dSrel = sc.alloc(kBq * P.ldW);
    std::memset(dQP, 0, sizeof(float) * T * Dp);
    std::memset(dR, 0, sizeof(float) * TR * Dp);
  }
  float* Pt = sc.alloc(kBq * kBk);
  float* dP = sc.alloc(kBq * kBk);
  float* dS = sc.alloc(kBq * kBk);
  pack(P, b, h, pk, pack_kv);  // scratch layout is fixed, so k/v from the previous head stay
  std::memset(dQ, 0, sizeof(float) * T * Dp);
  std::memset(dO, 0, sizeof(float) * Tk * Dp);
  for (int t = 0; t < T; ++t) {
    const float* go = g.dout + P.idx(b, t, P.H, h);
    const float* o = g.out + P.idx(b, t, P.H, h);
    prefetch_row(g.dout + P.idx(b, std::min(t + 8, T - 1), P.H, h), D);
    prefetch_row(g.out + P.idx(b, std::min(t + 8, T - 1), P.H, h), D);
    float s = 0.f;
    for (int d = 0; d < D; ++d) {
      dO[t * Dp + d] = go[d];
      s += go[d] * o[d];
    }
    Di[t] = s;
    L[t] = g.lse[(static_cast<long>(b) * P.H + h) * T + t];
  }
  const int32_t* seg = P.seg + static_cast<long>(b) * T;
  RowCtx ctx{segpad, false, P.alibi ? P.slopes[h] : 0.f, P.alibi};

  for (int i0 = 0; i0 < T; i0 += kBq) {
    const int qb = std::min(kBq, T - i0);
    const int W = rel_window_width(i0, qb), wb = rel_window_base(P, i0);
    if (P.rel) {
      rel_block_scores(P, pk, i0, qb, Prel);
      for (int r = 0; r < qb; ++r) std::memset(dSrel + r * P.ldW, 0, sizeof(float) * W);
    }
    for (int j0 = 0; j0 < i0 + qb; j0 += kBk) {
      const int kb = std::min(kBk, T - j0);
      bool uniform;
      if (!tile_any_allowed(seg, i0, qb, j0, kb, &uniform)) continue;
      ctx.masked = !uniform || j0 + kBk - 1 > i0;
      tile_scores(P, pk, i0, qb, j0, Pt, Prel);
      // dP = dO V^T
      mm<true>(qb, kBk, Dp, dO + i0 * Dp, Dp, 1, pk.Vt + j0 * Dp, kBk, 0, dP, kBk, false);
      for (int r = 0; r < qb; ++r) {
        float* prow = Pt + r * kBk;
        v16i allowed[kNVk];
        row_prepare(ctx, i0 + r, j0, prow, allowed);
        const float l = L[i0 + r], di = Di[i0 + r];
        float* ds = dS + r * kBk;
        for (int n = 0; n < kNVk; ++n) {
          v16 p = vexp(vload(prow + 16 * n) - l);
          p = allowed[n] ? p : v16{};
          vstore(prow + 16 * n, p);
          vstore(ds + 16 * n, p * (vload(dP + r * kBk + 16 * n) - di));
        }
      }
      // dV[j] += P^T dO ; dK[j] += dS^T Qs
      mm<true>(kb, Dp, qb, Pt, 1, kBk, dO + i0 * Dp, Dp, 0, dV + j0 * Dp, Dp, true);
      mm<true>(kb, Dp, qb, dS, 1, kBk, pk.Qs + i0 * Dp, Dp, 0, dK + j0 * Dp, Dp, true);
      // dQ[i] += dS K
      mm<true>(qb, Dp, kb, dS, kBk, 1, pk.K + j0 * Dp, Dp, 0, dQ + i0 * Dp, Dp, true);
      if (P.rel) {  // scatter dS into the block's Toeplitz-shifted buffer (see Prel)
        for (int r = 0; r < qb; ++r) {
          float* dst = dSrel + r * P.ldW + j0 - r + kBq - 1;
          for (int n = 0; n < kNVk; ++n) vstore(dst + 16 * n, vload(dS + r * kBk + 16 * n));
        }
      }
    }
    if (P.rel) {
      // dQP[i0 + r] += sum_c dSrel[r, c] Rrev[wb + c];  dR[wb + c] += sum_r dSrel[r, c] QPs[i0 + r]
      mm<true>(qb, Dp, W, dSrel, P.ldW, 1, pk.Rrev + wb * Dp, Dp, 0, dQP + i0 * Dp, Dp, true);
      mm<true>(W, Dp, qb, dSrel, 1, P.ldW, pk.QPs + i0 * Dp, Dp, 0, dR + wb * Dp, Dp, true);
    }
  }
  const float s = P.scale;
  for (int t = 0; t < T; ++t) {
    float* x = g.dq + P.idx(b, t, P.H, h);
    for (int d = 0; d < D; ++d) x[d] = s * dQ[t * Dp + d];
    if (P.rel) {
      float* y = g.dqp + P.idx(b, t, P.H, h);
      for (int d = 0; d < D; ++d) y[d] = s * dQP[t * Dp + d];
    }
  }
  if (P.rel) {
    const long stride = static_cast<long>(P.H) * D;
    for (int r = 0; r < T; ++r) {
      float* x = rel_dst + r * stride;
      const float* src = dR + (P.PADL + T - 1 - r) * Dp;
      for (int d = 0; d < D; ++d) x[d] += src[d];
    }
  }
}

size_t forward_scratch(const Problem& P) {
  size_t n = 0;
  auto a = [&](size_t x) { n += round_up(static_cast<int>(x), 16); };
  a(P.T * P.Dp); a(P.Dp * P.Tk); a(P.Tk * P.Dp);
  if (P.rel) a(P.T * P.Dp);
  a(kBq * kBk); a(kBq * P.Dp);
  if (P.rel) a(kBq * P.ldW);
  return n;
}

size_t backward_scratch(const Problem& P) {
  size_t n = 0;
  auto a = [&](size_t x) { n += round_up(static_cast<int>(x), 16); };
  a(P.T * P.Dp); a(P.Dp * P.Tk); a(P.Tk * P.Dp); a(P.Dp * P.Tk); a(P.Tk * P.Dp);
  a(P.T); a(P.T); a(P.T * P.Dp);
  if (P.rel) {
    a(P.T * P.Dp); a(P.T * P.Dp); a(P.TR * P.Dp);
    a(kBq * P.ldW); a(kBq * P.ldW);
  }
  a(kBq * kBk); a(kBq * kBk); a(kBq * kBk);
  return n;
}

// Segment ids padded to Tk + 64 per batch row (pad = INT32_MIN, never equal to a real query's id
// in an allowed position because padded keys are also causally masked).
std::vector<int32_t> pad_segments(const Problem& P) {
  const int W = P.Tk + 64;
  std::vector<int32_t> s(static_cast<size_t>(P.B) * W, INT32_MIN);
  for (int b = 0; b < P.B; ++b)
    std::memcpy(s.data() + static_cast<size_t>(b) * W, P.seg + static_cast<size_t>(b) * P.T,
                sizeof(int32_t) * P.T);
  return s;
}

ffi::Error check_shapes(const Problem& P) {
  if (P.H % P.KH != 0) return ffi::Error::InvalidArgument("num_heads must be a multiple of kv_heads");
  if (P.T <= 0 || P.D <= 0 || P.B <= 0) return ffi::Error::InvalidArgument("empty attention input");
  return ffi::Error::Success();
}

Problem make_problem(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k, ffi::Buffer<ffi::F32>& v,
                     ffi::Buffer<ffi::S32>& seg, ffi::Buffer<ffi::F32>& qp,
                     ffi::Buffer<ffi::F32>& rk, ffi::Buffer<ffi::F32>& slopes, float scale,
                     int64_t has_rel, int64_t has_alibi) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  Problem P;
  P.B = static_cast<int>(qd[0]);
  P.T = static_cast<int>(qd[1]);
  P.H = static_cast<int>(qd[2]);
  P.D = static_cast<int>(qd[3]);
  P.KH = static_cast<int>(kd[2]);
  P.scale = scale;
  P.rel = has_rel != 0;
  P.alibi = has_alibi != 0;
  P.q = q.typed_data();
  P.k = k.typed_data();
  P.v = v.typed_data();
  P.qp = qp.typed_data();
  P.rk = rk.typed_data();
  P.slopes = slopes.typed_data();
  P.seg = seg.typed_data();
  P.init();
  return P;
}

ffi::Error AttnFwdImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                       ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::F32> qp,
                       ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> slopes,
                       ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse,
                       float scale, int64_t has_rel, int64_t has_alibi) {
  if (q.dimensions().size() != 4 || k.dimensions().size() != 4)
    return ffi::Error::InvalidArgument("q, k, v must be rank 4");
  Problem P = make_problem(q, k, v, seg, qp, rk, slopes, scale, has_rel, has_alibi);
  if (auto e = check_shapes(P); e.failure()) return e;
  std::vector<int32_t> segpad = pad_segments(P);
  const int threads = num_threads();
  const int n = P.B * P.H;
  const size_t per = forward_scratch(P);
  std::vector<Scratch> sc(std::min(threads, n));
  for (auto& s : sc) s.buf.acquire(per);
  float* o = out->typed_data();
  float* l = lse->typed_data();
  PooledBuffer relT;
  if (P.rel) {
    relT.acquire(static_cast<size_t>(P.H) * P.Dp * P.TRld);
    parallel_for(P.H, threads, [&](int h, int) {
      pack_rel(P, h, relT.data() + static_cast<size_t>(h) * P.Dp * P.TRld, nullptr);
    });
    P.relT_all = relT.data();
  }
  parallel_for(n, threads, [&](int item, int worker) {
    const int b = item / P.H, h = item % P.H;
    forward_item(P, b, h, sc[worker], segpad.data() + static_cast<size_t>(b) * (P.Tk + 64), o, l);
  });
  return ffi::Error::Success();
}

ffi::Error AttnBwdImpl(ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                       ffi::Buffer<ffi::S32> seg, ffi::Buffer<ffi::F32> qp,
                       ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> slopes,
                       ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                       ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                       ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                       ffi::ResultBuffer<ffi::F32> dqp, ffi::ResultBuffer<ffi::F32> drel,
                       float scale, int64_t has_rel, int64_t has_alibi) {
  if (q.dimensions().size() != 4 || k.dimensions().size() != 4)
    return ffi::Error::InvalidArgument("q, k, v must be rank 4");
  Problem P = make_problem(q, k, v, seg, qp, rk, slopes, scale, has_rel, has_alibi);
  if (auto e = check_shapes(P); e.failure()) return e;
  std::vector<int32_t> segpad = pad_segments(P);
  const int threads = num_threads();
  const size_t per = backward_scratch(P);
  const int T = P.T, D = P.D, Dp = P.Dp, Tk = P.Tk;

  Grads g{};
  g.dq = dq->typed_data();
  g.dk = dk->typed_data();
  g.dv = dv->typed_data();
  g.dqp = dqp->typed_data();
  g.drel = drel->typed_data();
  g.out = out.typed_data();
  g.lse = lse.typed_data();
  g.dout = dout.typed_data();

  // Work items are (batch chunk, kv head): all query heads of a kv group run in one item, so
  // dk/dv accumulate without races, and d rel_keys accumulates over the chunk's batch rows.
  // drel is [T, H, D] (summed here over b; per-chunk partials when there are several chunks) or
  // [B, T, H, D] (one term per batch row, summed by the caller: used when batch is sharded).
  const bool rel_per_batch = drel->dimensions().size() == 4;
  const int nchunks = std::max(1, std::min(P.B, (2 * threads + P.KH - 1) / P.KH));
  const int items = nchunks * P.KH;
  const size_t rel_size = static_cast<size_t>(T) * P.H * D;
  std::unique_ptr<float[]> rel_part;
  float* rel_base = g.drel;
  if (P.rel) {
    if (!rel_per_batch && nchunks > 1) {
      rel_part.reset(new float[nchunks * rel_size]);
      rel_base = rel_part.get();
      std::memset(rel_base, 0, sizeof(float) * nchunks * rel_size);
    } else {
      std::memset(g.drel, 0, sizeof(float) * drel->element_count());
    }
  }
  const int nworkers = std::min(threads, items);
  std::vector<Scratch> sc(nworkers);
  std::vector<PooledBuffer> acc(nworkers);
  for (int w = 0; w < nworkers; ++w) {
    sc[w].buf.acquire(per);
    acc[w].acquire(2 * static_cast<size_t>(Tk) * Dp);
  }
  PooledBuffer relT, relR;
  if (P.rel) {
    relT.acquire(static_cast<size_t>(P.H) * P.Dp * P.TRld);
    relR.acquire(static_cast<size_t>(P.H) * P.TR * P.Dp);
    parallel_for(P.H, threads, [&](int h, int) {
      pack_rel(P, h, relT.data() + static_cast<size_t>(h) * P.Dp * P.TRld,
               relR.data() + static_cast<size_t>(h) * P.TR * P.Dp);
    });
    P.relT_all = relT.data();
    P.rel_all = relR.data();
  }
  parallel_for(items, threads, [&](int item, int worker) {
    const int c = item / P.KH, kh = item % P.KH;
    float* dK = acc[worker].data();
    float* dV = dK + static_cast<size_t>(Tk) * Dp;
    for (int b = c * P.B / nchunks; b < (c + 1) * P.B / nchunks; ++b) {
      std::memset(dK, 0, sizeof(float) * 2 * Tk * Dp);
      for (int j = 0; j < P.G; ++j) {
        const int h = kh * P.G + j;
        float* rel_dst = rel_per_batch ? g.drel + P.idx(b, 0, P.H, h)
                                       : rel_base + c * rel_size + static_cast<size_t>(h) * D;
        backward_item(P, b, h, sc[worker], segpad.data() + static_cast<size_t>(b) * (Tk + 64), g,
                      dK, dV, rel_dst, /*pack_kv=*/j == 0);
      }
      for (int t = 0; t < T; ++t) {
        float* xk = g.dk + P.idx(b, t, P.KH, kh);
        float* xv = g.dv + P.idx(b, t, P.KH, kh);
        for (int d = 0; d < D; ++d) {
          xk[d] = dK[t * Dp + d];
          xv[d] = dV[t * Dp + d];
        }
      }
    }
  });
  if (P.rel && !rel_per_batch && nchunks > 1) {  // sum the chunks' partials
    for (size_t i = 0; i < rel_size; ++i) {
      float x = 0.f;
      for (int c = 0; c < nchunks; ++c) x += rel_base[c * rel_size + i];
      g.drel[i] = x;
    }
  }
  if (!P.rel) {
    std::memset(g.dqp, 0, sizeof(float) * dqp->element_count());
    std::memset(g.drel, 0, sizeof(float) * drel->element_count());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherAttnFwd, AttnFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // segment_ids
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q_pos (dummy if !has_rel)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // rel_keys (dummy if !has_rel)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // alibi slopes (dummy if !has_alibi)
                                  .Ret<ffi::Buffer<ffi::F32>>()  // out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("has_rel")
                                  .Attr<int64_t>("has_alibi"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherAttnBwd, AttnBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q
                                  .Arg<ffi::Buffer<ffi::F32>>()  // k
                                  .Arg<ffi::Buffer<ffi::F32>>()  // v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // segment_ids
                                  .Arg<ffi::Buffer<ffi::F32>>()  // q_pos
                                  .Arg<ffi::Buffer<ffi::F32>>()  // rel_keys
                                  .Arg<ffi::Buffer<ffi::F32>>()  // alibi slopes
                                  .Arg<ffi::Buffer<ffi::F32>>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dv
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d q_pos
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d rel_keys
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("has_rel")
                                  .Attr<int64_t>("has_alibi"));
