// bfloat16 matmul for prompt steps on CPUs with AMX: y[M, N] = x[M, K] · W[N, K]ᵀ, where
// each output row is the same bits whatever the other rows are and however many.
// Registered as limelight_kernels::tile_matmul; layers/dense.py packs the weights and says
// why it exists.
//
// oneDNN (PyTorch's bfloat16 matmul) picks its blocking by the number of rows, so with AMX
// a row's sums are added in another order at 1, 33 or 256 rows and its bfloat16 output can
// differ in the last bit.  Then a prompt computed whole and the same prompt served from the
// prefix cache (its last token computed alone) part, and two identical greedy requests can
// answer differently.  Here every output element is one fixed chain of tile products over
// the inputs, 32 at a time in order, whatever the row count, the thread count or the
// element's place in its tile.
//
// Weights: [N / 16, K / 32, 16, 32] bfloat16: for each block of 16 output columns and each
// 32 inputs, the tile operand of _tile_dpbf16ps: row p holds inputs 2p and 2p + 1 of each
// of the 16 columns.  Rows of x are read in tiles of 16 as they lie (K values apart).

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "amx.h"
#include "convert.h"

namespace limelight {
namespace {

constexpr int64_t kTileRows = 16;  // rows of x, or input pairs of W, in a tile
constexpr int64_t kCols = 16;      // output columns in a tile of W
constexpr int64_t kDepth = 32;     // inputs a tile product adds up
constexpr int64_t kTileElements = kTileRows * kDepth;

#if LIMELIGHT_AMX

// The rows of x by tiles of 16: whole tiles in place, the last part tile from a copy with
// zero rows after it.
struct Rows {
  const c10::BFloat16* x;  // [m, k]
  const c10::BFloat16* tail;  // [16, k]: rows from whole * 16 on, then zeros
  int64_t m, k, whole, tiles;

  const c10::BFloat16* tile(int64_t t) const { return t < whole ? x + t * kTileRows * k : tail; }
};

// sums [A * 16, B * 16] = A row tiles of x (tiles t and t + 1) times B column tiles of W
// (from `w`, the next one `next` elements on), all K inputs.
// Tiles: 0-3 sums [16 rows, 16 columns] float32 (tile 2a + b: row tile a, column tile b),
// 4-5 two tiles of x's rows [16, 32 inputs], 6-7 two tiles of W [16 input pairs, 16 x 2].
template <int A, int B>
void multiply(const Rows& rows, int64_t t, const c10::BFloat16* w, int64_t next, float* sums) {
  const int64_t k = rows.k, x_stride = k * 2, sums_stride = B * kCols * 4;
  const c10::BFloat16* x0 = rows.tile(t);
  const c10::BFloat16* x1 = A == 2 ? rows.tile(t + 1) : x0;
  _tile_zero(0);
  if constexpr (B == 2) _tile_zero(1);
  if constexpr (A == 2) _tile_zero(2);
  if constexpr (A == 2 && B == 2) _tile_zero(3);
  for (int64_t at = 0; at < k; at += kDepth, w += kTileElements) {
    _tile_loadd(4, x0 + at, x_stride);
    if constexpr (A == 2) _tile_loadd(5, x1 + at, x_stride);
    _tile_loadd(6, w, 64);
    if constexpr (B == 2) _tile_loadd(7, w + next, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (B == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (A == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (A == 2 && B == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, sums, sums_stride);
  if constexpr (B == 2) _tile_stored(1, sums + kCols, sums_stride);
  if constexpr (A == 2) _tile_stored(2, sums + kTileRows * B * kCols, sums_stride);
  if constexpr (A == 2 && B == 2) _tile_stored(3, sums + kTileRows * B * kCols + kCols, sums_stride);
}

// Output columns [col, col + 16 B) of every row: y [m, n].
template <int B>
void multiply_rows(const Rows& rows, const c10::BFloat16* w, int64_t next, int64_t n,
                   int64_t col, c10::BFloat16* y) {
  alignas(64) float sums[2 * kTileRows * 2 * kCols];
  const int64_t cols = std::min<int64_t>(B * kCols, n - col);
  for (int64_t tile = 0; tile < rows.tiles; tile += 2) {
    const int64_t a = std::min<int64_t>(2, rows.tiles - tile);
    if (a == 2)
      multiply<2, B>(rows, tile, w, next, sums);
    else
      multiply<1, B>(rows, tile, w, next, sums);
    const int64_t first = tile * kTileRows, count = std::min(a * kTileRows, rows.m - first);
    for (int64_t r = 0; r < count; ++r)
      narrow(sums + r * B * kCols, y + (first + r) * n + col, cols);
  }
}

// y [m, n] = the rows times the weights' column blocks, which `blocks(block, count)` hands
// out a pair at a time: the first one's tiles, and how many elements on the second's are
// (what it returns stays valid until its next call on the same thread).
template <typename Blocks>
void run(const Rows& rows, int64_t num_blocks, int64_t n, c10::BFloat16* y, const Blocks& blocks) {
  // threads take pairs of column blocks; each pair's weights stay in cache for every row
  at::parallel_for(0, (num_blocks + 1) / 2, 1, [&](int64_t lo, int64_t hi) {
    configure_tiles();
    for (int64_t pair = lo; pair < hi; ++pair) {
      const int64_t block = 2 * pair, count = std::min<int64_t>(2, num_blocks - block);
      const auto [first, next] = blocks(block, count);
      if (count == 2)
        multiply_rows<2>(rows, first, next, n, block * kCols, y);
      else
        multiply_rows<1>(rows, first, 0, n, block * kCols, y);
    }
    _tile_release();
  });
}

// One block of 16 output columns and one group of 32 inputs in quant_matmul.cpp's layout
// (the 16 columns' fp16 scales d and offsets m, then their levels, 4 consecutive inputs a
// 32-bit lane) as a tile of bfloat16 weights w = d·q + m: row p holds inputs 2p and 2p + 1
// of each column.
template <int64_t Bits>
void dequantize_group(const uint8_t* group, c10::BFloat16* tile) {
  const __m512i interleave = pair_interleave();
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group)));
  const __m512 m =
      _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + 32)));
  const uint8_t* levels = group + 64;
  const __m512i mask = _mm512_set1_epi32(Bits == 4 ? 0x0F : 0xFF);
  for (int64_t quad = 0; quad < 8; ++quad) {  // inputs 4 quad .. 4 quad + 3
    // 4-bit levels: quads 0-3 in the low nibbles of vectors 0-3, quads 4-7 in the high
    const __m512i v = _mm512_loadu_si512(levels + (Bits == 4 ? quad % 4 : quad) * 64);
    const int shift = Bits == 4 && quad >= 4 ? 4 : 0;
    __m512 w[4];
    for (int i = 0; i < 4; ++i) {
      const __m512i q = _mm512_and_si512(_mm512_srli_epi32(v, 8 * i + shift), mask);
      w[i] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(q), m);
    }
    for (int half = 0; half < 2; ++half) {  // tile rows 2 quad and 2 quad + 1
      const __m512bh pair = _mm512_cvtne2ps_pbh(w[2 * half + 1], w[2 * half]);
      _mm512_storeu_si512(tile + (2 * quad + half) * kDepth,
                          _mm512_permutexvar_epi16(interleave, (__m512i)pair));
    }
  }
}

// The rows of x in tiles of 16, the last one completed with zero rows from a copy.
Rows tiles_of(const at::Tensor& x) {
  const int64_t m = x.size(0), k = x.size(1), whole = m / kTileRows, part = m % kTileRows;
  const c10::BFloat16* data = x.data_ptr<c10::BFloat16>();
  thread_local std::vector<c10::BFloat16> tail;  // the caller's: its workers read it
  if (part) {
    tail.assign(kTileRows * k, c10::BFloat16(0.f));
    std::copy(data + whole * kTileRows * k, data + m * k, tail.begin());
  }
  return Rows{data, tail.data(), m, k, whole, whole + (part > 0)};
}

#endif

at::Tensor tile_matmul(const at::Tensor& x, const at::Tensor& weight, int64_t n) {
  TORCH_CHECK(LIMELIGHT_AMX && amx_usable(), "tile_matmul: this CPU lends no AMX tiles");
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kBFloat16,
              "tile_matmul: x must be contiguous bfloat16 [M, K]");
  TORCH_CHECK(weight.dim() == 4 && weight.is_contiguous() &&
                  weight.scalar_type() == at::kBFloat16 && weight.size(2) == kTileRows &&
                  weight.size(3) == kDepth,
              "tile_matmul: weight must be contiguous bfloat16 [N / 16, K / 32, 16, 32]");
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(k == weight.size(1) * kDepth, "tile_matmul: x has ", k, " inputs, the weights ",
              weight.size(1) * kDepth);
  TORCH_CHECK(n > 0 && n <= weight.size(0) * kCols && n > (weight.size(0) - 1) * kCols,
              "tile_matmul: ", n, " outputs do not fit ", weight.size(0), " blocks of 16");
  at::Tensor y = at::empty({m, n}, x.options());
  if (m == 0) return y;
#if LIMELIGHT_AMX
  const int64_t whole = m / kTileRows, part = m % kTileRows;
  const c10::BFloat16* w = weight.data_ptr<c10::BFloat16>();
  const int64_t block_elements = weight.size(1) * kTileElements;
  run(tiles_of(x), weight.size(0), n, y.data_ptr<c10::BFloat16>(), [&](int64_t block, int64_t) {
    return std::pair{w + block * block_elements, block_elements};
  });
#endif
  return y;
}

// quant_matmul's weights turned into tiles a pair of column blocks at a time, on the
// thread that multiplies them: the products tile_matmul gives on those bfloat16 weights,
// reading a quarter (int4) or half (int8) of the bytes.
at::Tensor tile_quant_matmul(const at::Tensor& x, const at::Tensor& qweight, int64_t bits,
                             int64_t n) {
  TORCH_CHECK(LIMELIGHT_AMX && amx_usable(), "tile_quant_matmul: this CPU lends no AMX tiles");
  TORCH_CHECK(bits == 4 || bits == 8, "tile_quant_matmul: 4 or 8 bits, not ", bits);
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == at::kBFloat16,
              "tile_quant_matmul: x must be contiguous bfloat16 [M, K]");
  const int64_t group_bytes = 64 * (1 + bits);
  TORCH_CHECK(qweight.dim() == 3 && qweight.is_contiguous() &&
                  qweight.scalar_type() == at::kByte && qweight.size(2) == group_bytes,
              "tile_quant_matmul: qweight must be contiguous uint8 [N / 16, K / 32, ",
              group_bytes, "]");
  const int64_t m = x.size(0), k = x.size(1), groups = qweight.size(1);
  TORCH_CHECK(k == groups * kDepth, "tile_quant_matmul: x has ", k, " inputs, the weights ",
              groups * kDepth);
  TORCH_CHECK(n > 0 && n <= qweight.size(0) * kCols && n > (qweight.size(0) - 1) * kCols,
              "tile_quant_matmul: ", n, " outputs do not fit ", qweight.size(0),
              " blocks of 16");
  at::Tensor y = at::empty({m, n}, x.options());
  if (m == 0) return y;
#if LIMELIGHT_AMX
  const uint8_t* q = qweight.data_ptr<uint8_t>();
  const int64_t block_elements = groups * kTileElements;
  run(tiles_of(x), qweight.size(0), n, y.data_ptr<c10::BFloat16>(),
      [&](int64_t block, int64_t count) {
        thread_local std::vector<c10::BFloat16> tiles;
        tiles.resize(2 * block_elements);
        for (int64_t b = 0; b < count; ++b)
          for (int64_t g = 0; g < groups; ++g) {
            const uint8_t* group = q + ((block + b) * groups + g) * group_bytes;
            c10::BFloat16* tile = tiles.data() + b * block_elements + g * kTileElements;
            if (bits == 4)
              dequantize_group<4>(group, tile);
            else
              dequantize_group<8>(group, tile);
          }
        return std::pair{static_cast<const c10::BFloat16*>(tiles.data()), block_elements};
      });
#endif
  return y;
}

bool tile_matmul_usable() { return LIMELIGHT_AMX && amx_usable(); }

}  // namespace
}  // namespace limelight

TORCH_LIBRARY_FRAGMENT(limelight_kernels, m) {
  m.def("tile_matmul(Tensor x, Tensor weight, int n) -> Tensor");
  m.def("tile_quant_matmul(Tensor x, Tensor qweight, int bits, int n) -> Tensor");
  m.def("tile_matmul_usable() -> bool", &limelight::tile_matmul_usable);
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) {
  m.impl("tile_matmul", &limelight::tile_matmul);
  m.impl("tile_quant_matmul", &limelight::tile_quant_matmul);
}
