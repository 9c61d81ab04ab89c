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

#else

inline bool amx_usable() { return false; }

#endif

}  // namespace limelight
