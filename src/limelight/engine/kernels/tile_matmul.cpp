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

// Tiles: 0-3 sums [16 rows, 16 columns] float32 (tile 2a + b: row tile a, column tile b),
// 4-5 two tiles of x's rows [16, 32 inputs], 6-7 two tiles of W [16 input pairs, 16 x 2].
void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) config.shape(t, kTileRows, 64);
  _tile_loadconfig(&config);
}

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

void run(const Rows& rows, const at::Tensor& weight, int64_t n, c10::BFloat16* y) {
  const int64_t blocks = weight.size(0);
  const int64_t block_elements = weight.size(1) * kTileElements;
  const c10::BFloat16* w = weight.data_ptr<c10::BFloat16>();
  // threads take pairs of column blocks; each pair's weights stay in cache for every row
  at::parallel_for(0, (blocks + 1) / 2, 1, [&](int64_t lo, int64_t hi) {
    configure_tiles();
    for (int64_t pair = lo; pair < hi; ++pair) {
      const int64_t block = 2 * pair;
      const c10::BFloat16* first = w + block * block_elements;
      if (block + 1 < blocks)
        multiply_rows<2>(rows, first, block_elements, n, block * kCols, y);
      else
        multiply_rows<1>(rows, first, 0, n, block * kCols, y);
    }
    _tile_release();
  });
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
  const c10::BFloat16* data = x.data_ptr<c10::BFloat16>();
  thread_local std::vector<c10::BFloat16> tail;  // the part tile's rows, then zeros
  if (part) {
    tail.assign(kTileRows * k, c10::BFloat16(0.f));
    std::copy(data + whole * kTileRows * k, data + m * k, tail.begin());
  }
  const Rows rows{data, tail.data(), m, k, whole, whole + (part > 0)};
  run(rows, weight, n, y.data_ptr<c10::BFloat16>());
#endif
  return y;
}

bool tile_matmul_usable() { return LIMELIGHT_AMX && amx_usable(); }

}  // namespace
}  // namespace limelight

TORCH_LIBRARY_FRAGMENT(limelight_kernels, m) {
  m.def("tile_matmul(Tensor x, Tensor weight, int n) -> Tensor");
  m.def("tile_matmul_usable() -> bool", &limelight::tile_matmul_usable);
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) { m.impl("tile_matmul", &limelight::tile_matmul); }
