// Blocked CPU GEMM for the Dense layers: C[M, N] (fp32) = op(A)[M, K] @ op(B)[K, N], called
// through the XLA FFI (see cpu_gemm.py).
//
// op(A) = A [M, K] or, with trans_a, A^T for A [K, M]; op(B) = B [K, N] or, with trans_b, B^T for
// B [N, K]. These four layouts cover a Dense layer's forward (x @ w), its input gradient
// (dy @ w^T) and its weight gradient (x^T @ dy), and the tied output head (x @ E^T) without any
// transpose in memory: the transposes happen while packing.
//
// Operands are both fp32 or both bf16; accumulation and the result are fp32. Built with
// -march=native, so the instruction set is the host's:
//   * bf16 on a CPU with AMX-BF16 (Intel Sapphire Rapids and later): the micro-kernel is a 32 x 32
//     block of C held in four AMX tiles, TDPBF16PS over 32-deep K steps (16 x 16 x 32 products per
//     instruction, fp32 sums), if the OS grants the process AMX state and GOPHER_JAX_AMX is not
//     0 (amx.h); otherwise
//   * bf16 on a CPU with AVX512-BF16 (Intel Cooper Lake+/Sapphire Rapids, AMD Zen 4/5): the
//     micro-kernel is VDPBF16PS (two bf16 products per fp32 lane per instruction, fp32 sums);
//   * fp32 (and bf16 without AVX512-BF16, widened to fp32 while packing): AVX-512 FMA;
//   * without AVX-512: the same blocking with a plain loop the compiler vectorises.
// The Python side measures this against XLA's own dot on the host and uses whichever is faster.
//
// Blocking (BLIS-style): each work item is a column range (NC wide) x row range of C; per item,
// KC-deep slices of op(B) are packed into NR-wide panels and MC x KC blocks of op(A) into MR-row
// panels, zero-padded at ragged edges, and an MR x NR register tile accumulates over the slice.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"
#include "simd_math.h"
#include "gemm_ffi.h"
#include "amx.h"

namespace ffi = xla::ffi;

namespace {

constexpr int MR = 12;       // rows of the register tile (AVX-512 kernels; AMX_MR for AMX)
constexpr int NR = 32;       // columns of the register tile (two 16-lane fp32 vectors)
constexpr int KC_F32 = 256;  // depth of one packed K slice, fp32 operands (a B micro-panel: 32 KiB)
constexpr int KC_BF16 = 512; // ... bf16 operands (the same bytes; K = d_model = 512 in one slice)
constexpr int MC = 96;       // rows of one work item (a multiple of MR)
constexpr int NC = 512;      // columns of one work item (a multiple of NR): its fp32 C block stays in L2

// Operand view: element (i, k) of op(X) with op(X) = X or X^T.
template <typename T>
struct View {
  const T* p;
  int64_t ld;
  bool trans;
  inline T at(int64_t i, int64_t k) const { return trans ? p[k * ld + i] : p[i * ld + k]; }
};

inline float widen(float x) { return x; }
inline float widen(uint16_t x) { return bf16_to_f32(x); }

// ---- fp32 packing: A panel [k][MR], B panel [k][NR] (fp32; bf16 inputs widened) --------------
template <typename T>
void pack_a_f32(const View<T>& a, int64_t i0, int mb, int64_t k0, int kb, float* dst) {
  for (int ir = 0; ir < mb; ir += MR) {
    const int rows = std::min(MR, mb - ir);
    for (int k = 0; k < kb; ++k) {
      float* d = dst + (static_cast<int64_t>(ir) * kb) + k * MR;
      for (int r = 0; r < rows; ++r) d[r] = widen(a.at(i0 + ir + r, k0 + k));
      for (int r = rows; r < MR; ++r) d[r] = 0.f;
    }
  }
}

template <typename T>
void pack_b_f32(const View<T>& b, int64_t k0, int kb, int64_t j0, int nb, float* dst) {
  // b.at(k, j) reads element (k, j) of op(B) (View's "i" is k here).
  for (int jr = 0; jr < nb; jr += NR) {
    const int cols = std::min(NR, nb - jr);
    for (int k = 0; k < kb; ++k) {
      float* d = dst + static_cast<int64_t>(jr) * kb + k * NR;
      for (int c = 0; c < cols; ++c) d[c] = widen(b.at(k0 + k, j0 + jr + c));
      for (int c = cols; c < NR; ++c) d[c] = 0.f;
    }
  }
}

// Writes (first slice) or adds the MR x NR tile to C, clipped to rows x cols.
inline void store_tile(const float* tile, float* c, int64_t ldc, int rows, int cols, bool first) {
  for (int r = 0; r < rows; ++r) {
    float* cr = c + r * ldc;
    const float* t = tile + r * NR;
    if (first) {
      for (int j = 0; j < cols; ++j) cr[j] = t[j];
    } else {
      for (int j = 0; j < cols; ++j) cr[j] += t[j];
    }
  }
}

#if defined(__AVX512F__)
inline void store_acc(__m512 (&acc)[MR][2], float* c, int64_t ldc, int rows, int cols, bool first) {
  if (cols == NR) {
    for (int r = 0; r < rows; ++r) {
      float* cr = c + r * ldc;
      if (first) {
        _mm512_storeu_ps(cr, acc[r][0]);
        _mm512_storeu_ps(cr + 16, acc[r][1]);
      } else {
        _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), acc[r][0]));
        _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), acc[r][1]));
      }
    }
    return;
  }
  alignas(64) float tile[MR * NR];
  for (int r = 0; r < MR; ++r) {
    _mm512_store_ps(tile + r * NR, acc[r][0]);
    _mm512_store_ps(tile + r * NR + 16, acc[r][1]);
  }
  store_tile(tile, c, ldc, rows, cols, first);
}

void kernel_f32(int kb, const float* ap, const float* bp, float* c, int64_t ldc, int rows, int cols,
                bool first) {
  __m512 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int k = 0; k < kb; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * NR), b1 = _mm512_loadu_ps(bp + k * NR + 16);
    const float* a = ap + k * MR;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  store_acc(acc, c, ldc, rows, cols, first);
}
#else
void kernel_f32(int kb, const float* ap, const float* bp, float* c, int64_t ldc, int rows, int cols,
                bool first) {
  alignas(64) float tile[MR * NR] = {};
  for (int k = 0; k < kb; ++k)
    for (int r = 0; r < MR; ++r) {
      const float a = ap[k * MR + r];
      for (int j = 0; j < NR; ++j) tile[r * NR + j] += a * bp[k * NR + j];
    }
  store_tile(tile, c, ldc, rows, cols, first);
}
#endif

// ---- bf16 pairs (AVX512-BF16): A panel [k/2][MR][2], B panel [k/2][NR][2] ----------------------
#if defined(__AVX512BF16__)
constexpr bool kHasBf16Dot = true;

void pack_a_bf16(const View<uint16_t>& a, int64_t i0, int mb, int64_t k0, int kb, uint16_t* dst) {
  // Panel layout [pair p][row r][2]: the 32-bit word (A[r, 2p], A[r, 2p + 1]) of each row.
  const int kp = (kb + 1) / 2;
  uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
  for (int ir = 0; ir < mb; ir += MR) {
    const int rows = std::min(MR, mb - ir);
    uint32_t* panel = d32 + static_cast<int64_t>(ir) * kp;
    if (!a.trans) {
      // Row-major A: each row's pairs are consecutive words; copy them word by word into the panel.
      for (int r = 0; r < rows; ++r) {
        const uint16_t* row = a.p + (i0 + ir + r) * a.ld + k0;
        const int full = kb / 2;
        for (int p = 0; p < full; ++p) {
          uint32_t w;
          std::memcpy(&w, row + 2 * p, 4);
          panel[p * MR + r] = w;
        }
        if (kb & 1) panel[full * MR + r] = row[kb - 1];
      }
    } else {
      // A^T stored [K, M]: rows k and k + 1 hold the pair's two halves for consecutive r; widen
      // both to 32 bits and merge (k + 1 in the high half), 16 rows at a time under a mask.
      const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
      for (int p = 0; p < kp; ++p) {
        const uint16_t* lo = a.p + (k0 + 2 * p) * a.ld + i0 + ir;
        const __m512i wl = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, lo));
        __m512i w = wl;
        if (2 * p + 1 < kb) {
          const __m512i wh = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, lo + a.ld));
          w = _mm512_or_si512(wl, _mm512_slli_epi32(wh, 16));
        }
        _mm512_mask_storeu_epi32(panel + p * MR, static_cast<__mmask16>((1u << MR) - 1), w);
      }
    }
    for (int r = rows; r < MR; ++r)
      for (int p = 0; p < kp; ++p) panel[p * MR + r] = 0;
  }
}

void pack_b_bf16(const View<uint16_t>& b, int64_t k0, int kb, int64_t j0, int nb, uint16_t* dst) {
  const int kp = (kb + 1) / 2;
  for (int jr = 0; jr < nb; jr += NR) {
    const int cols = std::min(NR, nb - jr);
    uint16_t* panel = dst + static_cast<int64_t>(jr) * kp * 2;
    for (int p = 0; p < kp; ++p) {
      uint16_t* d = panel + p * NR * 2;
      const bool odd = 2 * p + 1 >= kb;
      for (int c = 0; c < cols; ++c) {
        d[2 * c] = b.at(k0 + 2 * p, j0 + jr + c);
        d[2 * c + 1] = odd ? 0 : b.at(k0 + 2 * p + 1, j0 + jr + c);
      }
      for (int c = cols; c < NR; ++c) d[2 * c] = d[2 * c + 1] = 0;
    }
  }
}

void kernel_bf16(int kb, const uint16_t* ap, const uint16_t* bp, float* c, int64_t ldc, int rows,
                 int cols, bool first) {
  const int kp = (kb + 1) / 2;
  __m512 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int p = 0; p < kp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + p * NR * 2);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + p * NR * 2 + 32);
    const int32_t* a = reinterpret_cast<const int32_t*>(ap + p * MR * 2);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(a[r]);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
  }
  store_acc(acc, c, ldc, rows, cols, first);
}
#else
constexpr bool kHasBf16Dot = false;
#endif

// ---- bf16 on AMX tiles: A panel [AMX_MR rows][K padded to 32], B panels as pack_b_bf16's ---------
// TDPBF16PS multiplies an A tile (16 rows x 32 bf16 of K, row-major) by a B tile (16 K-pairs x 16
// columns, each pair's two bf16 side by side: pack_b_bf16's [pair][NR][2] layout, read 16 columns
// at a time with a 128-byte row stride) into a 16 x 16 fp32 C tile. The kernel keeps a 32 x 32 block
// of C in tiles 0-3, A rows 0-15 / 16-31 in tiles 4-5 and B columns 0-15 / 16-31 in tiles 6-7.
// Tiles cannot take ragged edges, so both packed operands are zero-padded: A to AMX_MR rows and a
// multiple of 32 in K, B to a multiple of 16 pairs (the full-width C block goes to the item's fp32
// buffer, and only its real rows and columns to C).
constexpr int AMX_MR = 32;
constexpr int AMX_K = 32;  // K per tile step

#if defined(GJ_AMX) && defined(__AVX512BF16__)
void pack_a_amx(const View<uint16_t>& a, int64_t i0, int mb, int64_t k0, int kb, uint16_t* dst) {
  const int kpad = round_up(kb, AMX_K), rows_pad = round_up(mb, AMX_MR);
  if (!a.trans) {  // row-major A: copy each row's K slice, zero the tail and the padding rows
    for (int r = 0; r < mb; ++r) {
      std::memcpy(dst + static_cast<int64_t>(r) * kpad, a.p + (i0 + r) * a.ld + k0, sizeof(uint16_t) * kb);
      std::memset(dst + static_cast<int64_t>(r) * kpad + kb, 0, sizeof(uint16_t) * (kpad - kb));
    }
    std::memset(dst + static_cast<int64_t>(mb) * kpad, 0, sizeof(uint16_t) * (rows_pad - mb) * kpad);
    return;
  }
  // A^T stored [K, M]: 16 rows x 16 K-pairs at a time, as 32-bit words (A[r, 2p], A[r, 2p + 1])
  // gathered pair by pair (two masked 16-row loads, merged), then transposed so that each row's
  // 16 words (32 K values: one tile row) are contiguous.
  for (int rb = 0; rb < rows_pad; rb += 16) {
    const int rows = std::max(0, std::min(16, mb - rb));
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    for (int kk = 0; kk < kpad; kk += AMX_K) {
      __m512i w[16];
      for (int q = 0; q < 16; ++q) {
        const int k = kk + 2 * q;
        const uint16_t* lo = a.p + (k0 + k) * a.ld + i0 + rb;
        const __m512i wl = k < kb ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, lo)) : _mm512_setzero_si512();
        const __m512i wh = k + 1 < kb ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, lo + a.ld))
                                      : _mm512_setzero_si512();
        w[q] = _mm512_or_si512(wl, _mm512_slli_epi32(wh, 16));
      }
      transpose16x16_epi32(w);
      for (int r = 0; r < 16; ++r) _mm512_storeu_si512(dst + static_cast<int64_t>(rb + r) * kpad + kk, w[r]);
    }
  }
}

void pack_b_amx(const View<uint16_t>& b, int64_t k0, int kb, int64_t j0, int nb, uint16_t* dst) {
  pack_b_bf16(b, k0, kb, j0, nb, dst);
  const int kp = (kb + 1) / 2, kp_pad = round_up(kp, AMX_K / 2);
  std::memset(dst + static_cast<int64_t>(kp) * NR * 2, 0, sizeof(uint16_t) * (kp_pad - kp) * NR * 2);
}

void kernel_amx(int kb, const uint16_t* ap, const uint16_t* bp, float* c, int64_t ldc, int /*rows*/,
                int /*cols*/, bool first) {
  // c is the work item's fp32 buffer, at least AMX_MR x NR wide here (padding included).
  const int kpad = round_up(kb, AMX_K);
  const int64_t lda = 2 * kpad, ldb = 2 * 2 * NR, ldc_b = 4 * ldc;  // tile row strides, bytes
  if (first) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  } else {
    _tile_loadd(0, c, ldc_b);
    _tile_loadd(1, c + 16, ldc_b);
    _tile_loadd(2, c + 16 * ldc, ldc_b);
    _tile_loadd(3, c + 16 * ldc + 16, ldc_b);
  }
  for (int kk = 0; kk < kpad; kk += AMX_K) {
    const uint16_t* bk = bp + (kk / 2) * NR * 2;
    _tile_loadd(4, ap + kk, lda);
    _tile_loadd(6, bk, ldb);
    _tile_loadd(7, bk + 32, ldb);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, ap + 16 * kpad + kk, lda);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ldc_b);
  _tile_stored(1, c + 16, ldc_b);
  _tile_stored(2, c + 16 * ldc, ldc_b);
  _tile_stored(3, c + 16 * ldc + 16, ldc_b);
}
#endif

int num_threads() { return threads_from_env("GOPHER_JAX_GEMM_THREADS"); }

// Writes an fp32 row of `n` values to the output row in its dtype (fp32, or bf16 rounded to nearest even).
inline void write_row(const float* src, float* dst, int n) { std::memcpy(dst, src, sizeof(float) * n); }
inline void write_row(const float* src, uint16_t* dst, int n) {
  int j = 0;
#if defined(__AVX512BF16__)
  for (; j + 16 <= n; j += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
#endif
  for (; j < n; ++j) dst[j] = f32_to_bf16(src[j]);
}

// C[M, N] (fp32 sums, stored as O) = op(A) @ op(B); P is the packed element type, KC its slice depth.
//
// op(B) is packed once per call, whole (every K slice x every NR-wide panel, in parallel), so no
// work item packs it again. A work item is an MC x nc block of C (nc = NC, halved for small C
// until there are 8 items per thread, so no thread idles at the end): for each K slice it packs its
// MC rows of op(A) and runs the register tile over the block, row panel by row panel (the A panel
// stays in L1 while the B panels stream from L2), accumulating into a per-thread fp32 block that
// stays in cache across the slices; after the last slice each MR-row panel is written to C at once,
// in C's dtype, while it is still in L1. Items run on all threads, consecutive items sharing their
// columns (op(B) in cache). Measured on the gopher_44m bf16 shapes against the previous loop order
// and scalar packing (one thread, AMD EPYC Zen 4): 183-190 -> 195-198 GFLOP/s over the step's GEMMs.
//
// PMR is the kernel's row-panel height (MR, or AMX_MR), KALIGN what a packed A row's K is padded to
// (1 for fp32, 2 for bf16 pairs, AMX_K for AMX tiles), and a ThreadScope object lives on each
// thread for as long as it runs kernels (AmxTileScope: the tile configuration is per-thread state).
struct NoThreadScope {};

template <typename T, typename P, int KC, int PMR, int KALIGN, typename ThreadScope, typename O,
          typename PackA, typename PackB, typename Kernel>
void gemm(const View<T>& a, const View<T>& b, O* c, int64_t M, int64_t N, int64_t K, PackA pack_a,
          PackB pack_b, Kernel kernel) {
  static_assert(MC % PMR == 0, "a work item's rows are whole row panels");
  const int threads = num_threads();
  const int64_t slices = (K + KC - 1) / KC, panels = (N + NR - 1) / NR;
  const int64_t panel_elems = static_cast<int64_t>(KC) * NR;  // one packed slice of one panel (padded)
  // op(B) packed: [slice][panel][KC x NR], zero-padded (thread_local: concurrent calls run on
  // different threads; the buffer is reused by later calls on this thread).
  thread_local std::vector<P> bpack;
  bpack.resize(static_cast<size_t>(slices * panels * panel_elems));
  P* bp_all = bpack.data();
  for_each_item(static_cast<int>(slices * panels), threads, [&](int item) {
    const int64_t s = item / panels, jp = item % panels;
    const int64_t k0 = s * KC, j0 = jp * NR;
    pack_b(b, k0, static_cast<int>(std::min<int64_t>(KC, K - k0)), j0, static_cast<int>(std::min<int64_t>(NR, N - j0)),
           bp_all + item * panel_elems);
  });
  const int64_t m_blocks = (M + MC - 1) / MC;
  // A small C over a deep K (the weight gradient of a 512 x 512 projection sums over all tokens):
  // each thread sums its own share of the K slices over all of C, and the shares are added at the
  // end, so every thread works on full-width blocks. Otherwise, enough work items to keep every
  // thread busy to the end: narrower column blocks for small C.
  const bool split_k = threads > 1 && m_blocks * ((N + NC - 1) / NC) < 4 * threads && slices >= 2 * threads;
  int64_t nc = NC;
  while (!split_k && nc > 4 * NR && m_blocks * ((N + nc - 1) / nc) < 8 * threads) nc /= 2;
  const int64_t n_blocks = (N + nc - 1) / nc, n_items = m_blocks * n_blocks;
  std::vector<std::vector<float>> partial(split_k ? threads : 0);  // per-thread fp32 C (split_k)
  std::atomic<int64_t> next{0};
  auto work = [&](int tid) {
    const int64_t s_begin = split_k ? slices * tid / threads : 0;
    const int64_t s_end = split_k ? slices * (tid + 1) / threads : slices;
    if (split_k) partial[tid].resize(static_cast<size_t>(M * N));
    ThreadScope scope;
    std::vector<P> abuf(static_cast<size_t>(KC) * MC);
    std::vector<float> cbuf(static_cast<size_t>(MC) * NC);
    for (int64_t item = split_k ? 0 : next.fetch_add(1); item < n_items;
         item = split_k ? item + 1 : next.fetch_add(1)) {
      const int64_t jn = item / m_blocks, im = item % m_blocks;
      const int64_t m0 = im * MC, j0 = jn * nc;
      const int mb = static_cast<int>(std::min<int64_t>(MC, M - m0));
      const int nb = static_cast<int>(std::min<int64_t>(nc, N - j0));
      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t k0 = s * KC;
        const int kb = static_cast<int>(std::min<int64_t>(KC, K - k0));
        const int kstride = round_up(kb, KALIGN);  // per packed row
        pack_a(a, m0, mb, k0, kb, abuf.data());
        for (int ir = 0; ir < mb; ir += PMR) {
          for (int jr = 0; jr < nb; jr += NR) {
            const P* bp = bp_all + (s * panels + (j0 + jr) / NR) * panel_elems;
            kernel(kb, abuf.data() + static_cast<int64_t>(ir) * kstride, bp, cbuf.data() + ir * NC + jr, NC,
                   std::min(PMR, mb - ir), std::min(NR, nb - jr), s == s_begin);
          }
          if (s + 1 == s_end)  // these PMR rows are final: write them while they are in L1
            for (int r = ir; r < std::min(ir + PMR, mb); ++r) {
              if (split_k)
                std::memcpy(partial[tid].data() + (m0 + r) * N + j0, cbuf.data() + r * NC, sizeof(float) * nb);
              else
                write_row(cbuf.data() + r * NC, c + (m0 + r) * N + j0, nb);
            }
        }
      }
    }
  };
  const int t = split_k ? threads : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n_items)));
  std::vector<std::thread> pool;
  for (int w = 1; w < t; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& th : pool) th.join();
  if (split_k)
    for_each_item(static_cast<int>(M), threads, [&](int r) {
      float* row = partial[0].data() + static_cast<int64_t>(r) * N;
      for (int u = 1; u < threads; ++u) {
        const float* other = partial[u].data() + static_cast<int64_t>(r) * N;
        for (int64_t j = 0; j < N; ++j) row[j] += other[j];
      }
      write_row(row, c + static_cast<int64_t>(r) * N, static_cast<int>(N));
    });
}

template <typename T, typename O>
void gemm_f32_path(const View<T>& a, const View<T>& b, O* c, int64_t M, int64_t N, int64_t K) {
  gemm<T, float, KC_F32, MR, 1, NoThreadScope>(a, b, c, M, N, K, pack_a_f32<T>, pack_b_f32<T>, kernel_f32);
}

template <typename O>
void gemm_typed(ffi::AnyBuffer a, ffi::AnyBuffer b, O* out, int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  auto ad = a.dimensions(), bd = b.dimensions();
  if (a.element_type() == ffi::F32) {
    View<float> va{static_cast<const float*>(a.untyped_data()), ad[1], ta};
    View<float> vb{static_cast<const float*>(b.untyped_data()), bd[1], tb};
    gemm_f32_path(va, vb, out, M, N, K);
  } else {
    View<uint16_t> va{static_cast<const uint16_t*>(a.untyped_data()), ad[1], ta};
    View<uint16_t> vb{static_cast<const uint16_t*>(b.untyped_data()), bd[1], tb};
#if defined(GJ_AMX) && defined(__AVX512BF16__)
    if (amx_granted()) {
      gemm<uint16_t, uint16_t, KC_BF16, AMX_MR, AMX_K, AmxTileScope>(va, vb, out, M, N, K, pack_a_amx, pack_b_amx,
                                                                 kernel_amx);
      return;
    }
#endif
#if defined(__AVX512BF16__)
    gemm<uint16_t, uint16_t, KC_BF16, MR, 2, NoThreadScope>(va, vb, out, M, N, K, pack_a_bf16, pack_b_bf16,
                                                            kernel_bf16);
#else
    gemm_f32_path(va, vb, out, M, N, K);
#endif
  }
}

ffi::Error GemmImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c, int64_t trans_a,
                    int64_t trans_b) {
  return gemm_call(a, b, c, trans_a, trans_b, INT64_MAX, [&](auto* out, int64_t M, int64_t N, int64_t K) {
    gemm_typed(a, b, out, M, N, K, trans_a != 0, trans_b != 0);
  });
}

}  // namespace

// 1 if bf16 operands run on the bf16 dot-product units (AVX512-BF16 or AMX), else 0 (widened to fp32).
extern "C" int GopherGemmHasBf16Dot() { return kHasBf16Dot ? 1 : 0; }

// 1 if bf16 operands run on AMX tiles (compiled for AMX-BF16, granted by the OS, not switched off).
extern "C" int GopherGemmUsesAmx() { return amx_granted() ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherGemm, GemmImpl, gemm_binding());
