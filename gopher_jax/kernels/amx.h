// AMX (Advanced Matrix Extensions) support shared by the CPU kernels: whether the process may use
// the tiles, the one tile shape they use, and the 32-bit-word transpose their operand packing needs.
//
// AMX-BF16 (Intel Sapphire Rapids and later) multiplies bf16 tiles with fp32 sums: TDPBF16PS takes
// an A tile of 16 rows x 32 bf16 (row-major, K contiguous), a B tile of 16 K-pairs x 16 columns
// (each pair's two bf16 side by side: the "pairs" layout the AVX512-BF16 kernels already use) and
// accumulates a 16 x 16 fp32 C tile. Built with -march=native, the code below exists only where
// the compiler targets AMX-BF16 (GJ_AMX); at run time Linux must also grant the process the tile
// state (arch_prctl, kernel >= 5.16), and GOPHER_JAX_AMX=0 switches AMX off for A/B runs.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && !defined(GJ_NO_AMX)
#define GJ_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {

#if defined(GJ_AMX)
// Whether this process may use AMX now (asked once per process; the grant is process-wide).
inline bool amx_granted() {
  static const bool granted = [] {
    const char* env = std::getenv("GOPHER_JAX_AMX");
    if (env && std::strcmp(env, "0") == 0) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

// Loads the one tile configuration both kernels use (all 8 tiles 16 rows x 64 bytes: 16 fp32 or
// 32 bf16 per row) on this thread; the configuration is per-thread state.
inline void amx_configure_tiles() {
  struct alignas(64) {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
  } cfg = {};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
}

// Tiles configured for as long as it lives, released after, so the thread (XLA's, for the caller)
// leaves no AMX state behind to be saved at every context switch.
struct AmxTileScope {
  AmxTileScope() { amx_configure_tiles(); }
  ~AmxTileScope() { _tile_release(); }
};

// 16 x 16 transpose of 32-bit words: r[i][j] -> r[j][i] (unpack 32, unpack 64, two 128-bit lane shuffles).
inline void transpose16x16_epi32(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  __m512i u[16];  // u[4g + c], 128-bit lane L: rows 4g..4g+3 of column 4L + c
  for (int g = 0; g < 4; ++g) {
    u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // column 4L + c = lanes L of u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i x0 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i x1 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512i y0 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512i y1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
    r[c] = _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(2, 0, 2, 0));
    r[4 + c] = _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(2, 0, 2, 0));
    r[8 + c] = _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(3, 1, 3, 1));
    r[12 + c] = _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(3, 1, 3, 1));
  }
}
#else
inline bool amx_granted() { return false; }
struct AmxTileScope {};
#endif

}  // namespace
