// Helpers shared by the CPU kernels (cpu_attention.cc, cpu_gemm.cc, cpu_xent.cc, mkl_gemm.cc):
// portable 16-lane fp32 vectors (GCC/Clang vector extensions: AVX-512 registers under -march=native,
// plain loops elsewhere), horizontal reductions, bf16 rounding, a vectorised exp, the threads a
// kernel call uses and a loop handing work items to them. Header-only; kernels/build.py puts every
// local header a source includes into the build's cache key.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

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

// ---- bf16 -----------------------------------------------------------------------------------
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
// The bf16 bit patterns of 16 floats (round to nearest even, NaN stays NaN), one per 32-bit lane.
inline v16u bf16_bits(v16 x) {
  v16u u;
  __builtin_memcpy(&u, &x, sizeof(u));
  v16u r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : r;
}
// Row of n floats -> n bf16 (16 at a time, then one by one).
inline void row_to_bf16(const float* x, uint16_t* y, int64_t n) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    v16h h = __builtin_convertvector(bf16_bits(vload(x + j)), v16h);
    __builtin_memcpy(y + j, &h, sizeof(h));
  }
  for (; j < n; ++j) y[j] = f32_to_bf16(x[j]);
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

// x rounded up to a multiple of m (m > 0).
inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

// Threads for one kernel call: the positive integer in environment variable `var`, else every
// hardware thread.
inline int threads_from_env(const char* var) {
  if (const char* env = std::getenv(var)) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

// Runs fn(item) for item in [0, n) on up to `threads` threads (the caller is one of them), each
// thread taking the next item as it finishes one.
template <typename F>
void for_each_item(int n, int threads, F fn) {
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

}  // namespace
