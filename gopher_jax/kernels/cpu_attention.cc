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
//
// bf16 path (q, k, v, q_pos, out, dout, dq, dk, dv, dq_pos in bf16; rel_keys, lse, d rel_keys and
// all sums, the softmax and the accumulators in fp32): every tile GEMM takes bf16 operands packed
// as "pairs" (one uint32 word = two bf16 values adjacent along the contracted dimension) and sums
// in fp32. On a CPU with AVX512-BF16 the micro-kernel is VDPBF16PS; elsewhere (or built with
// -DGJ_NO_BF16_DOT) it widens each pair to fp32 and does two FMAs, the same products. Q is packed
// unscaled (no extra rounding); the scale is applied to the fp32 scores, dK and d rel_keys.

#include <algorithm>
#include <initializer_list>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__AVX512BF16__) && !defined(GJ_NO_BF16_DOT)
#define GJ_BF16_DOT 1
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"
#include "simd_math.h"
#include "amx.h"

namespace ffi = xla::ffi;

namespace {

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

// Rows 2p and 2p+1 of x [rows][ldx] -> pair words y[p * ldy + j] (n columns, multiple of 16);
// a missing odd row (rows is odd) is zero.
inline void rows_to_pairs(const float* x, long ldx, int rows, uint32_t* y, long ldy, int n) {
  for (int p = 0; 2 * p < rows; ++p) {
    const float* r0 = x + 2 * p * ldx;
    const bool two = 2 * p + 1 < rows;
    for (int j = 0; j < n; j += 16) {
      v16u w = bf16_bits(vload(r0 + j));
      if (two) w |= bf16_bits(vload(r0 + ldx + j)) << 16;
      __builtin_memcpy(y + p * ldy + j, &w, sizeof(w));
    }
  }
}

// C[m, n] (+)= sum_p sum_{e<2} A_p[m]_e * B_p[n]_e for m < MR, n < 16*NV: bf16 pairs, fp32 sums.
// A word of row m, pair p at A[m*a_rs + p*a_ps]; B pair-row p at B + p*b_rs (16*NV words).
template <int MR, int NV>
inline void mmb_block(int Kp, const uint32_t* __restrict A, long a_rs, long a_ps,
                      const uint32_t* __restrict B, long b_rs, float* __restrict C, long ldc,
                      bool accumulate) {
  v16 c[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) c[m][n] = accumulate ? vload(C + m * ldc + 16 * n) : v16{};
  for (int p = 0; p < Kp; ++p) {
    const uint32_t* bp = B + p * b_rs;
#ifdef GJ_BF16_DOT
    __m512bh b[NV];
    for (int n = 0; n < NV; ++n) b[n] = (__m512bh)_mm512_loadu_si512(bp + 16 * n);
    for (int m = 0; m < MR; ++m) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[m * a_rs + p * a_ps]));
      for (int n = 0; n < NV; ++n) c[m][n] = (v16)_mm512_dpbf16_ps((__m512)c[m][n], a, b[n]);
    }
#else
    v16 blo[NV], bhi[NV];
    for (int n = 0; n < NV; ++n) {
      v16u w;
      __builtin_memcpy(&w, bp + 16 * n, sizeof(w));
      v16u lo = w << 16, hi = w & 0xffff0000u;
      __builtin_memcpy(&blo[n], &lo, sizeof(lo));
      __builtin_memcpy(&bhi[n], &hi, sizeof(hi));
    }
    for (int m = 0; m < MR; ++m) {
      const uint32_t w = A[m * a_rs + p * a_ps];
      const uint32_t lo = w << 16, hi = w & 0xffff0000u;
      float alo, ahi;
      std::memcpy(&alo, &lo, 4);
      std::memcpy(&ahi, &hi, 4);
      for (int n = 0; n < NV; ++n) c[m][n] += alo * blo[n] + ahi * bhi[n];
    }
#endif
  }
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NV; ++n) vstore(C + m * ldc + 16 * n, c[m][n]);
}

template <int NV>
inline void mmb_nv(int M, int Kp, const uint32_t* A, long a_rs, long a_ps, const uint32_t* B,
                   long b_rs, float* C, long ldc, bool accumulate) {
  constexpr int MR = NV <= 2 ? 8 : 4;
  int m = 0;
  for (; m + MR <= M; m += MR)
    mmb_block<MR, NV>(Kp, A + m * a_rs, a_rs, a_ps, B, b_rs, C + m * ldc, ldc, accumulate);
  if constexpr (MR > 4) {
    if (m + 4 <= M) {
      mmb_block<4, NV>(Kp, A + m * a_rs, a_rs, a_ps, B, b_rs, C + m * ldc, ldc, accumulate);
      m += 4;
    }
  }
  if (m + 2 <= M) {
    mmb_block<2, NV>(Kp, A + m * a_rs, a_rs, a_ps, B, b_rs, C + m * ldc, ldc, accumulate);
    m += 2;
  }
  if (m < M) mmb_block<1, NV>(Kp, A + m * a_rs, a_rs, a_ps, B, b_rs, C + m * ldc, ldc, accumulate);
}

#if defined(GJ_AMX) && defined(GJ_BF16_DOT)
#define GJ_ATTN_AMX 1
// The tile GEMMs on AMX (amx.h): C tiles 0-3 (2 x 2 of 16 x 16), A tiles 4-5, B tiles 6-7. A tile
// loads 16 rows of 16 pair words each in place when A's pairs are contiguous per row; B's pair
// rows are already the tile layout. Operands that are transposed (A with pairs strided: the
// dV, dK and d rel_keys GEMMs) or ragged (M or Kp not a multiple of 16) are first copied into
// zero-padded per-thread scratch.
thread_local bool t_tiles_configured = false;  // this thread ran amx_configure_tiles (parallel_for releases)
thread_local std::vector<uint32_t> t_amx_a, t_amx_b;
thread_local std::vector<float> t_amx_c;

template <int MT, int NT>
inline void amx_block(int Kp, const uint32_t* A, long a_rs, const uint32_t* B, long b_rs, float* C, long ldc,
                      bool accumulate) {
  const long sa = 4 * a_rs, sb = 4 * b_rs, sc = 4 * ldc;
  if (accumulate) {
    _tile_loadd(0, C, sc);
    if constexpr (NT == 2) _tile_loadd(1, C + 16, sc);
    if constexpr (MT == 2) _tile_loadd(2, C + 16 * ldc, sc);
    if constexpr (MT == 2 && NT == 2) _tile_loadd(3, C + 16 * ldc + 16, sc);
  } else {
    _tile_zero(0);
    if constexpr (NT == 2) _tile_zero(1);
    if constexpr (MT == 2) _tile_zero(2);
    if constexpr (MT == 2 && NT == 2) _tile_zero(3);
  }
  for (int p = 0; p < Kp; p += 16) {
    const uint32_t* bp = B + static_cast<long>(p) * b_rs;
    _tile_loadd(4, A + p, sa);
    _tile_loadd(6, bp, sb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NT == 2) {
      _tile_loadd(7, bp + 16, sb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MT == 2) {
      _tile_loadd(5, A + 16 * a_rs + p, sa);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NT == 2) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, C, sc);
  if constexpr (NT == 2) _tile_stored(1, C + 16, sc);
  if constexpr (MT == 2) _tile_stored(2, C + 16 * ldc, sc);
  if constexpr (MT == 2 && NT == 2) _tile_stored(3, C + 16 * ldc + 16, sc);
}

// M, N and Kp multiples of 16, A's pairs contiguous per row (row stride a_rs words).
void mmb_amx_aligned(int M, int N, int Kp, const uint32_t* A, long a_rs, const uint32_t* B, long b_rs,
                     float* C, long ldc, bool accumulate) {
  int m = 0;
  for (; m + 32 <= M; m += 32) {
    const uint32_t* Am = A + m * a_rs;
    float* Cm = C + m * ldc;
    int n = 0;
    for (; n + 32 <= N; n += 32) amx_block<2, 2>(Kp, Am, a_rs, B + n, b_rs, Cm + n, ldc, accumulate);
    if (n < N) amx_block<2, 1>(Kp, Am, a_rs, B + n, b_rs, Cm + n, ldc, accumulate);
  }
  if (m < M) {
    const uint32_t* Am = A + m * a_rs;
    float* Cm = C + m * ldc;
    int n = 0;
    for (; n + 32 <= N; n += 32) amx_block<1, 2>(Kp, Am, a_rs, B + n, b_rs, Cm + n, ldc, accumulate);
    if (n < N) amx_block<1, 1>(Kp, Am, a_rs, B + n, b_rs, Cm + n, ldc, accumulate);
  }
}

// mmb on AMX tiles (same contract as mmb).
void mmb_amx(int M, int N, int Kp, const uint32_t* A, long a_rs, long a_ps, const uint32_t* B, long b_rs,
             float* C, long ldc, bool accumulate) {
  if (!t_tiles_configured) {
    amx_configure_tiles();
    t_tiles_configured = true;
  }
  const int M16 = round_up(M, 16), K16 = round_up(Kp, 16);
  const uint32_t* a = A;
  long lda = a_rs;
  if (a_ps != 1 || K16 != Kp || M16 != M) {
    t_amx_a.resize(static_cast<size_t>(M16) * K16);
    uint32_t* d = t_amx_a.data();
    if (a_rs == 1) {  // pairs strided, rows contiguous: transpose 16 x 16 blocks of words
      for (int m0 = 0; m0 < M16; m0 += 16) {
        const __mmask16 mask = static_cast<__mmask16>((1u << std::max(0, std::min(16, M - m0))) - 1);
        for (int p0 = 0; p0 < K16; p0 += 16) {
          __m512i w[16];
          for (int q = 0; q < 16; ++q)
            w[q] = p0 + q < Kp ? _mm512_maskz_loadu_epi32(mask, A + m0 + static_cast<long>(p0 + q) * a_ps)
                               : _mm512_setzero_si512();
          transpose16x16_epi32(w);
          for (int r = 0; r < 16; ++r) _mm512_storeu_si512(d + static_cast<long>(m0 + r) * K16 + p0, w[r]);
        }
      }
    } else {
      for (int m0 = 0; m0 < M16; ++m0)
        for (int p = 0; p < K16; ++p)
          d[static_cast<long>(m0) * K16 + p] = m0 < M && p < Kp ? A[m0 * a_rs + p * a_ps] : 0u;
    }
    a = d;
    lda = K16;
  }
  const uint32_t* b = B;
  long ldb = b_rs;
  if (K16 != Kp) {  // zero pair rows past Kp
    t_amx_b.assign(static_cast<size_t>(K16) * N, 0u);
    for (int p = 0; p < Kp; ++p) std::memcpy(t_amx_b.data() + static_cast<long>(p) * N, B + p * b_rs, 4 * N);
    b = t_amx_b.data();
    ldb = N;
  }
  if (M16 == M) {
    mmb_amx_aligned(M, N, K16, a, lda, b, ldb, C, ldc, accumulate);
    return;
  }
  t_amx_c.assign(static_cast<size_t>(M16) * N, 0.f);
  if (accumulate)
    for (int m = 0; m < M; ++m) std::memcpy(t_amx_c.data() + static_cast<long>(m) * N, C + m * ldc, 4 * N);
  mmb_amx_aligned(M16, N, K16, a, lda, b, ldb, t_amx_c.data(), N, accumulate);
  for (int m = 0; m < M; ++m) std::memcpy(C + m * ldc, t_amx_c.data() + static_cast<long>(m) * N, 4 * N);
}
#endif

// C[M, N] (+)= A[M, 2*Kp] B[2*Kp, N] in bf16 pairs (N a multiple of 16), in <= 64-column chunks.
void mmb(int M, int N, int Kp, const uint32_t* A, long a_rs, long a_ps, const uint32_t* B,
         long b_rs, float* C, long ldc, bool accumulate) {
  if (M <= 0) return;
#if defined(GJ_ATTN_AMX)
  if (amx_granted() && Kp > 0) {
    mmb_amx(M, N, Kp, A, a_rs, a_ps, B, b_rs, C, ldc, accumulate);
    return;
  }
#endif
  for (int n0 = 0; n0 < N; n0 += 64) {
    const int nv = std::min(4, (N - n0) / 16);
    const uint32_t* Bn = B + n0;
    float* Cn = C + n0;
    switch (nv) {
      case 4: mmb_nv<4>(M, Kp, A, a_rs, a_ps, Bn, b_rs, Cn, ldc, accumulate); break;
      case 3: mmb_nv<3>(M, Kp, A, a_rs, a_ps, Bn, b_rs, Cn, ldc, accumulate); break;
      case 2: mmb_nv<2>(M, Kp, A, a_rs, a_ps, Bn, b_rs, Cn, ldc, accumulate); break;
      default: mmb_nv<1>(M, Kp, A, a_rs, a_ps, Bn, b_rs, Cn, ldc, accumulate); break;
    }
  }
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
#if defined(GJ_ATTN_AMX)
    if (t_tiles_configured) {  // leave no AMX state on the thread (the caller's is XLA's)
      _tile_release();
      t_tiles_configured = false;
    }
#endif
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
}

int num_threads() { return threads_from_env("GOPHER_JAX_ATTN_THREADS"); }

struct Problem {
  int B, T, H, KH, D;
  int G, Dp, Tk, TR, TRld, PADL, ldW;
  float scale;
  bool rel, alibi;
  bool bf16;  // q, k, v, q_pos (and out, dout, dq, dk, dv, dq_pos) are bf16, else fp32
  const void *q, *k, *v, *qp;
  const float *rk, *slopes;
  const float *relT_all = nullptr, *rel_all = nullptr;  // pack_rel of every head (if rel)
  const uint32_t *relT_bf = nullptr, *rel_bf = nullptr;  // pack_rel_bf of every head (bf16 path)
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
  auto rows = [&](float* dst, const void* src_v, int heads, int head, float s, int nrows) {
    const float* src = static_cast<const float*>(src_v);
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
  auto cols = [&](float* dst, const void* src_v, int heads, int head, int ncols) {
    const float* src = static_cast<const float*>(src_v);
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

// One query row of a key tile, flash-attention style: masks the row's scores (row_prepare), turns them into
// exp(score - running max) in place, folds their sum into the running sum `l` and rescales the row's output
// accumulator when the running max `m` grows. Shared by the fp32 and bf16 forwards.
inline void online_softmax_row(const RowCtx& ctx, int i, int j0, float* srow, float& m, float& l, float* acc_row,
                               int Dp) {
  v16i allowed[kNVk];
  row_prepare(ctx, i, j0, srow, allowed);
  v16 mx = vsplat(kNegBig);
  for (int n = 0; n < kNVk; ++n) {
    v16 s = vload(srow + 16 * n);
    s = allowed[n] ? s : vsplat(kNegBig);
    mx = mx > s ? mx : s;
  }
  const float m_new = std::max(m, hmax(mx));
  const float alpha = std::exp(m - m_new);
  v16 sum = {};
  for (int n = 0; n < kNVk; ++n) {
    v16 p = vexp(vload(srow + 16 * n) - m_new);
    p = allowed[n] ? p : v16{};
    sum += p;
    vstore(srow + 16 * n, p);
  }
  m = m_new;
  l = l * alpha + hsum(sum);
  if (alpha != 1.f) {
    for (int d = 0; d < Dp; d += 16) vstore(acc_row + d, vload(acc_row + d) * alpha);
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
        online_softmax_row(ctx, i0 + r, j0, S + r * kBk, mrow[r], lrow[r], acc + r * Dp, Dp);
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
  void *dq, *dk, *dv, *dqp;  // outputs (fp32, or bf16 on the bf16 path)
  float* drel;
  const void *out, *dout;  // fp32, or bf16 on the bf16 path
  const float* lse;
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
    const float* gdout = static_cast<const float*>(g.dout);
    const float* gout = static_cast<const float*>(g.out);
    const float* go = gdout + P.idx(b, t, P.H, h);
    const float* o = gout + P.idx(b, t, P.H, h);
    prefetch_row(gdout + P.idx(b, std::min(t + 8, T - 1), P.H, h), D);
    prefetch_row(gout + P.idx(b, std::min(t + 8, T - 1), P.H, h), D);
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
    float* x = static_cast<float*>(g.dq) + P.idx(b, t, P.H, h);
    for (int d = 0; d < D; ++d) x[d] = s * dQ[t * Dp + d];
    if (P.rel) {
      float* y = static_cast<float*>(g.dqp) + P.idx(b, t, P.H, h);
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

// ---- bf16 path: packing and the per-(b, h) forward / backward ---------------------------------
// Layouts (uint16 element offsets; a "word" is two adjacent bf16 along the contracted dimension):
//   row-major  [rows][Dp]:          element (t, d) at t*Dp + d           (A operand, pairs along d)
//   pair rows  [rows/2][Dp] words:  element (t, d) at ((t/2)*Dp + d)*2 + t%2   (B, contraction over t)
//   key blocks [Tk/kBk][Dp/2][kBk]: element (t, d) at (((t/kBk)*(Dp/2) + d/2)*kBk + t%kBk)*2 + d%2
//                                   (B of the score GEMMs, contraction over d)
inline long pr_at(int t, int d, int Dp) { return ((static_cast<long>(t) / 2) * Dp + d) * 2 + (t & 1); }
inline uint32_t* words(uint16_t* p) { return reinterpret_cast<uint32_t*>(p); }

struct PackedBf {
  uint16_t *Q = nullptr, *QP = nullptr, *dO = nullptr;            // row-major [T][Dp]
  uint16_t *Kb = nullptr, *Vb = nullptr;                          // key blocks
  uint16_t *Kp = nullptr, *Vp = nullptr, *Qp = nullptr, *QPp = nullptr, *dOp = nullptr;  // pair rows [Tk/2][Dp]
  const uint32_t *RT = nullptr;  // rel keys reversed, [Dp/2][TRld] words (column PADL+T-1-r = rel_keys[r])
  const uint32_t *Rp = nullptr;  // rel keys reversed, pair rows [TR/2][Dp] words (row PADL+T-1-r)
};

// The three layouts listed at the top of this section.
enum class BfLayout { kRows, kPairRows, kKeyBlocks };

// Copies the (b, head) rows of a bf16 [B, T, heads, D] array into `dst` in `layout`; padding
// (d >= D, t >= T up to nrows) is zero. The pair-row and key-block layouts are written a 32-bit
// word (two bf16) at a time: element by element, packing was 3.4% of the gopher_44m bf16 step.
void pack_bf(const Problem& P, const void* src_v, int b, int heads, int head, uint16_t* dst,
             int nrows, BfLayout layout) {
  const uint16_t* src = static_cast<const uint16_t*>(src_v);
  const int T = P.T, D = P.D, Dp = P.Dp;
  std::memset(dst, 0, sizeof(uint16_t) * static_cast<size_t>(nrows) * Dp);
  uint32_t* w = words(dst);
  switch (layout) {
    case BfLayout::kRows:
      for (int t = 0; t < T; ++t)
        std::memcpy(dst + static_cast<long>(t) * Dp, src + P.idx(b, t, heads, head), sizeof(uint16_t) * D);
      break;
    case BfLayout::kPairRows:
      for (int t = 0; t < T; t += 2) {
        const uint16_t* x0 = src + P.idx(b, t, heads, head);
        uint32_t* row = w + static_cast<long>(t / 2) * Dp;
        if (t + 1 < T) {
          const uint16_t* x1 = src + P.idx(b, t + 1, heads, head);
          for (int d = 0; d < D; ++d) row[d] = x0[d] | static_cast<uint32_t>(x1[d]) << 16;
        } else {
          for (int d = 0; d < D; ++d) row[d] = x0[d];
        }
      }
      break;
    case BfLayout::kKeyBlocks:
      for (int t = 0; t < T; ++t) {
        const uint16_t* x = src + P.idx(b, t, heads, head);
        uint32_t* col = w + static_cast<long>(t / kBk) * (Dp / 2) * kBk + t % kBk;
        for (int e = 0; 2 * e < D; ++e) {
          const uint32_t hi = 2 * e + 1 < D ? x[2 * e + 1] : 0;
          col[static_cast<long>(e) * kBk] = x[2 * e] | hi << 16;
        }
      }
      break;
  }
}

// Head h's relative keys (fp32 in, shared by the batch) as RT and Rp of PackedBf.
void pack_rel_bf(const Problem& P, int h, uint16_t* RT, uint16_t* Rp) {
  const int T = P.T, D = P.D, Dp = P.Dp;
  std::memset(RT, 0, sizeof(uint16_t) * static_cast<size_t>(Dp) * P.TRld);
  std::memset(Rp, 0, sizeof(uint16_t) * static_cast<size_t>(P.TR) * Dp);
  for (int r = 0; r < T; ++r) {
    const float* x = P.rk + (static_cast<long>(r) * P.H + h) * D;
    const int c = P.PADL + T - 1 - r;
    for (int d = 0; d < D; ++d) {
      const uint16_t v = f32_to_bf16(x[d]);
      RT[(static_cast<long>(d / 2) * P.TRld + c) * 2 + (d & 1)] = v;
      Rp[pr_at(c, d, Dp)] = v;
    }
  }
}

// Scores of one tile into S [qb, kBk]: scale * (Q K^T + QP . R) in fp32 (before ALiBi and masking).
inline void tile_scores_bf(const Problem& P, const PackedBf& pk, int i0, int qb, int j0, float* S,
                           const float* Prel) {
  const int Dh = P.Dp / 2;
  mmb(qb, kBk, Dh, words(pk.Q) + i0 * Dh, Dh, 1, words(pk.Kb) + static_cast<long>(j0) * Dh, kBk,
      S, kBk, false);
  const v16 s = vsplat(P.scale);
  for (int r = 0; r < qb; ++r) {
    float* sr = S + r * kBk;
    if (P.rel) {
      const float* pr = Prel + r * P.ldW + j0 - r + kBq - 1;
      for (int n = 0; n < kNVk; ++n) vstore(sr + 16 * n, s * (vload(sr + 16 * n) + vload(pr + 16 * n)));
    } else {
      for (int n = 0; n < kNVk; ++n) vstore(sr + 16 * n, s * vload(sr + 16 * n));
    }
  }
}

inline void rel_block_scores_bf(const Problem& P, const PackedBf& pk, int i0, int qb, float* Prel) {
  const int Dh = P.Dp / 2;
  mmb(qb, rel_window_width(i0, qb), Dh, words(pk.QP) + i0 * Dh, Dh, 1, pk.RT + rel_window_base(P, i0),
      P.TRld, Prel, P.ldW, false);
}

void forward_item_bf(const Problem& P, int b, int h, Scratch& sc, const int32_t* segpad,
                     uint16_t* out, float* lse) {
  const int T = P.T, Dp = P.Dp, D = P.D, Tk = P.Tk, kh = h / P.G;
  sc.used = 0;
  auto half = [&](size_t n) { return reinterpret_cast<uint16_t*>(sc.alloc((n + 1) / 2)); };
  PackedBf pk;
  pk.Q = half(static_cast<size_t>(T) * Dp);
  pk.Kb = half(static_cast<size_t>(Tk) * Dp);
  pk.Vp = half(static_cast<size_t>(Tk) * Dp);
  if (P.rel) pk.QP = half(static_cast<size_t>(T) * Dp);
  float* S = sc.alloc(kBq * kBk);
  uint16_t* Pb = half(kBq * kBk);
  float* acc = sc.alloc(kBq * Dp);
  float* Prel = P.rel ? sc.alloc(kBq * P.ldW) : nullptr;
  pack_bf(P, P.q, b, P.H, h, pk.Q, T, BfLayout::kRows);
  pack_bf(P, P.k, b, P.KH, kh, pk.Kb, Tk, BfLayout::kKeyBlocks);
  pack_bf(P, P.v, b, P.KH, kh, pk.Vp, Tk, BfLayout::kPairRows);
  if (P.rel) {
    pack_bf(P, P.qp, b, P.H, h, pk.QP, T, BfLayout::kRows);
    pk.RT = P.relT_bf + static_cast<long>(h) * (Dp / 2) * P.TRld;
  }
  const int32_t* seg = P.seg + static_cast<long>(b) * T;
  RowCtx ctx{segpad, false, P.alibi ? P.slopes[h] : 0.f, P.alibi};
  float mrow[kBq], lrow[kBq];

  for (int i0 = 0; i0 < T; i0 += kBq) {
    const int qb = std::min(kBq, T - i0);
    std::fill(mrow, mrow + qb, kNegBig);
    std::fill(lrow, lrow + qb, 0.f);
    std::memset(acc, 0, sizeof(float) * qb * Dp);
    if (P.rel) rel_block_scores_bf(P, pk, i0, qb, Prel);
    for (int j0 = 0; j0 < i0 + qb; j0 += kBk) {
      const int kb = std::min(kBk, T - j0);
      bool uniform;
      if (!tile_any_allowed(seg, i0, qb, j0, kb, &uniform)) continue;
      ctx.masked = !uniform || j0 + kBk - 1 > i0;
      tile_scores_bf(P, pk, i0, qb, j0, S, Prel);
      for (int r = 0; r < qb; ++r) {
        online_softmax_row(ctx, i0 + r, j0, S + r * kBk, mrow[r], lrow[r], acc + r * Dp, Dp);
        row_to_bf16(S + r * kBk, Pb + r * kBk, kBk);
      }
      // acc += P V (pairs along the keys)
      mmb(qb, Dp, (kb + 1) / 2, words(Pb), kBk / 2, 1, words(pk.Vp) + static_cast<long>(j0 / 2) * Dp,
          Dp, acc, Dp, true);
    }
    for (int r = 0; r < qb; ++r) {
      const int i = i0 + r;
      const float inv = 1.f / lrow[r];
      uint16_t* o = out + P.idx(b, i, P.H, h);
      for (int d = 0; d < D; ++d) o[d] = f32_to_bf16(acc[r * Dp + d] * inv);
      lse[(static_cast<long>(b) * P.H + h) * T + i] = mrow[r] + std::log(lrow[r]);
    }
  }
}

// Backward of one (b, h) on the bf16 path; as backward_item, except that dK (which sums Q, not
// scale * Q) and rel_dst's terms are scaled by the caller / here at the end.
void backward_item_bf(const Problem& P, int b, int h, Scratch& sc, const int32_t* segpad,
                      const Grads& g, float* dK, float* dV, float* rel_dst, bool pack_kv) {
  const int T = P.T, Dp = P.Dp, D = P.D, Tk = P.Tk, TR = P.TR, Dh = Dp / 2, kh = h / P.G;
  sc.used = 0;
  auto half = [&](size_t n) { return reinterpret_cast<uint16_t*>(sc.alloc((n + 1) / 2)); };
  const size_t rows = static_cast<size_t>(Tk) * Dp;
  PackedBf pk;  // fixed scratch order: k/v packed for the previous head of this kv group stay valid
  pk.Kb = half(rows);
  pk.Vb = half(rows);
  pk.Kp = half(rows);
  pk.Q = half(rows);
  pk.Qp = half(rows);
  pk.dO = half(rows);
  pk.dOp = half(rows);
  float* Di = sc.alloc(T);
  float* L = sc.alloc(T);
  float* dQ = sc.alloc(T * Dp);
  float *dQP = nullptr, *dR = nullptr, *Prel = nullptr, *dSrel = nullptr;
  uint16_t *dSrelR = nullptr, *dSrelP = nullptr;
  if (P.rel) {
    pk.QP = half(rows);
    pk.QPp = half(rows);
    dQP = sc.alloc(T * Dp);
    dR = sc.alloc(TR * Dp);
    Prel = sc.alloc(kBq * P.ldW);
    dSrel = sc.alloc(kBq * P.ldW);
    dSrelR = half(kBq * P.ldW);
    dSrelP = half(kBq * P.ldW);
    std::memset(dQP, 0, sizeof(float) * T * Dp);
    std::memset(dR, 0, sizeof(float) * TR * Dp);
    pack_bf(P, P.qp, b, P.H, h, pk.QP, T, BfLayout::kRows);
    pack_bf(P, P.qp, b, P.H, h, pk.QPp, Tk, BfLayout::kPairRows);
    pk.RT = P.relT_bf + static_cast<long>(h) * Dh * P.TRld;
    pk.Rp = P.rel_bf + static_cast<long>(h) * (TR / 2) * Dp;
  }
  float* Pt = sc.alloc(kBq * kBk);
  float* dP = sc.alloc(kBq * kBk);
  float* dS = sc.alloc(kBq * kBk);
  uint16_t* Ppair = half(kBq * kBk);
  uint16_t* dSpair = half(kBq * kBk);
  uint16_t* dSr = half(kBq * kBk);
  if (pack_kv) {
    pack_bf(P, P.k, b, P.KH, kh, pk.Kb, Tk, BfLayout::kKeyBlocks);
    pack_bf(P, P.k, b, P.KH, kh, pk.Kp, Tk, BfLayout::kPairRows);
    pack_bf(P, P.v, b, P.KH, kh, pk.Vb, Tk, BfLayout::kKeyBlocks);
  }
  pack_bf(P, P.q, b, P.H, h, pk.Q, T, BfLayout::kRows);
  pack_bf(P, P.q, b, P.H, h, pk.Qp, Tk, BfLayout::kPairRows);
  pack_bf(P, g.dout, b, P.H, h, pk.dO, T, BfLayout::kRows);
  pack_bf(P, g.dout, b, P.H, h, pk.dOp, Tk, BfLayout::kPairRows);
  std::memset(dQ, 0, sizeof(float) * T * Dp);
  const uint16_t* gout = static_cast<const uint16_t*>(g.out);
  for (int t = 0; t < T; ++t) {
    const uint16_t* go = pk.dO + static_cast<long>(t) * Dp;
    const uint16_t* o = gout + P.idx(b, t, P.H, h);
    float s = 0.f;
    for (int d = 0; d < D; ++d) s += bf16_to_f32(go[d]) * bf16_to_f32(o[d]);
    Di[t] = s;
    L[t] = g.lse[(static_cast<long>(b) * P.H + h) * T + t];
  }
  const int32_t* seg = P.seg + static_cast<long>(b) * T;
  RowCtx ctx{segpad, false, P.alibi ? P.slopes[h] : 0.f, P.alibi};

  for (int i0 = 0; i0 < T; i0 += kBq) {
    const int qb = std::min(kBq, T - i0), qp2 = (qb + 1) / 2;
    const int W = rel_window_width(i0, qb), wb = rel_window_base(P, i0);
    if (P.rel) {
      rel_block_scores_bf(P, pk, i0, qb, Prel);
      for (int r = 0; r < qb; ++r) std::memset(dSrel + r * P.ldW, 0, sizeof(float) * W);
    }
    for (int j0 = 0; j0 < i0 + qb; j0 += kBk) {
      const int kb = std::min(kBk, T - j0);
      bool uniform;
      if (!tile_any_allowed(seg, i0, qb, j0, kb, &uniform)) continue;
      ctx.masked = !uniform || j0 + kBk - 1 > i0;
      tile_scores_bf(P, pk, i0, qb, j0, Pt, Prel);
      // dP = dO V^T
      mmb(qb, kBk, Dh, words(pk.dO) + i0 * Dh, Dh, 1, words(pk.Vb) + static_cast<long>(j0) * Dh, kBk,
          dP, kBk, false);
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
        row_to_bf16(ds, dSr + r * kBk, kBk);
      }
      rows_to_pairs(Pt, kBk, qb, words(Ppair), kBk, kBk);
      rows_to_pairs(dS, kBk, qb, words(dSpair), kBk, kBk);
      // dV[j] += P^T dO ; dK[j] += dS^T Q (pairs along the queries)
      mmb(kb, Dp, qp2, words(Ppair), 1, kBk, words(pk.dOp) + static_cast<long>(i0 / 2) * Dp, Dp,
          dV + j0 * Dp, Dp, true);
      mmb(kb, Dp, qp2, words(dSpair), 1, kBk, words(pk.Qp) + static_cast<long>(i0 / 2) * Dp, Dp,
          dK + j0 * Dp, Dp, true);
      // dQ[i] += dS K (pairs along the keys)
      mmb(qb, Dp, (kb + 1) / 2, words(dSr), kBk / 2, 1, words(pk.Kp) + static_cast<long>(j0 / 2) * Dp,
          Dp, dQ + i0 * Dp, Dp, true);
      if (P.rel) {  // scatter dS into the block's Toeplitz-shifted buffer (see Prel)
        for (int r = 0; r < qb; ++r) {
          float* dst = dSrel + r * P.ldW + j0 - r + kBq - 1;
          for (int n = 0; n < kNVk; ++n) vstore(dst + 16 * n, vload(dS + r * kBk + 16 * n));
        }
      }
    }
    if (P.rel) {
      // dQP[i0 + r] += sum_c dSrel[r, c] R[wb + c];  dR[wb + c] += sum_r dSrel[r, c] QP[i0 + r]
      for (int r = 0; r < qb; ++r) row_to_bf16(dSrel + r * P.ldW, dSrelR + r * P.ldW, W);
      rows_to_pairs(dSrel, P.ldW, qb, words(dSrelP), P.ldW, W);
      mmb(qb, Dp, W / 2, words(dSrelR), P.ldW / 2, 1, pk.Rp + static_cast<long>(wb / 2) * Dp, Dp,
          dQP + i0 * Dp, Dp, true);
      mmb(W, Dp, qp2, words(dSrelP), 1, P.ldW, words(pk.QPp) + static_cast<long>(i0 / 2) * Dp, Dp,
          dR + wb * Dp, Dp, true);
    }
  }
  const float s = P.scale;
  for (int t = 0; t < T; ++t) {
    uint16_t* x = static_cast<uint16_t*>(g.dq) + P.idx(b, t, P.H, h);
    for (int d = 0; d < D; ++d) x[d] = f32_to_bf16(s * dQ[t * Dp + d]);
    if (P.rel) {
      uint16_t* y = static_cast<uint16_t*>(g.dqp) + P.idx(b, t, P.H, h);
      for (int d = 0; d < D; ++d) y[d] = f32_to_bf16(s * dQP[t * Dp + d]);
    }
  }
  if (P.rel) {
    const long stride = static_cast<long>(P.H) * D;
    for (int r = 0; r < T; ++r) {
      float* x = rel_dst + r * stride;
      const float* src = dR + (P.PADL + T - 1 - r) * Dp;
      for (int d = 0; d < D; ++d) x[d] += s * src[d];
    }
  }
}

size_t forward_scratch_bf(const Problem& P) {
  size_t n = 0;
  auto a = [&](size_t x) { n += round_up(static_cast<int>(x), 16); };
  auto hf = [&](size_t e) { a((e + 1) / 2); };
  hf(P.T * P.Dp); hf(P.Tk * P.Dp); hf(P.Tk * P.Dp);
  if (P.rel) hf(P.T * P.Dp);
  a(kBq * kBk); hf(kBq * kBk); a(kBq * P.Dp);
  if (P.rel) a(kBq * P.ldW);
  return n;
}

size_t backward_scratch_bf(const Problem& P) {
  size_t n = 0;
  auto a = [&](size_t x) { n += round_up(static_cast<int>(x), 16); };
  auto hf = [&](size_t e) { a((e + 1) / 2); };
  const size_t rows = static_cast<size_t>(P.Tk) * P.Dp;
  for (int i = 0; i < 7; ++i) hf(rows);
  a(P.T); a(P.T); a(P.T * P.Dp);
  if (P.rel) {
    hf(rows); hf(rows);
    a(P.T * P.Dp); a(P.TR * P.Dp); a(kBq * P.ldW); a(kBq * P.ldW); hf(kBq * P.ldW); hf(kBq * P.ldW);
  }
  a(kBq * kBk); a(kBq * kBk); a(kBq * kBk); hf(kBq * kBk); hf(kBq * kBk); hf(kBq * kBk);
  return n;
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

Problem make_problem(ffi::AnyBuffer& q, ffi::AnyBuffer& k, ffi::AnyBuffer& v,
                     ffi::Buffer<ffi::S32>& seg, ffi::AnyBuffer& qp,
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
  P.bf16 = q.element_type() == ffi::BF16;
  P.q = q.untyped_data();
  P.k = k.untyped_data();
  P.v = v.untyped_data();
  P.qp = qp.untyped_data();
  P.rk = rk.typed_data();
  P.slopes = slopes.typed_data();
  P.seg = seg.typed_data();
  P.init();
  return P;
}

// q, k, v (and q_pos when has_rel) and the listed other buffers must all be fp32 or all bf16.
ffi::Error check_dtypes(ffi::AnyBuffer& q, ffi::AnyBuffer& k, ffi::AnyBuffer& v, ffi::AnyBuffer& qp,
                        int64_t has_rel, std::initializer_list<ffi::DataType> others) {
  const ffi::DataType t = q.element_type();
  if (t != ffi::F32 && t != ffi::BF16)
    return ffi::Error::InvalidArgument("attention q must be float32 or bfloat16");
  bool same = k.element_type() == t && v.element_type() == t && (!has_rel || qp.element_type() == t);
  for (ffi::DataType o : others) same = same && o == t;
  if (!same)
    return ffi::Error::InvalidArgument(
        "attention q, k, v, q_pos, out and dout (and dq, dk, dv, dq_pos) must share one dtype");
  return ffi::Error::Success();
}

// Every head's relative keys packed once per call, fp32 (relT [H][Dp][TRld], rel [H][TR][Dp]) or
// bf16 (words: relT [H][Dp/2][TRld], rel [H][TR/2][Dp]); `both` also packs rel (the backward).
void pack_all_rel(Problem& P, int threads, bool both, PooledBuffer& relT, PooledBuffer& relR) {
  const size_t nt = static_cast<size_t>(P.Dp) * P.TRld, nr = static_cast<size_t>(P.TR) * P.Dp;
  if (P.bf16) {  // bf16 elements, held in float-sized buffers of half the count
    relT.acquire(P.H * nt / 2);
    relR.acquire(P.H * nr / 2);
    parallel_for(P.H, threads, [&](int h, int) {
      pack_rel_bf(P, h, reinterpret_cast<uint16_t*>(relT.data()) + h * nt,
                  reinterpret_cast<uint16_t*>(relR.data()) + h * nr);
    });
    P.relT_bf = reinterpret_cast<const uint32_t*>(relT.data());
    P.rel_bf = reinterpret_cast<const uint32_t*>(relR.data());
    return;
  }
  relT.acquire(P.H * nt);
  if (both) relR.acquire(P.H * nr);
  parallel_for(P.H, threads, [&](int h, int) {
    pack_rel(P, h, relT.data() + h * nt, both ? relR.data() + h * nr : nullptr);
  });
  P.relT_all = relT.data();
  if (both) P.rel_all = relR.data();
}

ffi::Error AttnFwdImpl(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                       ffi::Buffer<ffi::S32> seg, ffi::AnyBuffer qp,
                       ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> slopes,
                       ffi::Result<ffi::AnyBuffer> out, ffi::ResultBuffer<ffi::F32> lse,
                       float scale, int64_t has_rel, int64_t has_alibi) {
  if (q.dimensions().size() != 4 || k.dimensions().size() != 4)
    return ffi::Error::InvalidArgument("q, k, v must be rank 4");
  if (auto e = check_dtypes(q, k, v, qp, has_rel, {out->element_type()}); e.failure()) return e;
  Problem P = make_problem(q, k, v, seg, qp, rk, slopes, scale, has_rel, has_alibi);
  if (auto e = check_shapes(P); e.failure()) return e;
  std::vector<int32_t> segpad = pad_segments(P);
  const int threads = num_threads();
  const int n = P.B * P.H;
  const size_t per = P.bf16 ? forward_scratch_bf(P) : forward_scratch(P);
  std::vector<Scratch> sc(std::min(threads, n));
  for (auto& s : sc) s.buf.acquire(per);
  void* o = out->untyped_data();
  float* l = lse->typed_data();
  PooledBuffer relT, relR;
  if (P.rel) pack_all_rel(P, threads, /*both=*/false, relT, relR);
  parallel_for(n, threads, [&](int item, int worker) {
    const int b = item / P.H, h = item % P.H;
    const int32_t* sp = segpad.data() + static_cast<size_t>(b) * (P.Tk + 64);
    if (P.bf16)
      forward_item_bf(P, b, h, sc[worker], sp, static_cast<uint16_t*>(o), l);
    else
      forward_item(P, b, h, sc[worker], sp, static_cast<float*>(o), l);
  });
  return ffi::Error::Success();
}

ffi::Error AttnBwdImpl(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                       ffi::Buffer<ffi::S32> seg, ffi::AnyBuffer qp,
                       ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> slopes,
                       ffi::AnyBuffer out, ffi::Buffer<ffi::F32> lse,
                       ffi::AnyBuffer dout, ffi::Result<ffi::AnyBuffer> dq,
                       ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                       ffi::Result<ffi::AnyBuffer> dqp, ffi::ResultBuffer<ffi::F32> drel,
                       float scale, int64_t has_rel, int64_t has_alibi) {
  if (q.dimensions().size() != 4 || k.dimensions().size() != 4)
    return ffi::Error::InvalidArgument("q, k, v must be rank 4");
  if (auto e = check_dtypes(q, k, v, qp, has_rel,
                            {out.element_type(), dout.element_type(), dq->element_type(),
                             dk->element_type(), dv->element_type(),
                             has_rel ? dqp->element_type() : q.element_type()});
      e.failure())
    return e;
  Problem P = make_problem(q, k, v, seg, qp, rk, slopes, scale, has_rel, has_alibi);
  if (auto e = check_shapes(P); e.failure()) return e;
  std::vector<int32_t> segpad = pad_segments(P);
  const int threads = num_threads();
  const size_t per = P.bf16 ? backward_scratch_bf(P) : backward_scratch(P);
  const int T = P.T, D = P.D, Dp = P.Dp, Tk = P.Tk;

  Grads g{};
  g.dq = dq->untyped_data();
  g.dk = dk->untyped_data();
  g.dv = dv->untyped_data();
  g.dqp = dqp->untyped_data();
  g.drel = drel->typed_data();
  g.out = out.untyped_data();
  g.lse = lse.typed_data();
  g.dout = dout.untyped_data();

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
  if (P.rel) pack_all_rel(P, threads, /*both=*/true, relT, relR);
  // dK on the bf16 path sums dS^T Q (Q unscaled): the scale is applied when it is written out.
  const float dk_scale = P.bf16 ? P.scale : 1.f;
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
        const int32_t* sp = segpad.data() + static_cast<size_t>(b) * (Tk + 64);
        if (P.bf16)
          backward_item_bf(P, b, h, sc[worker], sp, g, dK, dV, rel_dst, /*pack_kv=*/j == 0);
        else
          backward_item(P, b, h, sc[worker], sp, g, dK, dV, rel_dst, /*pack_kv=*/j == 0);
      }
      for (int t = 0; t < T; ++t) {
        const long at = P.idx(b, t, P.KH, kh);
        if (P.bf16) {
          uint16_t* xk = static_cast<uint16_t*>(g.dk) + at;
          uint16_t* xv = static_cast<uint16_t*>(g.dv) + at;
          for (int d = 0; d < D; ++d) {
            xk[d] = f32_to_bf16(dk_scale * dK[t * Dp + d]);
            xv[d] = f32_to_bf16(dV[t * Dp + d]);
          }
        } else {
          float* xk = static_cast<float*>(g.dk) + at;
          float* xv = static_cast<float*>(g.dv) + at;
          for (int d = 0; d < D; ++d) {
            xk[d] = dK[t * Dp + d];
            xv[d] = dV[t * Dp + d];
          }
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
    std::memset(g.dqp, 0, dqp->size_bytes());
    std::memset(g.drel, 0, sizeof(float) * drel->element_count());
  }
  return ffi::Error::Success();
}

}  // namespace

// 1 if bf16 attention runs its GEMMs on the bf16 dot-product units (AVX512-BF16), else 0
// (bf16 pairs widened to fp32: the same products).
extern "C" int GopherAttnHasBf16Dot() {
#ifdef GJ_BF16_DOT
  return 1;
#else
  return 0;
#endif
}

// 1 if the bf16 tile GEMMs run on AMX tiles (built for AMX-BF16, granted by the OS, GOPHER_JAX_AMX
// not 0), else 0.
extern "C" int GopherAttnUsesAmx() {
#if defined(GJ_ATTN_AMX)
  return amx_granted() ? 1 : 0;
#else
  return 0;
#endif
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherAttnFwd, AttnFwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // segment_ids
                                  .Arg<ffi::AnyBuffer>()  // q_pos (dummy if !has_rel)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // rel_keys (dummy if !has_rel)
                                  .Arg<ffi::Buffer<ffi::F32>>()  // alibi slopes (dummy if !has_alibi)
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("has_rel")
                                  .Attr<int64_t>("has_alibi"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherAttnBwd, AttnBwdImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::Buffer<ffi::S32>>()  // segment_ids
                                  .Arg<ffi::AnyBuffer>()  // q_pos
                                  .Arg<ffi::Buffer<ffi::F32>>()  // rel_keys
                                  .Arg<ffi::Buffer<ffi::F32>>()  // alibi slopes
                                  .Arg<ffi::AnyBuffer>()  // out
                                  .Arg<ffi::Buffer<ffi::F32>>()  // lse
                                  .Arg<ffi::AnyBuffer>()  // d out
                                  .Ret<ffi::AnyBuffer>()  // dq
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // dv
                                  .Ret<ffi::AnyBuffer>()  // d q_pos
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d rel_keys
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("has_rel")
                                  .Attr<int64_t>("has_alibi"));
