// Softmax cross-entropy over the output head's fp32 logits, with the logit gradient written in the
// same pass (called through the XLA FFI; see cpu_xent.py and ops/head_cross_entropy.py).
//
// For each token row t (logits l[t, :V], target y, weight w, z-loss coefficient z):
//   lse[t]  = log sum_j exp(l[t, j])
//   loss[t] = w * (lse - l[t, y] + z * lse^2)
//   d[t, j] = w * (softmax(l[t])_j * (1 + 2 z lse) - [j == y])    (the gradient of loss[t] in l)
// d is written in the caller's dtype (fp32, or bf16 rounded to nearest even: what the head's
// backward GEMMs read), so the gradient never exists as an fp32 [tokens, vocab] array and the
// logits need not be kept for the backward. Rows with w = 0 get d = 0 and loss 0. y outside
// [0, V) is clamped (the unfused path's gather clamps too).
//
// Per row: one pass for the max, one for exp(l - max) into a per-thread scratch row (and its sum),
// one that scales the scratch into d. Rows are split over the threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "simd_math.h"
#include "xent_row.h"

namespace ffi = xla::ffi;

namespace {

template <typename O>
void xent(const float* logits, const int32_t* targets, const float* weights, int64_t T, int64_t V, float z,
          O* d, float* loss, float* lse) {
  constexpr int64_t kRows = 8;  // rows per work item
  for_each_item(static_cast<int>((T + kRows - 1) / kRows), threads_from_env("GOPHER_JAX_GEMM_THREADS"), [&](int item) {
    thread_local std::vector<float> e;
    e.resize(static_cast<size_t>(V) + 16);
    for (int64_t t = item * kRows; t < std::min(T, (item + 1) * kRows); ++t) {
      const int64_t y = std::min<int64_t>(std::max<int64_t>(targets[t], 0), V - 1);
      lse[t] = xent_row(logits + t * V, V, y, weights[t], z, e.data(), d + t * V, loss + t);
    }
  });
}

ffi::Error XentImpl(ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::S32> targets, ffi::Buffer<ffi::F32> weights,
                    ffi::Result<ffi::AnyBuffer> d, ffi::Result<ffi::Buffer<ffi::F32>> loss,
                    ffi::Result<ffi::Buffer<ffi::F32>> lse, float z_loss) {
  auto dims = logits.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("xent logits must be [tokens, vocab]");
  const int64_t T = dims[0], V = dims[1];
  if (targets.element_count() != T || weights.element_count() != T)
    return ffi::Error::InvalidArgument("xent targets and weights must have one entry per logits row");
  if (T == 0) return ffi::Error::Success();
  if (V == 0) return ffi::Error::InvalidArgument("xent needs at least one logit per row");
  if (d->element_type() == ffi::F32) {
    xent(logits.typed_data(), targets.typed_data(), weights.typed_data(), T, V, z_loss,
         static_cast<float*>(d->untyped_data()), loss->typed_data(), lse->typed_data());
  } else if (d->element_type() == ffi::BF16) {
    xent(logits.typed_data(), targets.typed_data(), weights.typed_data(), T, V, z_loss,
         static_cast<uint16_t*>(d->untyped_data()), loss->typed_data(), lse->typed_data());
  } else {
    return ffi::Error::InvalidArgument("xent writes its logit gradient as float32 or bfloat16");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GopherXent, XentImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // logits [T, V]
                                  .Arg<ffi::Buffer<ffi::S32>>()  // targets [T]
                                  .Arg<ffi::Buffer<ffi::F32>>()  // weights [T]
                                  .Ret<ffi::AnyBuffer>()         // d [T, V], fp32 or bf16
                                  .Ret<ffi::Buffer<ffi::F32>>()  // loss [T]
                                  .Ret<ffi::Buffer<ffi::F32>>()  // lse [T]
                                  .Attr<float>("z_loss"));
