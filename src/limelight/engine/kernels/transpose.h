// 16 x 16 transposes of 32-bit elements in AVX-512 registers, for the tile kernels'
// operand layouts (a bfloat16 pair is one element).

#pragma once

#include <immintrin.h>

#include <cstdint>

namespace limelight {

// rows[i] = row i of a 16 x 16 matrix of 32-bit elements; afterwards row j holds column
// kColumn.of[j] in row order (the network interleaves).
inline void transpose16(__m512i (&rows)[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
  }
  for (int i = 0; i < 16; i += 4)
    for (int j = 0; j < 2; ++j) {
      b[i + j] = _mm512_unpacklo_epi64(a[i + j], a[i + j + 2]);
      b[i + j + 2] = _mm512_unpackhi_epi64(a[i + j], a[i + j + 2]);
    }
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 4; ++j) {
      a[i + j] = _mm512_shuffle_i32x4(b[i + j], b[i + j + 4], 0x88);
      a[i + j + 4] = _mm512_shuffle_i32x4(b[i + j], b[i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    rows[j] = _mm512_shuffle_i32x4(a[j], a[j + 8], 0x88);
    rows[j + 8] = _mm512_shuffle_i32x4(a[j], a[j + 8], 0xdd);
  }
}

struct ColumnOrder {  // worked out once by transposing the elements' indices
  int of[16];
  ColumnOrder() {
    alignas(64) int32_t cells[16][16];
    __m512i rows[16];
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 16; ++j) cells[i][j] = i * 16 + j;
      rows[i] = _mm512_load_si512(cells[i]);
    }
    transpose16(rows);
    for (int i = 0; i < 16; ++i) {
      _mm512_store_si512(cells[i], rows[i]);
      of[i] = cells[i][0];  // row i starts with element (0, its column)
    }
  }
};
inline const ColumnOrder kColumn;

// 16 rows of 32 bits (`stride` elements apart) transposed into out [16, 16].
inline void transpose_into(const int32_t* rows_at, int64_t stride, int64_t count, int32_t* out) {
  __m512i rows[16];
  for (int64_t i = 0; i < 16; ++i)
    rows[i] = i < count ? _mm512_loadu_si512(rows_at + i * stride) : _mm512_setzero_si512();
  transpose16(rows);
  for (int j = 0; j < 16; ++j) _mm512_storeu_si512(out + kColumn.of[j] * 16, rows[j]);
}

}  // namespace limelight
