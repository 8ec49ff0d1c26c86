// One softmax cross-entropy row with its logit gradient: the row function of cpu_xent.cc, shared
// with the MKL kernel that computes the output head's logits and this loss chunk by chunk
// (mkl_gemm.cc, GopherMklHeadXent). Include simd_math.h first.
//
// For a row of logits l[:V], target y, weight w, z-loss coefficient z:
//   lse     = log sum_j exp(l[j])
//   loss    = w * (lse - l[y] + z * lse^2)
//   d[j]    = w * (softmax(l)_j * (1 + 2 z lse) - [j == y])    (the gradient of loss in l)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline void store_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, sizeof(float) * n); }
inline void store_row(const float* src, uint16_t* dst, int64_t n) { row_to_bf16(src, dst, n); }

// One row: returns lse; fills d_row (in O) and the scratch row e (V floats).
template <typename O>
float xent_row(const float* l, int64_t V, int64_t y, float w, float z, float* e, O* d_row, float* loss) {
  const int64_t V16 = V / 16 * 16;
  v16 vm = vsplat(-INFINITY);
  for (int64_t j = 0; j < V16; j += 16) {
    const v16 x = vload(l + j);
    vm = x > vm ? x : vm;
  }
  float m = V16 ? hmax(vm) : -INFINITY;
  for (int64_t j = V16; j < V; ++j) m = std::max(m, l[j]);
  if (!(m > -INFINITY)) m = 0.f;  // all -inf (or V == 0): keeps exp finite; the row's lse is -inf/NaN anyway
  v16 vs = vsplat(0.f);
  const v16 vmax = vsplat(m);
  for (int64_t j = 0; j < V16; j += 16) {
    const v16 p = vexp(vload(l + j) - vmax);
    vstore(e + j, p);
    vs += p;
  }
  float s = hsum(vs);
  for (int64_t j = V16; j < V; ++j) {
    e[j] = std::exp(l[j] - m);
    s += e[j];
  }
  const float lse = m + std::log(s);
  const float target = l[y];
  *loss = w == 0.f ? 0.f : w * (lse - target + z * lse * lse);
  // d = e * scale - w [j == y], with scale = w (1 + 2 z lse) / s
  const float scale = w == 0.f ? 0.f : w * (1.f + 2.f * z * lse) / s;
  const v16 vscale = vsplat(scale);
  for (int64_t j = 0; j < V16; j += 16) vstore(e + j, vload(e + j) * vscale);
  for (int64_t j = V16; j < V; ++j) e[j] *= scale;
  e[y] -= w;
  store_row(e, d_row, V);
  return lse;
}

}  // namespace
