// Weight-only quantized matmul for decode steps: y[M, N] = x[M, K] · W[N, K]ᵀ, with W in
// 4- or 8-bit levels and x quantized to int8 on the fly, so that the products are integer
// dot products (AVX-512 VNNI: 64 byte products a multiply-add instruction).
// Registered as limelight_kernels::quant_matmul; kernels/__init__.py builds and loads it,
// layers/quantized.py packs the weights and says what it measured.
//
// Weights: each group of kGroup inputs of a row has a scale d and an offset m (fp16), and
// its weights are w = d·q + m with q an unsigned level (0..15, or 0..255: int8 shifted by
// 128, m = -128·d).  Rows are packed by blocks of kRows, one vector lane per row:
// qweight [N / 16, K / 32, group_bytes] holds, for each block and group, the 16 rows' d
// and m, then kQuads vectors of 64 bytes whose bytes 4r..4r+3 are row r's levels for 4
// consecutive inputs (the operand layout of vpdpbusd); 4-bit levels put quad j in the low
// nibbles and quad j + 4 in the high ones of vector j.  One stream of bytes per block, read
// once (layers/quantized.py's pack_levels writes it).
//
// Activations: each row's group of 32 is quantized symmetrically, x ≈ s·p with p int8, so
// a group contributes  d·s·Σ q·p + m·s·Σ p  to its output: one integer dot product and two
// multiply-adds per group, 16 output rows at once.
//
// Where the CPU has AMX, passes of 12 to 16 activation rows take each group's integer dot
// products from one tile product instead (multiply_block_amx); fewer rows stay on VNNI,
// which was faster there.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define LIMELIGHT_VNNI 1
#else
#define LIMELIGHT_VNNI 0
#endif

#include "amx.h"
#include "convert.h"

#define LIMELIGHT_QUANT_AMX (LIMELIGHT_VNNI && LIMELIGHT_AMX)  // the tile path uses VNNI's helpers

namespace limelight {
namespace {

constexpr int64_t kRows = 16;     // output rows per block: one 32-bit lane each
constexpr int64_t kGroup = 32;    // inputs per scale and offset
constexpr int64_t kQuads = 8;     // groups of 4 inputs in a group
constexpr int64_t kPassRows = 8;  // activation rows per pass over a block's weights

constexpr int64_t kScaleBytes = 2 * kRows * 2;  // a group's d and m for 16 rows, fp16
constexpr int64_t kPrefetch = 4;                  // groups read ahead of the one multiplied

// a block's group: its scales, then its levels, so that the weights are one stream
int64_t group_bytes(int64_t bits) { return kScaleBytes + bits * kGroup * kRows / 8; }

// x quantized per row and group: int8 values (stored in 32-bit words, 4 to a word, as
// vpdpbusd reads them), their scale s and s·Σp.
struct Activations {
  std::vector<int32_t> words;  // [M, K / 4]
  std::vector<float> scale;    // [M, K / 32]
  std::vector<float> offset;   // [M, K / 32]
  int64_t groups;

  template <typename T>
  Activations(const T* x, int64_t m, int64_t k)
      : words(m * k / 4), scale(m * k / kGroup), offset(m * k / kGroup), groups(k / kGroup) {
    int8_t* bytes = reinterpret_cast<int8_t*>(words.data());
    float v[kGroup];
    for (int64_t g = 0; g < m * groups; ++g) {
      widen(x + g * kGroup, v, kGroup);
      float top = 0.f;
      for (float e : v) top = std::max(top, std::abs(e));
      const float inverse = top > 0.f ? 127.f / top : 0.f;
      int32_t sum = 0;
      for (int64_t i = 0; i < kGroup; ++i) {
        const int32_t p = static_cast<int32_t>(std::nearbyint(v[i] * inverse));
        bytes[g * kGroup + i] = static_cast<int8_t>(p);
        sum += p;
      }
      scale[g] = top / 127.f;
      offset[g] = scale[g] * static_cast<float>(sum);
    }
  }

  const int32_t* quads(int64_t row, int64_t g) const {
    return words.data() + (row * groups + g) * kQuads;
  }
};

// One block of kRows output rows for activation rows [row, row + R): out[R][kRows].
struct Block {
  const uint8_t* groups;  // the block's groups, group_bytes(bits) each
  const Activations& x;
  int64_t row;
};

#if LIMELIGHT_VNNI

template <int64_t Bits>
inline void load_levels(const uint8_t* w, __m512i (&q)[kQuads]) {
  if constexpr (Bits == 4) {
    const __m512i low = _mm512_set1_epi8(0x0F);
    for (int64_t j = 0; j < kQuads / 2; ++j) {
      const __m512i both = _mm512_loadu_si512(w + j * 64);
      q[j] = _mm512_and_si512(both, low);
      q[j + kQuads / 2] = _mm512_and_si512(_mm512_srli_epi16(both, 4), low);
    }
  } else {
    for (int64_t j = 0; j < kQuads; ++j) q[j] = _mm512_loadu_si512(w + j * 64);
  }
}

template <int64_t Bits, int64_t R>
void multiply_block(const Block& b, float* out) {
  __m512 acc[R];
  for (int64_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const uint8_t* w = b.groups;
  for (int64_t g = 0; g < b.x.groups; ++g, w += group_bytes(Bits)) {
    for (int64_t line = 0; line < group_bytes(Bits); line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch * group_bytes(Bits) + line),
                   _MM_HINT_T0);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32)));
    __m512i q[kQuads];
    load_levels<Bits>(w + kScaleBytes, q);
    for (int64_t r = 0; r < R; ++r) {
      const int32_t* p = b.x.quads(b.row + r, g);
      __m512i dot = _mm512_setzero_si512();
      if constexpr (R >= 4) {  // the rows' chains of dependent adds overlap
        for (int64_t j = 0; j < kQuads; ++j)
          dot = _mm512_dpbusd_epi32(dot, q[j], _mm512_set1_epi32(p[j]));
      } else {  // two chains a row, one add more
        __m512i odd = _mm512_setzero_si512();
        for (int64_t j = 0; j < kQuads; j += 2) {
          dot = _mm512_dpbusd_epi32(dot, q[j], _mm512_set1_epi32(p[j]));
          odd = _mm512_dpbusd_epi32(odd, q[j + 1], _mm512_set1_epi32(p[j + 1]));
        }
        dot = _mm512_add_epi32(dot, odd);
      }
      const int64_t at = (b.row + r) * b.x.groups + g;
      const __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(b.x.scale[at]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), ds, acc[r]);
      acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(b.x.offset[at]), acc[r]);
    }
  }
  for (int64_t r = 0; r < R; ++r) _mm512_storeu_ps(out + r * kRows, acc[r]);
}


#if LIMELIGHT_QUANT_AMX

// With AMX (Intel Xeon since Sapphire Rapids) a pass of 12 to 16 activation rows gets each
// group's integer sums from one tile product: the activations' [rows, 32] int8 tile times
// the block's levels, whose 8 quads of 16 rows x 4 inputs are already the [8, 64] layout a
// tile product wants; the float work per row and group (two multiply-adds) stays.
constexpr int64_t kAmxMinRows = 12;
constexpr int64_t kAmxMaxRows = 16;

// Two sets of tiles, so that one group's product runs while the last one's sums are
// scaled: 0, 1 sums [rows, 16] int32; 2, 3 activations [rows, 32] int8; 4, 5 levels [8, 64].
void configure_tiles(int64_t rows) {
  TileConfig config;
  for (int t = 0; t < 2; ++t) {
    config.shape(t, rows, 64);
    config.shape(2 + t, rows, kGroup);
    config.shape(4 + t, kQuads, 64);
  }
  _tile_loadconfig(&config);
}

template <int T>
using Tiles = std::integral_constant<int, T>;

// The tile intrinsics take their tile numbers as literals.
template <int T>
inline void tile_product(const int8_t* rows, int64_t stride, const uint8_t* levels) {
  if constexpr (T == 0) {
    _tile_zero(0);
    _tile_loadd(2, rows, stride);
    _tile_loadd(4, levels, 64);
    _tile_dpbsud(0, 2, 4);
  } else {
    _tile_zero(1);
    _tile_loadd(3, rows, stride);
    _tile_loadd(5, levels, 64);
    _tile_dpbsud(1, 3, 5);
  }
}

template <int T>
inline void tile_store(int32_t* sums) {
  if constexpr (T == 0)
    _tile_stored(0, sums, kRows * 4);
  else
    _tile_stored(1, sums, kRows * 4);
}

template <int64_t Bits, int64_t R>
void multiply_block_amx(const Block& b, float* out) {
  alignas(64) uint8_t unpacked[2][kQuads * 64];
  alignas(64) int32_t sums[R * kRows];
  __m512 acc[R];
  for (int64_t r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  const int64_t k = b.x.groups * kGroup;
  const auto* rows = reinterpret_cast<const int8_t*>(b.x.words.data()) + b.row * k;
  // group g's integer sums into tile set T (started, not waited for)
  const auto product = [&](int64_t g, auto set) {
    constexpr int T = decltype(set)::value;
    const uint8_t* w = b.groups + g * group_bytes(Bits);
    for (int64_t line = 0; line < group_bytes(Bits); line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetch * group_bytes(Bits) + line),
                   _MM_HINT_T0);
    const uint8_t* levels = w + kScaleBytes;
    if constexpr (Bits == 4) {
      __m512i q[kQuads];
      load_levels<4>(levels, q);
      for (int64_t j = 0; j < kQuads; ++j) _mm512_store_si512(unpacked[T] + j * 64, q[j]);
      levels = unpacked[T];
    }
    tile_product<T>(rows + g * kGroup, k, levels);
  };
  // group g's sums from tile set T, scaled into the rows' outputs
  const auto scale = [&](int64_t g, auto set) {
    constexpr int T = decltype(set)::value;
    tile_store<T>(sums);
    const uint8_t* w = b.groups + g * group_bytes(Bits);
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32)));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t at = (b.row + r) * b.x.groups + g;
      const __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(b.x.scale[at]));
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_load_si512(sums + r * kRows));
      acc[r] = _mm512_fmadd_ps(dot, ds, acc[r]);
      acc[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(b.x.offset[at]), acc[r]);
    }
  };
  const int64_t groups = b.x.groups;
  product(0, Tiles<0>{});
  for (int64_t g = 0; g < groups; g += 2) {
    if (g + 1 < groups) product(g + 1, Tiles<1>{});
    scale(g, Tiles<0>{});
    if (g + 1 < groups) {
      if (g + 2 < groups) product(g + 2, Tiles<0>{});
      scale(g + 1, Tiles<1>{});
    }
  }
  for (int64_t r = 0; r < R; ++r) _mm512_storeu_ps(out + r * kRows, acc[r]);
}

template <int64_t Bits>
void multiply_rows_amx(const Block& b, int64_t rows, float* out) {  // kAmxMinRows or more
  switch (rows) {
    case 12: return multiply_block_amx<Bits, 12>(b, out);
    case 13: return multiply_block_amx<Bits, 13>(b, out);
    case 14: return multiply_block_amx<Bits, 14>(b, out);
    case 15: return multiply_block_amx<Bits, 15>(b, out);
    default: return multiply_block_amx<Bits, 16>(b, out);
  }
}

#endif

#else  // the same arithmetic one lane at a time, for CPUs without AVX-512 VNNI

template <int64_t Bits>
inline int32_t level(const uint8_t* w, int64_t lane, int64_t input) {
  const int64_t quad = input / 4, byte = lane * 4 + input % 4;
  if constexpr (Bits == 8) return w[quad * 64 + byte];
  if (quad < kQuads / 2) return w[quad * 64 + byte] & 0x0F;
  return w[(quad - kQuads / 2) * 64 + byte] >> 4;
}

template <int64_t Bits, int64_t R>
void multiply_block(const Block& b, float* out) {
  std::fill(out, out + R * kRows, 0.f);
  for (int64_t g = 0; g < b.x.groups; ++g) {
    const uint8_t* group = b.groups + g * group_bytes(Bits);
    const c10::Half* sc = reinterpret_cast<const c10::Half*>(group);
    const uint8_t* w = group + kScaleBytes;
    for (int64_t r = 0; r < R; ++r) {
      const int8_t* p = reinterpret_cast<const int8_t*>(b.x.quads(b.row + r, g));
      const int64_t at = (b.row + r) * b.x.groups + g;
      for (int64_t lane = 0; lane < kRows; ++lane) {
        int32_t dot = 0;
        for (int64_t i = 0; i < kGroup; ++i) dot += level<Bits>(w, lane, i) * p[i];
        out[r * kRows + lane] += static_cast<float>(dot) * static_cast<float>(sc[lane]) *
                                     b.x.scale[at] +
                                 static_cast<float>(sc[kRows + lane]) * b.x.offset[at];
      }
    }
  }
}

#endif

template <int64_t Bits>
void multiply_rows(const Block& b, int64_t rows, float* out) {
  switch (rows) {
    case 1: return multiply_block<Bits, 1>(b, out);
    case 2: return multiply_block<Bits, 2>(b, out);
    case 3: return multiply_block<Bits, 3>(b, out);
    case 4: return multiply_block<Bits, 4>(b, out);
    case 5: return multiply_block<Bits, 5>(b, out);
    case 6: return multiply_block<Bits, 6>(b, out);
    case 7: return multiply_block<Bits, 7>(b, out);
    default: return multiply_block<Bits, kPassRows>(b, out);
  }
}

#if !LIMELIGHT_QUANT_AMX
constexpr int64_t kAmxMinRows = int64_t{1} << 40;  // never
constexpr int64_t kAmxMaxRows = kPassRows;
#endif

template <int64_t Bits, typename T>
void run(const Activations& x, const at::Tensor& qweight, int64_t m, T* y) {
  const int64_t blocks = qweight.size(0), groups = x.groups, n = blocks * kRows;
  const uint8_t* weights = qweight.data_ptr<uint8_t>();
  const bool amx = m >= kAmxMinRows && amx_usable();
  const int64_t pass = amx ? kAmxMaxRows : kPassRows;  // activation rows per pass
  // a thread's share: at least ~64 KiB of weights, so that small layers stay on one thread
  const int64_t grain = std::max<int64_t>(1, 16384 / (groups * group_bytes(Bits)) / m);
  at::parallel_for(0, blocks, grain, [&](int64_t lo, int64_t hi) {
    float out[std::max(kPassRows, kAmxMaxRows) * kRows];
    int64_t tiles = 0;  // the rows this thread's tiles are configured for (0: none)
    for (int64_t nb = lo; nb < hi; ++nb) {
      for (int64_t row = 0; row < m; row += pass) {
        const int64_t rows = std::min(pass, m - row);
        const Block b{weights + nb * groups * group_bytes(Bits), x, row};
#if LIMELIGHT_QUANT_AMX
        if (amx && rows >= kAmxMinRows) {
          if (tiles != rows) configure_tiles(tiles = rows);
          multiply_rows_amx<Bits>(b, rows, out);
        } else
#endif
          multiply_rows<Bits>(b, rows, out);
        for (int64_t r = 0; r < rows; ++r)
          narrow(out + r * kRows, y + (row + r) * n + nb * kRows, kRows);
      }
    }
#if LIMELIGHT_QUANT_AMX
    if (tiles) _tile_release();
#endif
  });
}

template <typename T>
void dispatch(const at::Tensor& x, const at::Tensor& qweight, int64_t bits, at::Tensor& y) {
  const int64_t m = x.size(0), k = x.size(1);
  const Activations quantized(x.data_ptr<T>(), m, k);
  if (bits == 4)
    run<4>(quantized, qweight, m, y.data_ptr<T>());
  else
    run<8>(quantized, qweight, m, y.data_ptr<T>());
}

at::Tensor quant_matmul(const at::Tensor& x, const at::Tensor& qweight, int64_t bits) {
  TORCH_CHECK(bits == 4 || bits == 8, "quant_matmul: 4 or 8 bits, not ", bits);
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "quant_matmul: x must be contiguous [M, K]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "quant_matmul: x must be float32 or bfloat16, not ", x.scalar_type());
  TORCH_CHECK(qweight.dim() == 3 && qweight.is_contiguous() &&
                  qweight.scalar_type() == at::kByte && qweight.size(2) == group_bytes(bits),
              "quant_matmul: qweight must be contiguous uint8 [N / 16, K / 32, ",
              group_bytes(bits), "]");
  TORCH_CHECK(x.size(1) == qweight.size(1) * kGroup, "quant_matmul: x has ", x.size(1),
              " inputs, the weights ", qweight.size(1) * kGroup);
  at::Tensor y = at::empty({x.size(0), qweight.size(0) * kRows}, x.options());
  if (x.size(0) == 0) return y;
  if (x.scalar_type() == at::kFloat)
    dispatch<float>(x, qweight, bits, y);
  else
    dispatch<c10::BFloat16>(x, qweight, bits, y);
  return y;
}

bool quant_matmul_vectorized() { return LIMELIGHT_VNNI; }

bool quant_matmul_uses_amx() { return LIMELIGHT_QUANT_AMX && amx_usable(); }

}  // namespace
}  // namespace limelight

TORCH_LIBRARY_FRAGMENT(limelight_kernels, m) {
  m.def("quant_matmul(Tensor x, Tensor qweight, int bits) -> Tensor");
  m.def("quant_matmul_vectorized() -> bool", &limelight::quant_matmul_vectorized);
  m.def("quant_matmul_uses_amx() -> bool", &limelight::quant_matmul_uses_amx);
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) { m.impl("quant_matmul", &limelight::quant_matmul); }
