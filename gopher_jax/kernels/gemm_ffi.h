// The FFI entry shared by the GEMM kernels (cpu_gemm.cc, mkl_gemm.cc): C = op(a) @ op(b) for 2-D a, b of
// one dtype (float32 or bfloat16), op transposing with trans_a / trans_b, C written as float32 or bfloat16.
#pragma once

#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

// Checks the operands and calls run(out, M, N, K) with out a float* or uint16_t* (bf16) C; C is zeros
// when K == 0 and untouched when it is empty. Dimensions above max_dim are refused (MKL's 32-bit ints).
template <typename Run>
xla::ffi::Error gemm_call(xla::ffi::AnyBuffer a, xla::ffi::AnyBuffer b, xla::ffi::Result<xla::ffi::AnyBuffer> c,
                          int64_t trans_a, int64_t trans_b, int64_t max_dim, Run run) {
  namespace ffi = xla::ffi;
  auto ad = a.dimensions(), bd = b.dimensions();
  if (ad.size() != 2 || bd.size() != 2) return ffi::Error::InvalidArgument("gemm operands must be 2-D");
  const int64_t M = trans_a ? ad[1] : ad[0], K = trans_a ? ad[0] : ad[1];
  const int64_t Kb = trans_b ? bd[1] : bd[0], N = trans_b ? bd[0] : bd[1];
  if (K != Kb) return ffi::Error::InvalidArgument("gemm contracting dimensions differ");
  if (a.element_type() != b.element_type())
    return ffi::Error::InvalidArgument("gemm operands must have the same dtype");
  if (a.element_type() != ffi::F32 && a.element_type() != ffi::BF16)
    return ffi::Error::InvalidArgument("gemm supports float32 and bfloat16 operands");
  if (M > max_dim || N > max_dim || K > max_dim || ad[1] > max_dim || bd[1] > max_dim)
    return ffi::Error::InvalidArgument("gemm dimensions exceed this kernel's integers");
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (c->element_type() == ffi::F32) {
    float* out = static_cast<float*>(c->untyped_data());
    if (K == 0) std::memset(out, 0, sizeof(float) * M * N);
    else run(out, M, N, K);
  } else if (c->element_type() == ffi::BF16) {
    uint16_t* out = static_cast<uint16_t*>(c->untyped_data());
    if (K == 0) std::memset(out, 0, sizeof(uint16_t) * M * N);
    else run(out, M, N, K);
  } else {
    return ffi::Error::InvalidArgument("gemm writes float32 or bfloat16");
  }
  return ffi::Error::Success();
}

// The FFI binding of a gemm_call handler: arguments a, b; result c; attributes trans_a, trans_b.
inline auto gemm_binding() {
  return xla::ffi::Ffi::Bind()
      .Arg<xla::ffi::AnyBuffer>()   // a
      .Arg<xla::ffi::AnyBuffer>()   // b
      .Ret<xla::ffi::AnyBuffer>()   // c = op(a) @ op(b), fp32 or bf16
      .Attr<int64_t>("trans_a")
      .Attr<int64_t>("trans_b");
}
