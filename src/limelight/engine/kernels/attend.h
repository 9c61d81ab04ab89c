// The inner loops of paged_decode.cpp: one chunk of keys attended by a set of queries,
// with the softmax kept online (running maximum and sum), giving each query a partial
// result that paged_decode.cpp merges with the other chunks'.
//
// A key's cache slot holds all its KV heads side by side, so a tile of kTile keys is read
// (and widened to float32) in whole rows, once for every query that uses it.  Two loops:
// - few queries per KV head (one decoding sequence: its query heads of that KV head):
//   one dot product per key and query;
// - many (the rows that share keys): the queries sit in the vector lanes, so that a key's
//   scores for all of them are D multiply-adds of one broadcast element, and the softmax
//   and the value sums run across lanes, with no horizontal sum per key and query.

#pragma once

#include "convert.h"
#include "tile.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace limelight {

constexpr int64_t kBlock = 8;        // value columns summed at once in the many-query loop
constexpr int64_t kManyQueries = 8;  // queries per KV head from which they go in the lanes
constexpr int64_t kMaxLanes = 32;    // queries in the lanes at once

inline void cap_scores(float* s, int64_t n, float softcap) {  // tanh capping, Gemma 2 style
  if (softcap > 0.f)
    for (int64_t i = 0; i < n; ++i) s[i] = std::tanh(s[i] / softcap) * softcap;
}

struct Partial {  // one query's result over one chunk: running max, sum, weighted values
  float* max;
  float* sum;
  float* acc;  // [D]
};

// One chunk of keys and the queries that attend to it.
template <typename C>
struct Chunk {
  const float* queries;  // [kv, nq, D], float32, already times the scale
  int64_t kv, nq, d;
  const C* k_cache;  // [slots, kv, D]
  const C* v_cache;
  const int64_t* slots;  // the chunk's keys: slots[0..n)
  int64_t n;
  float softcap;       // 0: none
  const Partial* out;  // [kv * nq], (head, query) order
};

// Keys or values of slots[0..t_n) widened into rows [t_n, width].
template <typename C>
void widen_tile(const C* cache, const int64_t* slots, int64_t t_n, int64_t width, float* rows) {
  for (int64_t t = 0; t < t_n; ++t) widen(cache + slots[t] * width, rows + t * width, width);
}

// The few-query loop.  `D` is the head size when it is one of the common ones (the loops
// then unroll), 0 for any other (c.d says it).
template <int64_t D, typename C>
void attend_few(const Chunk<C>& c, std::vector<float>& scratch) {
  const int64_t d = D > 0 ? D : c.d, width = c.kv * d, heads = c.kv * c.nq;
  scratch.assign(kTile * width + heads * (kTile + d + 2), 0.f);
  float* __restrict rows = scratch.data();          // [kTile, kv * D] keys or values
  float* __restrict scores = rows + kTile * width;  // [kv * nq, kTile]
  float* __restrict acc = scores + heads * kTile;   // [kv * nq, D]
  float* __restrict maxima = acc + heads * d;       // [kv * nq]
  float* __restrict sums = maxima + heads;          // [kv * nq]
  std::fill(maxima, maxima + heads, kNegInf);
  for (int64_t start = 0; start < c.n; start += kTile) {
    const int64_t t_n = std::min(kTile, c.n - start);
    widen_tile(c.k_cache, c.slots + start, t_n, width, rows);
    for (int64_t hq = 0; hq < heads; ++hq) {
      float* __restrict s = scores + hq * kTile;
      const float* __restrict query = c.queries + hq * d;
      const float* __restrict keys = rows + (hq / c.nq) * d;
      score_tile<D>(query, keys, width, d, t_n, s);
      cap_scores(s, t_n, c.softcap);
      fold_scores(s, t_n, maxima[hq], sums[hq], acc + hq * d, d);
    }
    widen_tile(c.v_cache, c.slots + start, t_n, width, rows);
    for (int64_t hq = 0; hq < heads; ++hq) {
      const float* __restrict p = scores + hq * kTile;
      const float* __restrict values = rows + (hq / c.nq) * d;
      add_values<D>(p, values, width, d, t_n, acc + hq * d);
    }
  }
  for (int64_t hq = 0; hq < heads; ++hq) {
    *c.out[hq].max = maxima[hq];
    *c.out[hq].sum = sums[hq];
    std::memcpy(c.out[hq].acc, acc + hq * d, d * 4);
  }
}

// Scores of a whole tile (rows past the tile's keys are zeros) for the L queries in the
// lanes of qt [D, L]: the kTile sums stay in registers.
template <int64_t D, int64_t L>
void score_tile_lanes(const float* __restrict qt, const float* __restrict keys, int64_t width,
                      int64_t d_any, float (&s)[kTile][L]) {
  const int64_t d = D > 0 ? D : d_any;
  for (int64_t i = 0; i < d; ++i)
#pragma GCC unroll 16
    for (int64_t t = 0; t < kTile; ++t) {
      const float k = keys[t * width + i];
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) s[t][j] += k * qt[i * L + j];
    }
}

// fold_tile across the lanes: the tile's weights go to p [kTile, L] (0 past t_n keys).
template <int64_t L>
void fold_tile_lanes(float (&s)[kTile][L], int64_t t_n, float* __restrict max,
                     float* __restrict sum, float* __restrict acc, int64_t d,
                     float* __restrict p) {
  float top[L], rescale[L];
  for (int64_t j = 0; j < L; ++j) top[j] = max[j];
  for (int64_t t = 0; t < t_n; ++t)
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) top[j] = std::max(top[j], s[t][j]);
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) rescale[j] = max[j] - top[j];  // -inf at the start: 0
  exp_nonpositive(rescale, L);
  for (int64_t t = 0; t < kTile; ++t)
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) p[t * L + j] = t < t_n ? s[t][j] - top[j] : -100.f;
  exp_nonpositive(p, kTile * L);
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) {
    float total = sum[j] * rescale[j];
    for (int64_t t = 0; t < kTile; ++t) total += p[t * L + j];
    sum[j] = total;
    max[j] = top[j];
  }
  for (int64_t i = 0; i < d; ++i)
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) acc[i * L + j] *= rescale[j];
}

// acc [D, L] += the tile's values weighted by p [kTile, L], kBlock columns at a time so
// that their sums stay in registers.
template <int64_t D, int64_t L>
void add_values_lanes(const float* __restrict p, const float* __restrict values, int64_t width,
                      int64_t d_any, float* __restrict acc) {
  const int64_t d = D > 0 ? D : d_any;
  for (int64_t i0 = 0; i0 < d; i0 += kBlock) {
    const int64_t i_n = std::min(kBlock, d - i0);
    float a[kBlock][L];
    for (int64_t ii = 0; ii < i_n; ++ii)
      for (int64_t j = 0; j < L; ++j) a[ii][j] = acc[(i0 + ii) * L + j];
    for (int64_t t = 0; t < kTile; ++t)
#pragma GCC unroll 8
      for (int64_t ii = 0; ii < kBlock; ++ii) {
        const float v = ii < i_n ? values[t * width + i0 + ii] : 0.f;
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) a[ii][j] += v * p[t * L + j];
      }
    for (int64_t ii = 0; ii < i_n; ++ii)
      for (int64_t j = 0; j < L; ++j) acc[(i0 + ii) * L + j] = a[ii][j];
  }
}

// The many-query loop for up to L queries a KV head (zero-padded lanes).
template <int64_t D, int64_t L, typename C>
void attend_lanes(const Chunk<C>& c, std::vector<float>& scratch) {
  const int64_t d = D > 0 ? D : c.d, width = c.kv * d, dl = d * L;
  scratch.assign(kTile * width + c.kv * (2 * dl + kTile * L + 2 * L), 0.f);
  float* __restrict rows = scratch.data();               // [kTile, kv * D] keys or values
  float* __restrict qt = rows + kTile * width;           // [kv, D, L]
  float* __restrict acc = qt + c.kv * dl;                // [kv, D, L]
  float* __restrict weights = acc + c.kv * dl;           // [kv, kTile, L]
  float* __restrict maxima = weights + c.kv * kTile * L;  // [kv, L]
  float* __restrict sums = maxima + c.kv * L;            // [kv, L]
  for (int64_t h = 0; h < c.kv; ++h)
    for (int64_t j = 0; j < c.nq; ++j)
      for (int64_t i = 0; i < d; ++i) qt[h * dl + i * L + j] = c.queries[(h * c.nq + j) * d + i];
  std::fill(maxima, maxima + c.kv * L, kNegInf);
  for (int64_t start = 0; start < c.n; start += kTile) {
    const int64_t t_n = std::min(kTile, c.n - start);
    widen_tile(c.k_cache, c.slots + start, t_n, width, rows);
    std::fill(rows + t_n * width, rows + kTile * width, 0.f);  // a short last tile
    for (int64_t h = 0; h < c.kv; ++h) {
      float s[kTile][L] = {};
      score_tile_lanes<D, L>(qt + h * dl, rows + h * d, width, d, s);
      cap_scores(&s[0][0], t_n * L, c.softcap);
      fold_tile_lanes<L>(s, t_n, maxima + h * L, sums + h * L, acc + h * dl, d,
                         weights + h * kTile * L);
    }
    widen_tile(c.v_cache, c.slots + start, t_n, width, rows);
    for (int64_t h = 0; h < c.kv; ++h)
      add_values_lanes<D, L>(weights + h * kTile * L, rows + h * d, width, d, acc + h * dl);
  }
  for (int64_t h = 0; h < c.kv; ++h)
    for (int64_t j = 0; j < c.nq; ++j) {
      const Partial& o = c.out[h * c.nq + j];
      *o.max = maxima[h * L + j];
      *o.sum = sums[h * L + j];
      for (int64_t i = 0; i < d; ++i) o.acc[i] = acc[h * dl + i * L + j];
    }
}

// The many-query loop for any number of queries: groups of up to kMaxLanes.
template <int64_t D, typename C>
void attend_many(const Chunk<C>& c, std::vector<float>& scratch) {
  std::vector<float> queries;
  std::vector<Partial> out;
  for (int64_t first = 0; first < c.nq; first += kMaxLanes) {
    const int64_t count = std::min(kMaxLanes, c.nq - first);
    queries.resize(c.kv * count * c.d);
    out.clear();
    for (int64_t h = 0; h < c.kv; ++h) {
      std::memcpy(queries.data() + h * count * c.d, c.queries + (h * c.nq + first) * c.d,
                  count * c.d * 4);
      for (int64_t j = 0; j < count; ++j) out.push_back(c.out[h * c.nq + first + j]);
    }
    Chunk<C> group = c;
    group.queries = queries.data();
    group.nq = count;
    group.out = out.data();
    if (count <= 16)
      attend_lanes<D, 16>(group, scratch);
    else
      attend_lanes<D, kMaxLanes>(group, scratch);
  }
}

// `run(std::integral_constant<int64_t, D>{})` with D the head size `d` where it is a common
// one (the loops then unroll), 0 for any other.
template <typename F>
void with_head_size(int64_t d, F&& run) {
  switch (d) {
    case 64:
      return run(std::integral_constant<int64_t, 64>{});
    case 128:
      return run(std::integral_constant<int64_t, 128>{});
    case 256:
      return run(std::integral_constant<int64_t, 256>{});
    default:
      return run(std::integral_constant<int64_t, 0>{});
  }
}

// A chunk through the loop that suits its number of queries.
template <typename C>
void attend(const Chunk<C>& c, std::vector<float>& scratch) {
  with_head_size(c.d, [&](auto head_size) {
    constexpr int64_t D = decltype(head_size)::value;
    if (c.nq >= kManyQueries)
      attend_many<D>(c, scratch);
    else
      attend_few<D>(c, scratch);
  });
}

}  // namespace limelight
