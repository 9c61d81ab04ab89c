// What the AMX kernels share: whether this process may use the tile registers, and the
// tile configuration they load.  LIMELIGHT_AMX is 1 where the build targets a CPU with
// AMX (Intel Xeon since Sapphire Rapids, which also has AVX-512's bfloat16 conversions)
// on Linux.

#pragma once

#include <cstdint>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__) && \
    defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AMX_BF16__) && defined(__linux__)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define LIMELIGHT_AMX 1
#else
#define LIMELIGHT_AMX 0
#endif

namespace limelight {

#if LIMELIGHT_AMX

// Linux lends a process the tile registers' state only when asked (arch_prctl); asked once.
inline bool amx_usable() {
  static const bool usable = [] {
    constexpr long kRequestPermission = 0x1023, kTileData = 18;  // ARCH_REQ_XCOMP_PERM, XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return usable;
}

// The operand of _tile_loadconfig: palette 1, then each tile's bytes a row and rows.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};

  void shape(int tile, int64_t tile_rows, int64_t bytes_a_row) {
    rows[tile] = static_cast<uint8_t>(tile_rows);
    colsb[tile] = static_cast<uint16_t>(bytes_a_row);
  }
};

// Every one of the 8 tiles 16 rows of 64 bytes: what the bfloat16 kernels use.
inline void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) config.shape(t, 16, 64);
  _tile_loadconfig(&config);
}

// The index vector that interleaves the two halves of 32 16-bit elements, [a0, b0, a1, b1,
// ...]: two rows of bfloat16 values as a tile operand holds them, a pair to a 32-bit lane.
inline __m512i pair_interleave() {
  alignas(64) static const uint16_t kIndex[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_load_si512(kIndex);
}

#else

inline bool amx_usable() { return false; }

#endif

}  // namespace limelight
