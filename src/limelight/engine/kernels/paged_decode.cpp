// Decode attention over the paged KV cache, one new token per sequence, on the CPU.
// Registered as limelight_kernels::paged_decode; built and loaded by kernels/__init__.py,
// whose docstring says why it is hand-written and what it measured.
//
// Each sequence's keys are read straight from their cache slots (no gathered copy, no
// cast of the cache): a key row is widened to float32 once and scored against every
// query head of its KV head, then its value row is added to every head's sum, with the
// softmax kept online (running maximum and sum).  Work is cut into items of one sequence,
// one KV head and up to kChunk keys, run on ATen's thread pool, and the items' partial
// results are merged per sequence and head at the end.  Keys that several sequences
// share (one character's users) are items of their own, scored against all of those
// sequences' queries, so each shared key is read once a step.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kChunk = 128;  // keys per work item
constexpr int64_t kTile = 16;    // keys scored before their values are summed
constexpr int64_t kBlock = 8;  // value columns summed at once in the many-query loop
constexpr int64_t kManyQueries = 8;  // queries per KV head from which they go in the lanes
constexpr int64_t kSerial = 2048;  // scores in a call below which it runs on one thread
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline void widen(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * 4); }

inline void widen(const c10::BFloat16* src, float* dst, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(dst + i, &u, 4);
  }
}

inline void narrow(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * 4); }

inline void narrow(const float* src, c10::BFloat16* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = c10::BFloat16(src[i]);
}

// exp(x) for x <= 0 (scores minus their maximum), in a form the compiler vectorises:
// 2^(x log2 e) split into an integer power, set in the exponent bits, and a polynomial
// for the fraction.  Relative error below 2e-7; under -87 it flushes to 0.
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

struct Partial {  // one item's result for one query head: running max, sum, weighted values
  float* max;
  float* sum;
  float* acc;  // [D]
};

// Attend queries to the keys at `slots[0..n)`: for each of the `kv` KV heads, `nq` query
// rows (already scaled, float32, [kv, nq, D]), writing a partial result for each (head,
// query) in that order.  A key's slot holds all its heads side by side, so a tile of keys
// is read in whole rows.  `D` is the head size when it is one of the common ones (the
// loops then unroll), 0 for any other (`d` says it).
template <int64_t D, typename C>
void attend_chunk(const float* __restrict queries, int64_t kv, int64_t nq, const C* k_cache,
                  const C* v_cache, const int64_t* slots, int64_t n, int64_t d_any,
                  float softcap, const Partial* out, std::vector<float>& scratch) {
  const int64_t d = D > 0 ? D : d_any, width = kv * d, heads = kv * nq;
  scratch.resize(kTile * width + heads * (kTile + d + 2));
  float* __restrict rows = scratch.data();          // [kTile, kv * D] widened keys or values
  float* __restrict scores = rows + kTile * width;  // [kv * nq, kTile]
  float* __restrict acc = scores + heads * kTile;   // [kv * nq, D]
  float* __restrict maxima = acc + heads * d;       // [kv * nq]
  float* __restrict sums = maxima + heads;          // [kv * nq]
  std::fill(acc, acc + heads * d, 0.f);
  std::fill(maxima, maxima + heads, kNegInf);
  std::fill(sums, sums + heads, 0.f);
  for (int64_t start = 0; start < n; start += kTile) {
    const int64_t t_n = std::min(kTile, n - start);
    for (int64_t t = 0; t < t_n; ++t) widen(k_cache + slots[start + t] * width, rows + t * width, width);
    for (int64_t hq = 0; hq < heads; ++hq) {
      float* __restrict s = scores + hq * kTile;
      const float* __restrict query = queries + hq * d;
      const float* __restrict keys = rows + (hq / nq) * d;
      for (int64_t t = 0; t < t_n; ++t) {
        const float* __restrict key = keys + t * width;
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < d; ++i) dot += query[i] * key[i];
        s[t] = dot;
      }
      if (softcap > 0.f)
        for (int64_t t = 0; t < t_n; ++t) s[t] = std::tanh(s[t] / softcap) * softcap;
      float top = maxima[hq];
      for (int64_t t = 0; t < t_n; ++t) top = std::max(top, s[t]);
      const float rescale = maxima[hq] == kNegInf ? 0.f : std::exp(maxima[hq] - top);
      maxima[hq] = top;
      for (int64_t t = 0; t < t_n; ++t) s[t] -= top;
      exp_nonpositive(s, t_n);
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t t = 0; t < t_n; ++t) sum += s[t];
      sums[hq] = sums[hq] * rescale + sum;
      if (rescale != 1.f) {
        float* __restrict a = acc + hq * d;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) a[i] *= rescale;
      }
    }
    for (int64_t t = 0; t < t_n; ++t) widen(v_cache + slots[start + t] * width, rows + t * width, width);
    for (int64_t hq = 0; hq < heads; ++hq) {
      const float* __restrict p = scores + hq * kTile;
      const float* __restrict values = rows + (hq / nq) * d;
      float* __restrict a = acc + hq * d;
      for (int64_t t = 0; t < t_n; ++t) {
        const float* __restrict value = values + t * width;
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) a[i] += p[t] * value[i];
      }
    }
  }
  for (int64_t hq = 0; hq < heads; ++hq) {
    *out[hq].max = maxima[hq];
    *out[hq].sum = sums[hq];
    std::memcpy(out[hq].acc, acc + hq * d, d * 4);
  }
}

// attend_chunk for many queries per KV head (the rows that share keys): up to L queries sit
// in the vector lanes ([kv, D, L], zero-padded), so that scoring a tile of keys is D steps
// of one broadcast multiply-add per key into scores held in registers, and the softmax and
// the value sums run across the lanes: no horizontal sums, which the few-query loop needs
// once per key and query.  Same inputs and outputs as attend_chunk, with nq <= L.
template <int64_t D, int64_t L, typename C>
void attend_chunk_lanes(const float* __restrict queries, int64_t kv, int64_t nq,
                        const C* k_cache, const C* v_cache, const int64_t* slots, int64_t n,
                        int64_t d_any, float softcap, const Partial* out,
                        std::vector<float>& scratch) {
  const int64_t d = D > 0 ? D : d_any, width = kv * d, dl = d * L;
  scratch.resize(kTile * width + kv * (2 * dl + kTile * L + 2 * L));
  float* __restrict rows = scratch.data();          // [kTile, kv * D] keys or values
  float* __restrict qt = rows + kTile * width;      // [kv, D, L]
  float* __restrict acc = qt + kv * dl;             // [kv, D, L]
  float* __restrict scores = acc + kv * dl;         // [kv, kTile, L]
  float* __restrict maxima = scores + kv * kTile * L;  // [kv, L]
  float* __restrict sums = maxima + kv * L;         // [kv, L]
  std::fill(qt, qt + kv * dl, 0.f);
  for (int64_t h = 0; h < kv; ++h)
    for (int64_t j = 0; j < nq; ++j)
      for (int64_t i = 0; i < d; ++i) qt[h * dl + i * L + j] = queries[(h * nq + j) * d + i];
  std::fill(acc, acc + kv * dl, 0.f);
  std::fill(maxima, maxima + kv * L, kNegInf);
  std::fill(sums, sums + kv * L, 0.f);
  for (int64_t start = 0; start < n; start += kTile) {
    const int64_t t_n = std::min(kTile, n - start);
    for (int64_t t = 0; t < t_n; ++t) widen(k_cache + slots[start + t] * width, rows + t * width, width);
    std::fill(rows + t_n * width, rows + kTile * width, 0.f);  // a short last tile: zeros
    for (int64_t h = 0; h < kv; ++h) {
      float s[kTile][L] = {};
      const float* __restrict qh = qt + h * dl;
      const float* __restrict keys = rows + h * d;
      for (int64_t i = 0; i < d; ++i)
#pragma GCC unroll 16
        for (int64_t t = 0; t < kTile; ++t) {  // unrolled: 16 sums in registers
          const float k = keys[t * width + i];
#pragma omp simd
          for (int64_t j = 0; j < L; ++j) s[t][j] += k * qh[i * L + j];
        }
      if (softcap > 0.f)
        for (int64_t t = 0; t < t_n; ++t)
          for (int64_t j = 0; j < L; ++j) s[t][j] = std::tanh(s[t][j] / softcap) * softcap;
      float* __restrict mh = maxima + h * L;
      float top[L], rescale[L];
      for (int64_t j = 0; j < L; ++j) top[j] = mh[j];
      for (int64_t t = 0; t < t_n; ++t)
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) top[j] = std::max(top[j], s[t][j]);
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) rescale[j] = mh[j] - top[j];  // -inf at the start
      exp_nonpositive(rescale, L);
      float* __restrict p = scores + h * kTile * L;
      for (int64_t t = 0; t < kTile; ++t)
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) p[t * L + j] = t < t_n ? s[t][j] - top[j] : -100.f;
      exp_nonpositive(p, kTile * L);  // -100: 0 for the short tile's missing keys
      float* __restrict sh = sums + h * L;
#pragma omp simd
      for (int64_t j = 0; j < L; ++j) {
        float sum = sh[j] * rescale[j];
        for (int64_t t = 0; t < kTile; ++t) sum += p[t * L + j];
        sh[j] = sum;
        mh[j] = top[j];
      }
      float* __restrict ah = acc + h * dl;
      for (int64_t i = 0; i < d; ++i)
#pragma omp simd
        for (int64_t j = 0; j < L; ++j) ah[i * L + j] *= rescale[j];
    }
    for (int64_t t = 0; t < t_n; ++t) widen(v_cache + slots[start + t] * width, rows + t * width, width);
    for (int64_t h = 0; h < kv; ++h) {
      const float* __restrict p = scores + h * kTile * L;
      const float* __restrict values = rows + h * d;
      float* __restrict ah = acc + h * dl;
      for (int64_t i0 = 0; i0 < d; i0 += kBlock) {  // kBlock independent sums in registers
        const int64_t i_n = std::min(kBlock, d - i0);
        float a[kBlock][L];
        for (int64_t ii = 0; ii < i_n; ++ii)
          for (int64_t j = 0; j < L; ++j) a[ii][j] = ah[(i0 + ii) * L + j];
        for (int64_t t = 0; t < kTile; ++t)
#pragma GCC unroll 8
          for (int64_t ii = 0; ii < kBlock; ++ii) {
            const float v = ii < i_n ? values[t * width + i0 + ii] : 0.f;
#pragma omp simd
            for (int64_t j = 0; j < L; ++j) a[ii][j] += v * p[t * L + j];
          }
        for (int64_t ii = 0; ii < i_n; ++ii)
          for (int64_t j = 0; j < L; ++j) ah[(i0 + ii) * L + j] = a[ii][j];
      }
    }
  }
  for (int64_t h = 0; h < kv; ++h)
    for (int64_t j = 0; j < nq; ++j) {
      const Partial& o = out[h * nq + j];
      *o.max = maxima[h * L + j];
      *o.sum = sums[h * L + j];
      for (int64_t i = 0; i < d; ++i) o.acc[i] = acc[h * dl + i * L + j];
    }
}

// attend_chunk_lanes for any number of queries: groups of up to 32 lanes.
template <int64_t D, typename C>
void attend_lanes(const float* queries, int64_t kv, int64_t nq, const C* k_cache,
                  const C* v_cache, const int64_t* slots, int64_t n, int64_t d, float softcap,
                  const Partial* out, std::vector<float>& scratch) {
  std::vector<float> group;
  std::vector<Partial> group_out;
  for (int64_t first = 0; first < nq; first += 32) {
    const int64_t count = std::min<int64_t>(32, nq - first);
    group.resize(kv * count * d);
    group_out.clear();
    for (int64_t h = 0; h < kv; ++h) {
      std::memcpy(group.data() + h * count * d, queries + (h * nq + first) * d, count * d * 4);
      for (int64_t j = 0; j < count; ++j) group_out.push_back(out[h * nq + first + j]);
    }
    if (count <= 16)
      attend_chunk_lanes<D, 16>(group.data(), kv, count, k_cache, v_cache, slots, n, d, softcap, group_out.data(), scratch);
    else
      attend_chunk_lanes<D, 32>(group.data(), kv, count, k_cache, v_cache, slots, n, d, softcap, group_out.data(), scratch);
  }
}

// attend_chunk with the head size fixed at compile time where it is a common one.
template <typename C>
void attend_any(const float* queries, int64_t kv, int64_t nq, const C* k_cache, const C* v_cache,
                const int64_t* slots, int64_t n, int64_t d, float softcap, const Partial* out,
                std::vector<float>& scratch) {
  if (nq >= kManyQueries) {
    switch (d) {
      case 64:
        return attend_lanes<64>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
      case 128:
        return attend_lanes<128>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
      default:
        return attend_lanes<0>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
    }
  }
  switch (d) {
    case 64:
      return attend_chunk<64>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
    case 128:
      return attend_chunk<128>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
    case 256:
      return attend_chunk<256>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
    default:
      return attend_chunk<0>(queries, kv, nq, k_cache, v_cache, slots, n, d, softcap, out, scratch);
  }
}

struct Item {
  int64_t row;    // the sequence (own keys) or -1 (shared keys: every row in `shared_rows`)
  int64_t begin;  // first key: a column of own_slots, or an index into shared_slots
  int64_t end;
  int64_t part;   // the partial it writes (for shared items: past each row's own parts)
};

template <typename Q, typename C>
void run(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
         const at::Tensor& own_slots, const at::Tensor& own_begin, const at::Tensor& own_end,
         const at::Tensor& shared_rows, const at::Tensor& shared_slots, double scale,
         double softcap, at::Tensor& out) {
  const int64_t b_n = q.size(0), kv = q.size(1), groups = q.size(2), d = q.size(3);
  const int64_t own_width = own_slots.size(1);
  const int64_t* own = own_slots.data_ptr<int64_t>();
  const int64_t* begins = own_begin.data_ptr<int64_t>();
  const int64_t* ends = own_end.data_ptr<int64_t>();
  const int64_t n_shared_rows = shared_rows.size(0);
  const int64_t* s_rows = shared_rows.data_ptr<int64_t>();
  const int64_t* s_slots = shared_slots.data_ptr<int64_t>();
  const int64_t n_shared = n_shared_rows > 0 ? shared_slots.size(0) : 0;
  const int64_t num_slots = k_cache.size(0);

  std::vector<Item> items;
  std::vector<int64_t> own_parts(b_n);
  for (int64_t b = 0; b < b_n; ++b) {
    TORCH_CHECK(0 <= begins[b] && begins[b] <= ends[b] && ends[b] <= own_width,
                "paged_decode: key range out of bounds for row ", b);
    for (int64_t j = begins[b]; j < ends[b]; ++j)
      TORCH_CHECK(0 <= own[b * own_width + j] && own[b * own_width + j] < num_slots,
                  "paged_decode: slot out of bounds for row ", b);
    own_parts[b] = (ends[b] - begins[b] + kChunk - 1) / kChunk;
    for (int64_t c = 0; c < own_parts[b]; ++c)
      items.push_back({b, begins[b] + c * kChunk, std::min(ends[b], begins[b] + (c + 1) * kChunk), c});
  }
  for (int64_t r = 0; r < n_shared_rows; ++r)
    TORCH_CHECK(0 <= s_rows[r] && s_rows[r] < b_n, "paged_decode: shared row out of bounds");
  for (int64_t j = 0; j < n_shared; ++j)
    TORCH_CHECK(0 <= s_slots[j] && s_slots[j] < num_slots, "paged_decode: shared slot out of bounds");
  const int64_t shared_parts = (n_shared + kChunk - 1) / kChunk;
  for (int64_t c = 0; c < shared_parts; ++c)
    items.push_back({-1, c * kChunk, std::min(n_shared, (c + 1) * kChunk), c});
  int64_t parts = 0;
  for (int64_t b = 0; b < b_n; ++b) parts = std::max(parts, own_parts[b]);
  parts += shared_parts;

  // Partials: [B, Hkv, parts, G] maxima and sums, [B, Hkv, parts, G, D] sums of values.
  const int64_t cells = b_n * kv * parts * groups;
  std::vector<float> maxima(cells, kNegInf), sums(cells, 0.f), accs(cells * d, 0.f);
  auto cell = [&](int64_t b, int64_t h, int64_t p, int64_t g) {
    return ((b * kv + h) * parts + p) * groups + g;
  };
  std::vector<float> scaled(b_n * kv * groups * d);  // the queries times `scale`, float32
  {
    const Q* qp = q.data_ptr<Q>();
    widen(qp, scaled.data(), b_n * kv * groups * d);
    for (float& x : scaled) x *= static_cast<float>(scale);
  }
  const C* kc = k_cache.data_ptr<C>();
  const C* vc = v_cache.data_ptr<C>();
  const float cap = static_cast<float>(softcap);

  // Scores to compute: below kSerial the thread pool's wake-up costs more than it saves.
  int64_t work = n_shared * n_shared_rows;
  for (int64_t b = 0; b < b_n; ++b) work += ends[b] - begins[b];
  const int64_t n_items = static_cast<int64_t>(items.size());
  const int64_t grain = work * kv * groups < kSerial ? n_items : 1;
  at::parallel_for(0, n_items, grain, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch, queries;
    std::vector<Partial> partials;
    for (int64_t i = lo; i < hi; ++i) {
      const Item& it = items[i];
      partials.clear();
      if (it.row >= 0) {
        for (int64_t h = 0; h < kv; ++h)
          for (int64_t g = 0; g < groups; ++g) {
            const int64_t c = cell(it.row, h, it.part, g);
            partials.push_back({&maxima[c], &sums[c], &accs[c * d]});
          }
        attend_any(scaled.data() + it.row * kv * groups * d, kv, groups, kc, vc,
                   own + it.row * own_width + it.begin, it.end - it.begin, d, cap,
                   partials.data(), scratch);
      } else {  // every sharing row's queries of a KV head stand together: [kv, rows * G, D]
        const int64_t nq = n_shared_rows * groups;
        queries.resize(kv * nq * d);
        for (int64_t h = 0; h < kv; ++h)
          for (int64_t r = 0; r < n_shared_rows; ++r) {
            const int64_t b = s_rows[r];
            std::memcpy(queries.data() + (h * nq + r * groups) * d,
                        scaled.data() + (b * kv + h) * groups * d, groups * d * 4);
            for (int64_t g = 0; g < groups; ++g) {
              const int64_t c = cell(b, h, own_parts[b] + it.part, g);
              partials.push_back({&maxima[c], &sums[c], &accs[c * d]});
            }
          }
        attend_any(queries.data(), kv, nq, kc, vc, s_slots + it.begin, it.end - it.begin, d,
                   cap, partials.data(), scratch);
      }
    }
  });

  Q* op = out.data_ptr<Q>();
  std::vector<float> merged(d);
  for (int64_t b = 0; b < b_n; ++b)
    for (int64_t h = 0; h < kv; ++h)
      for (int64_t g = 0; g < groups; ++g) {
        float top = kNegInf;
        for (int64_t p = 0; p < parts; ++p) top = std::max(top, maxima[cell(b, h, p, g)]);
        float total = 0.f;
        std::fill(merged.begin(), merged.end(), 0.f);
        for (int64_t p = 0; p < parts; ++p) {
          const int64_t c = cell(b, h, p, g);
          if (maxima[c] == kNegInf) continue;
          const float w = std::exp(maxima[c] - top);
          total += sums[c] * w;
          for (int64_t i = 0; i < d; ++i) merged[i] += accs[c * d + i] * w;
        }
        const float inv = total > 0.f ? 1.f / total : 0.f;
        for (int64_t i = 0; i < d; ++i) merged[i] *= inv;
        narrow(merged.data(), op + ((b * kv + h) * groups + g) * d, d);
      }
}

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                        const at::Tensor& own_slots, const at::Tensor& own_begin,
                        const at::Tensor& own_end, const at::Tensor& shared_rows,
                        const at::Tensor& shared_slots, double scale, double softcap) {
  TORCH_CHECK(q.dim() == 4 && q.is_contiguous(), "paged_decode: q must be contiguous [B, Hkv, G, D]");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() && k_cache.scalar_type() == v_cache.scalar_type(),
              "paged_decode: caches must be contiguous [slots, Hkv, D] of one dtype");
  TORCH_CHECK(k_cache.size(1) == q.size(1) && k_cache.size(2) == q.size(3),
              "paged_decode: cache heads or head size differ from q's");
  for (const at::Tensor* t : {&own_slots, &own_begin, &own_end, &shared_rows, &shared_slots})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous(),
                "paged_decode: slot and range tensors must be contiguous int64");
  TORCH_CHECK(own_slots.dim() == 2 && own_slots.size(0) == q.size(0), "paged_decode: own_slots must be [B, L]");
  at::Tensor out = at::empty(q.sizes(), q.options());
  const auto qt = q.scalar_type(), ct = k_cache.scalar_type();
  if (qt == at::kFloat && ct == at::kFloat)
    run<float, float>(q, k_cache, v_cache, own_slots, own_begin, own_end, shared_rows, shared_slots, scale, softcap, out);
  else if (qt == at::kFloat && ct == at::kBFloat16)
    run<float, c10::BFloat16>(q, k_cache, v_cache, own_slots, own_begin, own_end, shared_rows, shared_slots, scale, softcap, out);
  else if (qt == at::kBFloat16 && ct == at::kFloat)
    run<c10::BFloat16, float>(q, k_cache, v_cache, own_slots, own_begin, own_end, shared_rows, shared_slots, scale, softcap, out);
  else if (qt == at::kBFloat16 && ct == at::kBFloat16)
    run<c10::BFloat16, c10::BFloat16>(q, k_cache, v_cache, own_slots, own_begin, own_end, shared_rows, shared_slots, scale, softcap, out);
  else
    TORCH_CHECK(false, "paged_decode: float32 and bfloat16 only, not ", qt, " with a ", ct, " cache");
  return out;
}

}  // namespace

TORCH_LIBRARY(limelight_kernels, m) {
  m.def("paged_decode(Tensor q, Tensor k_cache, Tensor v_cache, Tensor own_slots, Tensor own_begin, "
        "Tensor own_end, Tensor shared_rows, Tensor shared_slots, float scale, float softcap) -> Tensor");
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) { m.impl("paged_decode", &paged_decode); }
