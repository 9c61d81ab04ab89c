// One query against one tile of up to kTile keys, the steps of the few-query loop in
// attend.h: its scores, the online-softmax fold of them into a running maximum and sum,
// and the weighted value sums.  With AVX-512 the tile's 16 scores sit in one vector;
// elsewhere the same steps run as loops the compiler vectorises.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#define LIMELIGHT_AVX512 1
#else
#define LIMELIGHT_AVX512 0
#endif

namespace limelight {

constexpr int64_t kTile = 16;        // keys scored before their values are summed
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 2^f for f in [0, 1): a degree-6 polynomial, highest power first.
constexpr float kExp2Poly[7] = {1.53533668e-4f, 1.33989133e-3f, 9.61844138e-3f, 5.55036329e-2f,
                                2.40226507e-1f, 6.93147182e-1f, 1.f};

// exp(x) for x <= 0 (scores minus their maximum), in a form the compiler vectorises:
// 2^(x log2 e) split into an integer power, set in the exponent bits, and a polynomial
// for the fraction.  Relative error below 2e-7; under -87 (and -inf) it gives 0.
inline void exp_nonpositive(float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float t = std::max(x[i], -87.f) * 1.44269504089f;
    float k = std::floor(t);
    float f = t - k;  // [0, 1)
    float p = kExp2Poly[0];
    for (int j = 1; j < 7; ++j) p = p * f + kExp2Poly[j];
    int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, 4);
    x[i] = x[i] < -87.f ? 0.f : p * scale;
  }
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
  __m512 p = _mm512_set1_ps(kExp2Poly[0]);
  for (int j = 1; j < 7; ++j) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Poly[j]));
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

}  // namespace limelight
