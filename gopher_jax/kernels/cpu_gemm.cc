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

namespace ffi = xla::ffi;

namespace {

constexpr int MR = 12;   // rows of the register tile
constexpr int NR = 32;   // columns of the register tile (two 16-lane fp32 vectors)
constexpr int KC = 256;  // depth of one packed slice (a multiple of 2 for bf16 pairs)
constexpr int MC = 96;   // rows of one packed A block (a multiple of MR)
constexpr int NC = 256;  // columns of one work item (a multiple of NR)

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

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
  const int kp = (kb + 1) / 2;
  for (int ir = 0; ir < mb; ir += MR) {
    const int rows = std::min(MR, mb - ir);
    uint16_t* panel = dst + static_cast<int64_t>(ir) * kp * 2;
    for (int p = 0; p < kp; ++p) {
      uint16_t* d = panel + p * MR * 2;
      const bool odd = 2 * p + 1 >= kb;
      for (int r = 0; r < rows; ++r) {
        d[2 * r] = a.at(i0 + ir + r, k0 + 2 * p);
        d[2 * r + 1] = odd ? 0 : a.at(i0 + ir + r, k0 + 2 * p + 1);
      }
      for (int r = rows; r < MR; ++r) d[2 * r] = d[2 * r + 1] = 0;
    }
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

int num_threads() {
  if (const char* env = std::getenv("GOPHER_JAX_GEMM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Runs fn(item) for item in [0, n) on up to `threads` threads (the caller is one of them).
template <typename F>
void parallel_for(int n, int threads, F fn) {
  threads = std::max(1, std::min(threads, n));
  std::atomic<int> next{0};
  auto work = [&]() {
    for (int i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  };
  std::vector<std::thread> pool;
  for (int w = 1; w < threads; ++w) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

// One work item: C[i0:i1, j0:j1] over all of K. P is the packed element type.
template <typename T, typename P, typename PackA, typename PackB, typename Kernel>
void gemm_item(const View<T>& a, const View<T>& b, float* c, int64_t ldc, int64_t K, int64_t i0,
               int64_t i1, int64_t j0, int64_t j1, PackA pack_a, PackB pack_b, Kernel kernel) {
  const int nb = static_cast<int>(j1 - j0);
  const int nb_pad = (nb + NR - 1) / NR * NR;
  std::vector<P> bbuf(static_cast<size_t>(KC + 1) * nb_pad), abuf(static_cast<size_t>(KC + 1) * MC);
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int kb = static_cast<int>(std::min<int64_t>(KC, K - k0));
    const int kstride = std::is_same<P, float>::value ? kb : (kb + 1) / 2 * 2;  // per panel row
    pack_b(b, k0, kb, j0, nb, bbuf.data());
    for (int64_t m0 = i0; m0 < i1; m0 += MC) {
      const int mb = static_cast<int>(std::min<int64_t>(MC, i1 - m0));
      pack_a(a, m0, mb, k0, kb, abuf.data());
      for (int jr = 0; jr < nb; jr += NR) {
        const P* bp = bbuf.data() + static_cast<int64_t>(jr) * kstride;
        for (int ir = 0; ir < mb; ir += MR) {
          kernel(kb, abuf.data() + static_cast<int64_t>(ir) * kstride, bp,
                 c + (m0 + ir) * ldc + j0 + jr, ldc, std::min(MR, mb - ir), std::min(NR, nb - jr),
                 k0 == 0);
        }
      }
    }
  }
}

template <typename T, typename P, typename PackA, typename PackB, typename Kernel>
void gemm(const View<T>& a, const View<T>& b, float* c, int64_t M, int64_t N, int64_t K,
          PackA pack_a, PackB pack_b, Kernel kernel) {
  if (K == 0) {
    std::memset(c, 0, sizeof(float) * M * N);
    return;
  }
  const int threads = num_threads();
  const int64_t n_items = (N + NC - 1) / NC;
  // Too few column blocks to keep every thread busy: split the rows as well (in MC multiples).
  const int64_t m_split = std::max<int64_t>(1, std::min<int64_t>((threads + n_items - 1) / n_items,
                                                                 (M + MC - 1) / MC));
  const int64_t m_chunk = ((M + m_split - 1) / m_split + MC - 1) / MC * MC;
  const int64_t m_items = (M + m_chunk - 1) / m_chunk;
  parallel_for(static_cast<int>(n_items * m_items), threads, [&](int item) {
    const int64_t jn = item % n_items, im = item / n_items;
    gemm_item<T, P>(a, b, c, N, K, im * m_chunk, std::min(M, (im + 1) * m_chunk), jn * NC,
                    std::min(N, (jn + 1) * NC), pack_a, pack_b, kernel);
  });
}

template <typename T>
void gemm_f32_path(const View<T>& a, const View<T>& b, float* c, int64_t M, int64_t N, int64_t K) {
  gemm<T, float>(a, b, c, M, N, K, pack_a_f32<T>, pack_b_f32<T>, kernel_f32);
}

ffi::Error GemmImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::Buffer<ffi::F32>> c,
                    int64_t trans_a, int64_t trans_b) {
  auto ad = a.dimensions(), bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2) return ffi::Error::InvalidArgument("gemm operands must be 2-D");
  const int64_t M = trans_a ? ad[1] : ad[0], K = trans_a ? ad[0] : ad[1];
  const int64_t Kb = trans_b ? bd[1] : bd[0], N = trans_b ? bd[0] : bd[1];
  if (K != Kb) return ffi::Error::InvalidArgument("gemm contracting dimensions differ");
  if (a.element_type() != b.element_type())
    return ffi::Error::InvalidArgument("gemm operands must have the same dtype");
  float* out = c->typed_data();
  if (a.element_type() == ffi::F32) {
    View<float> va{static_cast<const float*>(a.untyped_data()), ad[1], trans_a != 0};
    View<float> vb{static_cast<const float*>(b.untyped_data()), bd[1], trans_b != 0};
    gemm_f32_path(va, vb, out, M, N, K);
  } else if (a.element_type() == ffi::BF16) {
    View<uint16_t> va{static_cast<const uint16_t*>(a.untyped_data()), ad[1], trans_a != 0};
    View<uint16_t> vb{static_cast<const uint16_t*>(b.untyped_data()), bd[1], trans_b != 0};
#if defined(__AVX512BF16__)
    gemm<uint16_t, uint16_t>(va, vb, out, M, N, K, pack_a_bf16, pack_b_bf16, kernel_bf16);
#else
    gemm_f32_path(va, vb, out, M, N, K);
#endif
  } else {
    return ffi::Error::InvalidArgument("gemm supports float32 and bfloat16 operands");
  }
  return ffi::Error::Success();
}

}  // namespace

// 1 if bf16 operands run on the bf16 dot-product units (AVX512-BF16), else 0 (widened to fp32).
extern "C" int GopherGemmHasBf16Dot() { return kHasBf16Dot ? 1 : 0; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherGemm, GemmImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()          // a
                                  .Arg<ffi::AnyBuffer>()          // b
                                  .Ret<ffi::Buffer<ffi::F32>>()   // c = op(a) @ op(b)
                                  .Attr<int64_t>("trans_a")
                                  .Attr<int64_t>("trans_b"));
