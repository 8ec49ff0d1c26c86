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

inline void put(float* d, int64_t j, float v) { d[j] = v; }
inline void put(uint16_t* d, int64_t j, float v) { d[j] = f32_to_bf16(v); }
inline void put16(float* d, v16 a) { vstore(d, a); }
inline void put16(uint16_t* d, v16 a) {
  const v16h h = __builtin_convertvector(bf16_bits(a), v16h);
  __builtin_memcpy(d, &h, sizeof(h));
}

// d[j] = e[j] * scale for j < V, except d[y] = dy: the scaling and the store in one pass over e.
// (Streaming stores were slower here: d's pages are fresh each step, and zeroing them on the page
// fault has just brought their lines into the cache.)
template <typename O>
void store_scaled_row(const float* e, float scale, int64_t y, float dy, O* d, int64_t V) {
  const v16 vscale = vsplat(scale);
  int64_t j = 0;
  for (; j + 16 <= V; j += 16) put16(d + j, vload(e + j) * vscale);
  for (; j < V; ++j) put(d, j, e[j] * scale);
  put(d, y, dy);
}

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
  store_scaled_row(e, scale, y, e[y] * scale - w, d_row, V);
  return lse;
}

}  // namespace
