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

#if defined(__AVX512F__)
#include <immintrin.h>
#define LIMELIGHT_AVX512 1
#else
#define LIMELIGHT_AVX512 0
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace limelight {

constexpr int64_t kTile = 16;        // keys scored before their values are summed
constexpr int64_t kBlock = 8;        // value columns summed at once in the many-query loop
constexpr int64_t kManyQueries = 8;  // queries per KV head from which they go in the lanes
constexpr int64_t kMaxLanes = 32;    // queries in the lanes at once
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 (scores minus their maximum), in a form the compiler vectorises:
// 2^(x log2 e) split into an integer power, set in the exponent bits, and a polynomial
// for the fraction.  Relative error below 2e-7; under -87 (and -inf) it gives 0.
inline void exp_nonpositive(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float t = std::max(x[i], -87.f) * 1.44269504089f;
    float k = std::floor(t);
    float f = t - k;  // [0, 1)
    float p = 1.53533668e-4f;
    p = p * f + 1.33989133e-3f;
    p = p * f + 9.61844138e-3f;
    p = p * f + 5.55036329e-2f;
    p = p * f + 2.40226507e-1f;
    p = p * f + 6.93147182e-1f;
    p = p * f + 1.f;
    int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    x[i] = x[i] < -87.f ? 0.f : p * scale;
  }
}

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

// Folds one query's tile of scores s[0..t_n) into its running max and sum, leaving the
// keys' weights in `s` and rescaling its value sums acc[0..d) to the new maximum.
inline void fold_tile(float* __restrict s, int64_t t_n, float& max, float& sum,
                      float* __restrict acc, int64_t d) {
  float top = max;
  for (int64_t t = 0; t < t_n; ++t) top = std::max(top, s[t]);
  const float rescale = max == kNegInf ? 0.f : std::exp(max - top);
  max = top;
  for (int64_t t = 0; t < t_n; ++t) s[t] -= top;
  exp_nonpositive(s, t_n);
  float tile_sum = 0.f;
#pragma omp simd reduction(+ : tile_sum)
  for (int64_t t = 0; t < t_n; ++t) tile_sum += s[t];
  sum = sum * rescale + tile_sum;
  if (rescale != 1.f)
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) acc[i] *= rescale;
}

#if LIMELIGHT_AVX512
// Lane t of the result: the sum of v[t]'s 16 lanes.  A tree of unpacks and shuffles
// (45 instructions) instead of 16 horizontal sums (~8 each).
inline __m512 sum_lanes(__m512 (&v)[16]) {
  __m512 pairs[8], quads[4];
  for (int j = 0; j < 8; ++j)  // 128-bit lane l: [v2j, v2j+1] summed over elements {0,2},{1,3}
    pairs[j] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]),
                             _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
  for (int j = 0; j < 4; ++j) {  // 128-bit lane l: keys 4j..4j+3 summed over that lane
    const __m512d a = _mm512_castps_pd(pairs[2 * j]), b = _mm512_castps_pd(pairs[2 * j + 1]);
    quads[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  auto fold = [](__m512 a, __m512 b) {  // lanes 0+1 and 2+3 of a, then of b
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  return fold(fold(quads[0], quads[1]), fold(quads[2], quads[3]));
}
#endif

// Scores of one query against a tile of t_n keys (rows `width` floats apart): s[0..t_n).
template <int64_t D>
inline void score_tile(const float* __restrict query, const float* __restrict keys,
                       int64_t width, int64_t d_any, int64_t t_n, float* __restrict s) {
#if LIMELIGHT_AVX512
  if constexpr (D > 0 && D % 16 == 0) {
    static_assert(kTile == 16, "one score per lane");
    __m512 q[D / 16], dots[kTile];
    for (int64_t i = 0; i < D / 16; ++i) q[i] = _mm512_loadu_ps(query + 16 * i);
    for (int64_t t = 0; t < kTile; ++t) {
      dots[t] = _mm512_setzero_ps();
      if (t < t_n)
        for (int64_t i = 0; i < D / 16; ++i)
          dots[t] = _mm512_fmadd_ps(q[i], _mm512_loadu_ps(keys + t * width + 16 * i), dots[t]);
    }
    float all[kTile];
    _mm512_storeu_ps(all, sum_lanes(dots));
    std::memcpy(s, all, t_n * 4);
    return;
  }
#endif
  const int64_t d = D > 0 ? D : d_any;
  for (int64_t t = 0; t < t_n; ++t) {
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < d; ++i) dot += query[i] * keys[t * width + i];
    s[t] = dot;
  }
}

#if LIMELIGHT_AVX512
// exp_nonpositive on a vector: the same polynomial, in registers.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 t = _mm512_mul_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.f)),
                                 _mm512_set1_ps(1.44269504089f));
  const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, k);
  __m512 p = _mm512_set1_ps(1.53533668e-4f);
  for (float c : {1.33989133e-3f, 9.61844138e-3f, 5.55036329e-2f, 2.40226507e-1f,
                  6.93147182e-1f, 1.f})
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.f), _CMP_LT_OQ);
  return _mm512_maskz_mul_ps(~tiny, p, _mm512_castsi512_ps(bits));
}
#endif

// fold_tile for a tile of at most 16 scores, in registers where the CPU has AVX-512.
inline void fold_scores(float* __restrict s, int64_t t_n, float& max, float& sum,
                        float* __restrict acc, int64_t d) {
#if LIMELIGHT_AVX512
  static_assert(kTile == 16, "one score per lane");
  const __mmask16 keys = static_cast<__mmask16>((1u << t_n) - 1);
  const __m512 scores = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), keys, s);
  const float top = std::max(max, _mm512_reduce_max_ps(scores));
  const float rescale = max == kNegInf ? 0.f : std::exp(max - top);
  const __m512 weights = exp_nonpositive(_mm512_sub_ps(scores, _mm512_set1_ps(top)));
  _mm512_storeu_ps(s, weights);  // s has kTile floats; lanes past t_n are 0
  max = top;
  sum = sum * rescale + _mm512_reduce_add_ps(weights);
  if (rescale != 1.f)
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) acc[i] *= rescale;
#else
  fold_tile(s, t_n, max, sum, acc, d);
#endif
}

// acc[0..d) += the tile's values (rows `width` floats apart) weighted by p[0..t_n).
template <int64_t D>
inline void add_values(const float* __restrict p, const float* __restrict values, int64_t width,
                       int64_t d_any, int64_t t_n, float* __restrict acc) {
#if LIMELIGHT_AVX512
  if constexpr (D > 0 && D % 16 == 0) {
    __m512 a[D / 16];
    for (int64_t i = 0; i < D / 16; ++i) a[i] = _mm512_loadu_ps(acc + 16 * i);
    for (int64_t t = 0; t < t_n; ++t) {
      const __m512 w = _mm512_set1_ps(p[t]);
      for (int64_t i = 0; i < D / 16; ++i)
        a[i] = _mm512_fmadd_ps(w, _mm512_loadu_ps(values + t * width + 16 * i), a[i]);
    }
    for (int64_t i = 0; i < D / 16; ++i) _mm512_storeu_ps(acc + 16 * i, a[i]);
    return;
  }
#endif
  const int64_t d = D > 0 ? D : d_any;
  for (int64_t t = 0; t < t_n; ++t)
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) acc[i] += p[t] * values[t * width + i];
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

// A chunk through the loop that suits its number of queries, with the head size fixed at
// compile time where it is a common one.
template <typename C>
void attend(const Chunk<C>& c, std::vector<float>& scratch) {
  auto run = [&](auto head_size) {
    constexpr int64_t D = decltype(head_size)::value;
    if (c.nq >= kManyQueries)
      attend_many<D>(c, scratch);
    else
      attend_few<D>(c, scratch);
  };
  switch (c.d) {
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

}  // namespace limelight
