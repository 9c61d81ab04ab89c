// attend.h's chunk of keys on AMX tiles, for a bfloat16 cache: the same partial results
// (running maximum, sum and weighted values per query), with the dot products and the
// value sums as tile products.  paged_decode.cpp takes it where the CPU lends tiles.
//
// Per KV head and up to 16 of the chunk's queries, 32 keys at a time:
// - scores [16 keys, 16 queries]: keys read in place as the first operand (16 rows of a
//   cache block; a gathered copy where the slots are not consecutive, zeros past the last
//   key), the queries transposed into the second, one product chain over the head;
// - transposed to [16 queries, 16 keys], so that the online softmax of each query runs over
//   keys in the vector lanes, as attend.h's few-query loop does, for the real queries only;
// - the weights are the first operand of the value product, each pair of values
//   interleaved as the second: [16 queries, 16 outputs] a tile.
// The float32 queries and weights go in as two bfloat16 parts each, x = hi + lo with
// lo = x - hi rounded, and both parts are multiplied: what is left out is below 2^-16 of
// x, so the results are those of float32 arithmetic on the bfloat16 cache (the tests hold
// it to 1e-5), at two products where one would do.  The products are the cheap part.
// A decoding row has a few queries a KV head (its query heads), so most of the 16 rows of
// a product are zeros; the tile unit does them anyway at no cost that matters, and what it
// saves is the widening of every key and value to float32 and the multiply-adds of
// attend.h's loops.  SmolLM2's heads, 4 rows, one thread, µs a layer with the cache in the
// CPU's caches: 1,136 keys shared and 560 each of their own 347 instead of 697; 1,700 of
// their own 575 instead of 928 (packing the values is about 40% of that).  In the engine
// the cache comes from memory (5 MB a layer for those 4 rows), and there a decode step of
// 4 rows with a shared 1,136-token prefix took 33.2 instead of 45.6 ms on one thread, 22.8
// instead of 28.4 on two (SmolLM2 int4, 48 greedy tokens); with 1,650 keys each and nothing
// shared, about what it took before: both loops wait for memory there.  Fetching the next
// block's rows ahead gave 10-15% of those figures.

#pragma once

#include <type_traits>
#include <vector>

#include "amx.h"
#include "attend.h"
#if LIMELIGHT_AMX
#include "transpose.h"
#endif

namespace limelight {

constexpr int64_t kTileHead = 256;  // the largest head size the tile loop takes

#if LIMELIGHT_AMX

constexpr int64_t kBlockKeys = 32;  // keys a value product adds up (two groups of 16)
constexpr int64_t kRowsTile = 16;   // queries (tile rows) at once

// The first operand rows of the 16 keys from `first` (of head h): in place where their slots
// are consecutive, else copied into `copy` (zeros past the chunk's n keys).
inline const uint16_t* key_group(const Chunk<c10::BFloat16>& c, int64_t first, int64_t h,
                                 uint16_t* copy, int64_t& stride) {
  const auto* cache = reinterpret_cast<const uint16_t*>(c.k_cache);
  const int64_t width = c.kv * c.d, count = std::clamp<int64_t>(c.n - first, 0, 16);
  bool in_place = count == 16;
  for (int64_t i = 1; in_place && i < 16; ++i) in_place = c.slots[first + i] == c.slots[first] + i;
  if (in_place) {
    stride = width * 2;
    return cache + c.slots[first] * width + h * c.d;
  }
  for (int64_t i = 0; i < 16; ++i) {
    if (i < count)
      std::memcpy(copy + i * c.d, cache + c.slots[first + i] * width + h * c.d, c.d * 2);
    else
      std::fill(copy + i * c.d, copy + (i + 1) * c.d, 0);
  }
  stride = c.d * 2;
  return copy;
}

// Values of the 32 keys from `first`, outputs [16 * col, 16 * col + 16) of head h, as the
// value product's second operand: row p holds keys 2p and 2p + 1 interleaved.
inline void pack_value_pairs(const Chunk<c10::BFloat16>& c, int64_t first, int64_t h, int64_t col,
                             const __m512i& interleave, int32_t* out) {
  const auto* cache = reinterpret_cast<const uint16_t*>(c.v_cache);
  const int64_t width = c.kv * c.d;
  for (int64_t p = 0; p < kBlockKeys / 2; ++p) {
    __m256i two[2];
    for (int64_t i = 0; i < 2; ++i) {
      const int64_t key = first + 2 * p + i;
      two[i] = key < c.n ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                               cache + c.slots[key] * width + h * c.d + col * 16))
                         : _mm256_setzero_si256();  // a weight of 0 times garbage is not 0
    }
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(two[0]), two[1], 1);
    _mm512_store_si512(out + p * 16, _mm512_permutexvar_epi16(interleave, both));
  }
}

// The cache rows of the 32 keys from `first` (every head's keys and values: the chunk's
// other heads come next and find them in the cache), fetched ahead of their block: the
// cache is much larger than the CPU's caches, and its rows are scattered in blocks.
inline void prefetch_block(const Chunk<c10::BFloat16>& c, int64_t first) {
  const int64_t bytes = c.kv * c.d * 2;
  for (int64_t key = first; key < std::min(c.n, first + kBlockKeys); ++key) {
    const char* k = reinterpret_cast<const char*>(c.k_cache) + c.slots[key] * bytes;
    const char* v = reinterpret_cast<const char*>(c.v_cache) + c.slots[key] * bytes;
    for (int64_t line = 0; line < bytes; line += 64) {
      _mm_prefetch(k + line, _MM_HINT_T0);
      _mm_prefetch(v + line, _MM_HINT_T0);
    }
  }
}

// x (16 floats) as bfloat16 hi and lo with hi + lo = x to within 2^-16 of x.
inline void split(__m512 x, __m256bh& hi, __m256bh& lo) {
  hi = _mm512_cvtneps_pbh(x);
  const __m512 back = _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32((__m256i)hi), 16));
  lo = _mm512_cvtneps_pbh(_mm512_sub_ps(x, back));
}

// Queries [first, first + count) of head h (float32, scaled): their scores' second
// operands, hi and lo, for each 32 inputs of the head: [16 input pairs, 16 queries] (zeros
// past count).
inline void pack_queries(const Chunk<c10::BFloat16>& c, int64_t h, int64_t first, int64_t count,
                         int32_t* hi_out, int32_t* lo_out) {
  alignas(64) uint16_t hi[kRowsTile * kTileHead], lo[kRowsTile * kTileHead];
  for (int64_t j = 0; j < count; ++j)
    for (int64_t i = 0; i < c.d; i += 16) {
      __m256bh h16, l16;
      split(_mm512_loadu_ps(c.queries + (h * c.nq + first + j) * c.d + i), h16, l16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + j * c.d + i), (__m256i)h16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + j * c.d + i), (__m256i)l16);
    }
  for (int64_t s = 0; s < c.d / 32; ++s) {  // a row's pairs of inputs are 32-bit elements
    transpose_into(reinterpret_cast<const int32_t*>(hi) + s * 16, c.d / 2, count,
                   hi_out + s * 16 * 16);
    transpose_into(reinterpret_cast<const int32_t*>(lo) + s * 16, c.d / 2, count,
                   lo_out + s * 16 * 16);
  }
}

// One query's 32 scores (two vectors of 16 keys, `seen` masking keys past the chunk) folded
// into its running max and sum; its weights go to `hi` and `lo` as 32 bfloat16 each, and
// the factor its value sums are to be rescaled by is returned.
inline float fold_block(__m512 (&s)[2], const __mmask16 (&seen)[2], float softcap, float& max,
                        float& sum, uint16_t* hi, uint16_t* lo) {
  const __m512 minus_inf = _mm512_set1_ps(kNegInf);
  for (int i = 0; i < 2; ++i) {
    if (softcap > 0.f) {
      alignas(64) float capped[16];
      _mm512_store_ps(capped, s[i]);
      cap_scores(capped, 16, softcap);
      s[i] = _mm512_load_ps(capped);
    }
    s[i] = _mm512_mask_blend_ps(seen[i], minus_inf, s[i]);
  }
  const float top = std::max(max, _mm512_reduce_max_ps(_mm512_max_ps(s[0], s[1])));
  const float rescale = max == kNegInf ? 0.f : std::exp(max - top);
  const __m512 w[2] = {exp_nonpositive(_mm512_sub_ps(s[0], _mm512_set1_ps(top))),
                       exp_nonpositive(_mm512_sub_ps(s[1], _mm512_set1_ps(top)))};
  max = top;
  sum = sum * rescale + _mm512_reduce_add_ps(_mm512_add_ps(w[0], w[1]));
  for (int i = 0; i < 2; ++i) {  // keys 0-15, then 16-31
    __m256bh h16, l16;
    split(w[i], h16, l16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(hi + 16 * i), (__m256i)h16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(lo + 16 * i), (__m256i)l16);
  }
  return rescale;
}

// The tile intrinsics take their tile numbers as literals (they go into the instruction),
// so these two steps are macros, not templates.
// Tile acc += the keys in tile k (16 rows, `stride` bytes apart) times the queries' hi and
// lo parts in tiles 4 and 6.
#define LIMELIGHT_ADD_SCORES(acc, k, keys, stride) \
  do {                                             \
    _tile_loadd(k, keys, stride);                  \
    _tile_dpbf16ps(acc, k, 4);                     \
    _tile_dpbf16ps(acc, k, 6);                     \
  } while (0)
// out [16 queries, 16 outputs] = the weights' hi and lo parts in tiles 4 and 6 times
// `values` (paired as pack_value_pairs leaves them), through tiles acc and v.
#define LIMELIGHT_VALUE_TILE(acc, v, values, out) \
  do {                                            \
    _tile_zero(acc);                              \
    _tile_loadd(v, values, 64);                   \
    _tile_dpbf16ps(acc, 4, v);                    \
    _tile_dpbf16ps(acc, 6, v);                    \
    _tile_stored(acc, out, 64);                   \
  } while (0)

// The scores of the 32 keys from `key0` for the packed queries (hi, lo), by query:
// by_query[half] [16 queries, 16 keys] (keys past the chunk score 0; the caller masks them).
inline void score_block(const Chunk<c10::BFloat16>& c, int64_t h, int64_t key0,
                        const int32_t* const (&queries)[2], float (&by_query)[2][16 * 16]) {
  alignas(64) uint16_t copies[2][16 * kTileHead];
  alignas(64) float scores[16 * 16];
  int64_t stride[2] = {0, 0};
  const uint16_t* keys[2] = {nullptr, nullptr};
  for (int64_t half = 0; half < 2; ++half)
    if (key0 + 16 * half < c.n) keys[half] = key_group(c, key0 + 16 * half, h, copies[half], stride[half]);
  _tile_zero(0);
  _tile_zero(1);
  for (int64_t s = 0; s < c.d / 32; ++s) {
    _tile_loadd(4, queries[0] + s * 16 * 16, 64);
    _tile_loadd(6, queries[1] + s * 16 * 16, 64);
    LIMELIGHT_ADD_SCORES(0, 5, keys[0] + s * 32, stride[0]);
    if (keys[1] != nullptr) LIMELIGHT_ADD_SCORES(1, 7, keys[1] + s * 32, stride[1]);
  }
  for (int64_t half = 0; half < 2; ++half) {  // [16 keys, 16 queries] → by query
    if (half == 0) _tile_stored(0, scores, 64); else _tile_stored(1, scores, 64);
    transpose_into(reinterpret_cast<const int32_t*>(scores), 16, 16,
                   reinterpret_cast<int32_t*>(by_query[half]));
  }
}

// acc [count, d] = acc times each query's rescale plus the block's values weighted by the
// weights in tiles 4 and 6 (hi, lo), 16 outputs a tile.
inline void add_block_values(const Chunk<c10::BFloat16>& c, int64_t h, int64_t key0,
                             int64_t count, const float* rescale, float* acc) {
  const __m512i interleave = pair_interleave();
  alignas(64) int32_t values[16 * 16];
  alignas(64) float block[16 * 16];
  for (int64_t col = 0; col < c.d / 16; ++col) {
    pack_value_pairs(c, key0, h, col, interleave, values);
    if (col % 2 == 0)
      LIMELIGHT_VALUE_TILE(0, 5, values, block);
    else
      LIMELIGHT_VALUE_TILE(1, 7, values, block);
    for (int64_t j = 0; j < count; ++j) {
      float* a = acc + j * c.d + col * 16;
      _mm512_store_ps(a, _mm512_fmadd_ps(_mm512_load_ps(a), _mm512_set1_ps(rescale[j]),
                                         _mm512_load_ps(block + j * 16)));
    }
  }
}

// The chunk `c` (tiles configured by the calling thread) for the queries [first, first +
// count) of head h, count <= 16.  Tiles: 0-1 scores, then value sums; 4 and 6 the
// queries, then the weights (hi, lo); 5 and 7 keys or values.
template <int64_t D>
void attend_tile_rows(const Chunk<c10::BFloat16>& c, int64_t h, int64_t first, int64_t count) {
  const int64_t d = D > 0 ? D : c.d;
  alignas(64) int32_t queries[2][kTileHead / 32 * 16 * 16];  // hi, lo
  alignas(64) float by_query[2][16 * 16];
  alignas(64) uint16_t weights[2][kRowsTile * kBlockKeys] = {};  // hi, lo; past count 0
  alignas(64) float acc[kRowsTile * kTileHead];
  float maxima[kRowsTile], sums[kRowsTile], rescale[kRowsTile];
  std::fill(maxima, maxima + count, kNegInf);
  std::fill(sums, sums + count, 0.f);
  std::fill(acc, acc + count * d, 0.f);
  pack_queries(c, h, first, count, queries[0], queries[1]);
  const int32_t* const packed[2] = {queries[0], queries[1]};

  const bool fetches = h == 0 && first == 0;  // the chunk's first pass over its keys
  if (fetches) prefetch_block(c, 0);
  for (int64_t key0 = 0; key0 < c.n; key0 += kBlockKeys) {
    if (fetches) prefetch_block(c, key0 + kBlockKeys);
    score_block(c, h, key0, packed, by_query);
    const __mmask16 seen[2] = {
        static_cast<__mmask16>((1u << std::clamp<int64_t>(c.n - key0, 0, 16)) - 1),
        static_cast<__mmask16>((1u << std::clamp<int64_t>(c.n - key0 - 16, 0, 16)) - 1)};
    for (int64_t j = 0; j < count; ++j) {
      __m512 s[2] = {_mm512_load_ps(by_query[0] + j * 16), _mm512_load_ps(by_query[1] + j * 16)};
      rescale[j] = fold_block(s, seen, c.softcap, maxima[j], sums[j],
                              weights[0] + j * kBlockKeys, weights[1] + j * kBlockKeys);
    }
    _tile_loadd(4, weights[0], 64);
    _tile_loadd(6, weights[1], 64);
    add_block_values(c, h, key0, count, rescale, acc);
  }
  for (int64_t j = 0; j < count; ++j) {
    const Partial& o = c.out[h * c.nq + first + j];
    *o.max = maxima[j];
    *o.sum = sums[j];
    std::memcpy(o.acc, acc + j * d, d * 4);
  }
}

// The chunk `c` on tiles (configured by the calling thread).
inline void attend_tiles(const Chunk<c10::BFloat16>& c) {
  with_head_size(c.d, [&](auto head_size) {
    for (int64_t h = 0; h < c.kv; ++h)
      for (int64_t first = 0; first < c.nq; first += kRowsTile)
        attend_tile_rows<decltype(head_size)::value>(c, h, first,
                                                     std::min(kRowsTile, c.nq - first));
  });
}

#undef LIMELIGHT_ADD_SCORES
#undef LIMELIGHT_VALUE_TILE

#endif  // LIMELIGHT_AMX

// Whether paged_decode takes the tiles for a cache of C with heads of d: bfloat16, heads
// of whole 32s up to kTileHead, on a CPU that lends AMX tiles.
template <typename C>
bool tiles_take(int64_t d) {
#if LIMELIGHT_AMX
  if constexpr (std::is_same_v<C, c10::BFloat16>) return d % 32 == 0 && d <= kTileHead && amx_usable();
#endif
  return false;
}

// The calling thread's tiles configured while it lives, when `on`.
struct TileScope {
  bool on;
  explicit TileScope(bool on) : on(on) {
#if LIMELIGHT_AMX
    if (on) configure_tiles();
#endif
  }
  ~TileScope() {
#if LIMELIGHT_AMX
    if (on) _tile_release();
#endif
  }
};

// A chunk through the tiles (`tiles`: tiles_take said so, and a TileScope is live) or
// through attend.h's loops.
template <typename C>
void attend_chunk(const Chunk<C>& c, std::vector<float>& scratch, bool tiles) {
#if LIMELIGHT_AMX
  if constexpr (std::is_same_v<C, c10::BFloat16>)
    if (tiles) return attend_tiles(c);
#endif
  attend(c, scratch);
}

}  // namespace limelight
