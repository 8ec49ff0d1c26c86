// The Dense layers' GEMM through Intel oneMKL, called through the XLA FFI (see mkl_gemm.py).
//
// C[M, N] = op(A)[M, K] @ op(B)[K, N] with the same operand layouts and attributes as cpu_gemm.cc
// (trans_a, trans_b; fp32 or bf16 operands, fp32 sums, the result written as fp32 or bf16), computed
// by MKL's cblas_gemm_bf16bf16f32 (bf16: AMX tiles or AVX512-BF16, whichever the CPU has) or
// cblas_sgemm (fp32). MKL is not linked at build time: GopherMklLoad(path) dlopens the libmkl_rt
// that the Python side found (the `mkl` wheel, or GOPHER_JAX_MKL_LIBRARY) and looks up those
// functions, so this library builds on any host and works only where MKL is installed.
//
// MKL runs sequentially (its threading layer is set to SEQUENTIAL at load, so it starts no OpenMP
// thread team that would spin beside XLA's own threads), and the call splits C into row or column
// blocks that GOPHER_JAX_GEMM_THREADS threads take one by one, as the other kernels do. A bf16 result is summed into a
// per-thread fp32 block of at most kBlockRows rows (it stays in L2) and rounded to bf16 from there.
//
// Every block multiplies by the same shared operand (all of op(B) for row blocks, all of op(A) for
// column blocks), and a plain MKL call repacks it for each block: 8-16 times per GEMM here. So the
// shared operand is packed once (cblas_*_pack, MKL's own AMX/AVX-512 layout) and the blocks call
// cblas_*_compute on it; see use_packed() for when that pays.
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "simd_math.h"
#include "xent_row.h"
#include "gemm_ffi.h"

namespace ffi = xla::ffi;

namespace {

// CBLAS constants and the two signatures (mkl_cblas.h; MKL_INT is 32-bit in mkl_rt's default LP64 interface).
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int kThreadingSequential = 1;  // MKL_THREADING_SEQUENTIAL
using GemmBf16Fn = void (*)(int, int, int, int, int, int, float, const uint16_t*, int, const uint16_t*, int, float,
                            float*, int);
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                         int);
// The pack-once API (MKL 2019+ for sgemm, 2020+ for bf16): size of a packed operand in bytes, pack,
// and compute with either operand given as packed (trans = kPacked).
constexpr int kPacked = 151, kPackA = 161, kPackB = 162;  // CblasPacked, CblasAMatrix, CblasBMatrix
using PackSizeFn = size_t (*)(int, int, int, int);
using PackBf16Fn = void (*)(int, int, int, int, int, int, const uint16_t*, int, uint16_t*);
using ComputeBf16Fn = void (*)(int, int, int, int, int, int, float, const uint16_t*, int, const uint16_t*, int, float,
                               float*, int);
using PackF32Fn = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
using ComputeF32Fn = void (*)(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int);
using SetLayerFn = int (*)(int);
using VersionFn = void (*)(char*, int);

GemmBf16Fn gemm_bf16 = nullptr;
SgemmFn sgemm = nullptr;
PackSizeFn pack_size_bf16 = nullptr, pack_size_f32 = nullptr;  // all pack-once pointers are set, or none
PackBf16Fn pack_bf16 = nullptr;
ComputeBf16Fn compute_bf16 = nullptr;
PackF32Fn pack_f32 = nullptr;
ComputeF32Fn compute_f32 = nullptr;
char version_text[256] = "";

constexpr int64_t kBlockRows = 256;   // rows of a bf16 result summed in fp32 at a time (per thread)
constexpr int64_t kMinBlockCols = 64;  // a column split never goes narrower than this

// The operand every block of one GEMM shares, packed once: op(B) when C is split into row blocks,
// op(A) when into column blocks.
enum class Packed { kNone, kA, kB };

// One block of C: rows [i0, i0 + m) x columns [j0, j0 + n) of op(A) @ op(B), written to c (ldc) as O.
// With which != kNone, `packed` holds that whole operand in MKL's packed layout (then i0 = 0 and
// m = M for kA, j0 = 0 and n = N for kB).
template <typename T, typename O>
void block(const T* a, int64_t lda, bool ta, const T* b, int64_t ldb, bool tb, O* c, int64_t ldc, int64_t i0,
           int64_t m, int64_t j0, int64_t n, int64_t K, Packed which, const T* packed,
           std::vector<float>& scratch) {
  // op(A) rows i0.. start at row i0 of A, or (transposed) at column i0 of A; op(B) columns likewise.
  const T* ap = ta ? a + i0 : a + i0 * lda;
  const T* bp = which == Packed::kB ? packed : tb ? b + j0 * ldb : b + j0;
  const int opa = which == Packed::kA ? kPacked : ta ? kTrans : kNoTrans;
  const int opb = which == Packed::kB ? kPacked : tb ? kTrans : kNoTrans;
  const int in = static_cast<int>(n), ik = static_cast<int>(K), ia = static_cast<int>(lda), ib = static_cast<int>(ldb);
  auto call = [&](const T* ablock, int rows, float* out, int64_t ldo) {
    const int io = static_cast<int>(ldo);
    if (which == Packed::kA) ablock = packed;
    if constexpr (std::is_same_v<T, float>) {  // fp32 operands are never packed here (use_packed)
      sgemm(kRowMajor, opa, opb, rows, in, ik, 1.f, ablock, ia, bp, ib, 0.f, out, io);
    } else {
      if (which != Packed::kNone)
        compute_bf16(kRowMajor, opa, opb, rows, in, ik, 1.f, ablock, ia, bp, ib, 0.f, out, io);
      else gemm_bf16(kRowMajor, opa, opb, rows, in, ik, 1.f, ablock, ia, bp, ib, 0.f, out, io);
    }
  };
  if constexpr (std::is_same_v<O, float>) {
    call(ap, static_cast<int>(m), c + i0 * ldc + j0, ldc);
  } else {
    // A packed op(A) cannot be cut into row slices, so use_packed() never packs A for a bf16 result.
    scratch.resize(static_cast<size_t>(std::min(m, kBlockRows) * n));
    for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {
      const int64_t rows = std::min(kBlockRows, m - r0);
      call(ta ? ap + r0 : ap + r0 * lda, static_cast<int>(rows), scratch.data(), n);
      for (int64_t r = 0; r < rows; ++r) row_to_bf16(scratch.data() + r * n, c + (i0 + r0 + r) * ldc + j0, n);
    }
  }
}

// Splits C into row blocks when it has at least as many rows as columns, else into column blocks,
// kItemsPerThread per thread, which the threads take one at a time: XLA runs other ops beside a
// custom call, so a thread that shares its core finishes late, and a fixed half per thread would
// leave the other waiting.
constexpr int64_t kItemsPerThread = 4;

// Which operand to pack once for a GEMM split into row blocks (by_rows) or column blocks. Measured
// with 2 threads x 4 blocks on a Xeon with AMX (bf16, GFLOP/s, repacking per block -> packed once):
// row splits gain everywhere (4096x2048x512 1,100 -> 1,294; 4096x512x32000 1,041 -> 1,308); a
// column split gains when the packed op(A) is deep (512x2048x4096: 879 -> 1,057) and loses when it
// is wide and shallow (the output head's 4096x32000x512: 866 -> 755), whose blocks MKL packs best
// itself. A bf16 result is summed in row slices, which a packed op(A) cannot give. fp32 operands
// are not packed: cblas_sgemm_compute on a packed op(B) made the tiny model's fp32 step slower
// (README command 1: 4,764 -> 4,090-4,462 tokens/s), and a packed op(A) gave wrong sums in column
// blocks narrower than the packed call's N (tests/kernels/test_cpu_gemm.py caught it).
template <typename T, typename O>
Packed use_packed(bool by_rows, int64_t M, int64_t K) {
  if (compute_bf16 == nullptr || !std::is_same_v<T, uint16_t>) return Packed::kNone;
  if (by_rows) return Packed::kB;
  return std::is_same_v<O, float> && K >= M ? Packed::kA : Packed::kNone;
}

// A caller thread's packed-operand buffer, kept between calls (a fresh one would page-fault in
// every call) and grown to the largest operand it has packed.
template <typename T>
T* packed_buffer(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (buffer.bytes < bytes) {
    std::free(buffer.data);
    buffer.bytes = (bytes + 63) / 64 * 64;
    buffer.data = std::aligned_alloc(64, buffer.bytes);
  }
  return static_cast<T*>(buffer.data);
}

// op(src) packed whole as GEMM operand `id` (kPackA / kPackB) of an M x N x K product, into this
// thread's packed buffer; returns it.
template <typename T>
T* pack_operand(int id, bool trans, int64_t M, int64_t N, int64_t K, const T* src, int64_t ld) {
  const int im = static_cast<int>(M), in = static_cast<int>(N), ik = static_cast<int>(K);
  const int op = trans ? kTrans : kNoTrans, ild = static_cast<int>(ld);
  T* packed;
  if constexpr (std::is_same_v<T, float>) {
    packed = packed_buffer<T>(pack_size_f32(id, im, in, ik));
    pack_f32(kRowMajor, id, op, im, in, ik, 1.f, src, ild, packed);
  } else {
    packed = packed_buffer<T>(pack_size_bf16(id, im, in, ik));
    pack_bf16(kRowMajor, id, op, im, in, ik, src, ild, packed);
  }
  return packed;
}

template <typename T, typename O>
void gemm(const T* a, int64_t lda, bool ta, const T* b, int64_t ldb, bool tb, O* c, int64_t M, int64_t N,
          int64_t K) {
  const bool by_rows = M >= N;
  const int64_t extent = by_rows ? M : N, granule = by_rows ? 16 : kMinBlockCols;
  const int64_t units = (extent + granule - 1) / granule;
  const int threads = threads_from_env("GOPHER_JAX_GEMM_THREADS");  // for_each_item uses at most `items`
  const int64_t items = std::min<int64_t>(units, threads * kItemsPerThread);
  const Packed which = items > 1 ? use_packed<T, O>(by_rows, M, K) : Packed::kNone;
  T* packed = nullptr;
  if (which == Packed::kA) packed = pack_operand(kPackA, ta, M, N, K, a, lda);
  if (which == Packed::kB) packed = pack_operand(kPackB, tb, M, N, K, b, ldb);
  for_each_item(static_cast<int>(items), threads, [&](int item) {
    thread_local std::vector<float> scratch;
    // Item boundaries on multiples of `granule`, the last item taking the rest.
    const int64_t lo = units * item / items * granule;
    const int64_t hi = item + 1 == items ? extent : units * (item + 1) / items * granule;
    if (by_rows) block(a, lda, ta, b, ldb, tb, c, N, lo, hi - lo, 0, N, K, which, packed, scratch);
    else block(a, lda, ta, b, ldb, tb, c, N, 0, M, lo, hi - lo, K, which, packed, scratch);
  });
}

template <typename O>
void gemm_typed(ffi::AnyBuffer a, ffi::AnyBuffer b, O* out, int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
  const int64_t lda = a.dimensions()[1], ldb = b.dimensions()[1];
  if (a.element_type() == ffi::F32)
    gemm(static_cast<const float*>(a.untyped_data()), lda, ta, static_cast<const float*>(b.untyped_data()), ldb, tb,
         out, M, N, K);
  else
    gemm(static_cast<const uint16_t*>(a.untyped_data()), lda, ta, static_cast<const uint16_t*>(b.untyped_data()),
         ldb, tb, out, M, N, K);
}

ffi::Error MklGemmImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> c, int64_t trans_a,
                       int64_t trans_b) {
  if (gemm_bf16 == nullptr || sgemm == nullptr) return ffi::Error::Internal("MKL is not loaded (GopherMklLoad)");
  // MKL_INT is 32-bit: every dimension and leading dimension must fit.
  return gemm_call(a, b, c, trans_a, trans_b, 0x7fffffff, [&](auto* out, int64_t M, int64_t N, int64_t K) {
    gemm_typed(a, b, out, M, N, K, trans_a != 0, trans_b != 0);
  });
}

// The output head and its softmax cross-entropy, chunk by chunk: for each block of kHeadRows token
// rows, logits = x[rows] @ op(w) into a per-thread fp32 scratch (packed op(w) shared by all blocks,
// as in gemm()), then xent_row() on each row writes the loss, lse and the logit gradient d (fp32 or
// bf16). The [tokens, vocab] fp32 logits never exist: unchunked, they were a fresh 524 MB buffer
// per gopher_44m step, written by the GEMM and read back by the loss.
// 128 x 32000 fp32 logits = 16 MB of scratch per thread. gopher_44m bf16 step (2-core Xeon, AMX):
// 32 rows 2.20-2.23 s, 64 rows 2.17, 128 rows 2.15, 256 rows 2.23.
constexpr int64_t kHeadRows = 128;

template <typename T, typename O>
void head_xent(const T* x, int64_t T_rows, int64_t D, const T* w, int64_t ldw, bool tw, int64_t V,
               const int32_t* targets, const float* weights, float z, O* d, float* loss, float* lse) {
  const int in = static_cast<int>(V), ik = static_cast<int>(D), ib = static_cast<int>(ldw);
  const T* packed = pack_operand(kPackB, tw, T_rows, V, D, w, ldw);
  const int64_t chunks = (T_rows + kHeadRows - 1) / kHeadRows;
  for_each_item(static_cast<int>(chunks), threads_from_env("GOPHER_JAX_GEMM_THREADS"), [&](int chunk) {
    thread_local std::vector<float> logits, e;
    const int64_t r0 = chunk * kHeadRows, rows = std::min(kHeadRows, T_rows - r0);
    logits.resize(static_cast<size_t>(kHeadRows * V));
    e.resize(static_cast<size_t>(V) + 16);
    const int ir = static_cast<int>(rows);
    if constexpr (std::is_same_v<T, float>)
      compute_f32(kRowMajor, kNoTrans, kPacked, ir, in, ik, x + r0 * D, ik, packed, ib, 0.f, logits.data(), in);
    else
      compute_bf16(kRowMajor, kNoTrans, kPacked, ir, in, ik, 1.f, x + r0 * D, ik, packed, ib, 0.f, logits.data(), in);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r0 + r, y = std::min<int64_t>(std::max<int64_t>(targets[t], 0), V - 1);
      lse[t] = xent_row(logits.data() + r * V, V, y, weights[t], z, e.data(), d + t * V, loss + t);
    }
  });
}

ffi::Error MklHeadXentImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Buffer<ffi::S32> targets,
                           ffi::Buffer<ffi::F32> weights, ffi::Result<ffi::AnyBuffer> d,
                           ffi::Result<ffi::Buffer<ffi::F32>> loss, ffi::Result<ffi::Buffer<ffi::F32>> lse,
                           int64_t trans_w, float z_loss) {
  if (compute_bf16 == nullptr) return ffi::Error::Internal("MKL's pack-once GEMM is not loaded (GopherMklLoad)");
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2) return ffi::Error::InvalidArgument("head_xent: x and w must be 2-D");
  const int64_t T = xd[0], D = xd[1], V = trans_w ? wd[0] : wd[1];
  if ((trans_w ? wd[1] : wd[0]) != D) return ffi::Error::InvalidArgument("head_xent: x and w differ in d_model");
  if (x.element_type() != w.element_type() || (x.element_type() != ffi::F32 && x.element_type() != ffi::BF16))
    return ffi::Error::InvalidArgument("head_xent: x and w must both be float32 or both bfloat16");
  if (targets.element_count() != T || weights.element_count() != T)
    return ffi::Error::InvalidArgument("head_xent: targets and weights need one entry per row of x");
  if (T > 0x7fffffff || D > 0x7fffffff || V > 0x7fffffff)
    return ffi::Error::InvalidArgument("head_xent: dimensions exceed MKL's 32-bit integers");
  if (T == 0) return ffi::Error::Success();
  if (V == 0 || D == 0) return ffi::Error::InvalidArgument("head_xent needs d_model > 0 and vocab > 0");
  const int64_t ldw = wd[1];
  auto run = [&](auto* xp, auto* wp) {
    if (d->element_type() == ffi::F32)
      head_xent(xp, T, D, wp, ldw, trans_w != 0, V, targets.typed_data(), weights.typed_data(), z_loss,
                static_cast<float*>(d->untyped_data()), loss->typed_data(), lse->typed_data());
    else
      head_xent(xp, T, D, wp, ldw, trans_w != 0, V, targets.typed_data(), weights.typed_data(), z_loss,
                static_cast<uint16_t*>(d->untyped_data()), loss->typed_data(), lse->typed_data());
  };
  if (d->element_type() != ffi::F32 && d->element_type() != ffi::BF16)
    return ffi::Error::InvalidArgument("head_xent writes its logit gradient as float32 or bfloat16");
  if (x.element_type() == ffi::F32)
    run(static_cast<const float*>(x.untyped_data()), static_cast<const float*>(w.untyped_data()));
  else
    run(static_cast<const uint16_t*>(x.untyped_data()), static_cast<const uint16_t*>(w.untyped_data()));
  return ffi::Error::Success();
}

}  // namespace

// Loads MKL from `path` (libmkl_rt): 1 on success, else 0 (GopherMklError says why).
static char load_error[512] = "";
extern "C" int GopherMklLoad(const char* path) {
  void* lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::snprintf(load_error, sizeof(load_error), "dlopen(%s): %s", path, dlerror());
    return 0;
  }
  auto layer = reinterpret_cast<SetLayerFn>(dlsym(lib, "MKL_Set_Threading_Layer"));
  auto bf16 = reinterpret_cast<GemmBf16Fn>(dlsym(lib, "cblas_gemm_bf16bf16f32"));
  auto sg = reinterpret_cast<SgemmFn>(dlsym(lib, "cblas_sgemm"));
  auto version = reinterpret_cast<VersionFn>(dlsym(lib, "MKL_Get_Version_String"));
  if (layer == nullptr || bf16 == nullptr || sg == nullptr) {
    std::snprintf(load_error, sizeof(load_error), "%s lacks MKL_Set_Threading_Layer, cblas_gemm_bf16bf16f32 or "
                  "cblas_sgemm (MKL 2020 or newer has them)", path);
    return 0;
  }
  // The pack-once API is optional: without it every block calls the plain GEMM.
  auto psb = reinterpret_cast<PackSizeFn>(dlsym(lib, "cblas_gemm_bf16bf16f32_pack_get_size"));
  auto pb = reinterpret_cast<PackBf16Fn>(dlsym(lib, "cblas_gemm_bf16bf16f32_pack"));
  auto cb = reinterpret_cast<ComputeBf16Fn>(dlsym(lib, "cblas_gemm_bf16bf16f32_compute"));
  auto psf = reinterpret_cast<PackSizeFn>(dlsym(lib, "cblas_sgemm_pack_get_size"));
  auto pf = reinterpret_cast<PackF32Fn>(dlsym(lib, "cblas_sgemm_pack"));
  auto cf = reinterpret_cast<ComputeF32Fn>(dlsym(lib, "cblas_sgemm_compute"));
  if (psb && pb && cb && psf && pf && cf) {
    pack_size_bf16 = psb, pack_bf16 = pb, pack_size_f32 = psf, pack_f32 = pf, compute_f32 = cf;
    compute_bf16 = cb;  // last: use_packed() reads it as "all are set"
  }
  layer(kThreadingSequential);
  if (version != nullptr) version(version_text, sizeof(version_text));
  gemm_bf16 = bf16;
  sgemm = sg;
  return 1;
}

extern "C" const char* GopherMklError() { return load_error; }
extern "C" const char* GopherMklVersion() { return version_text; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherMklGemm, MklGemmImpl, gemm_binding());

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherMklHeadXent, MklHeadXentImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()         // x [T, D]
                                  .Arg<ffi::AnyBuffer>()         // w [V, D] (trans_w) or [D, V]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // targets [T]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // weights [T]
                                  .Ret<ffi::AnyBuffer>()         // d [T, V], fp32 or bf16
                                  .Ret<ffi::Buffer<ffi::F32>>()  // loss [T]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse [T]
                                  .Attr<int64_t>("trans_w")
                                  .Attr<float>("z_loss"));
