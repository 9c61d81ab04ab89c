// Attention over the paged KV cache on the CPU for rows of one query token each: a decode
// step's sequences (layers/batch.py: KernelKeys).  Registered as limelight_kernels::paged_decode; built and loaded by kernels/__init__.py,
// whose docstring says why it is hand-written and what it measured.
//
// Each row's keys are read straight from their cache slots (no gathered copy, no cast of
// the cache).  Work is cut into items of one row and up to kChunk of its keys, all KV
// heads at once; keys that several rows share (one character's users) are items of their own, attended by all of those rows' queries, so that
// each shared key is read once a step.  Items are dealt to ATen's threads by their cost
// (attend.h has their loops) and leave partial results, merged per row and query head at
// the end.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "attend.h"
#include "attend_tiles.h"
#include "store.h"

namespace limelight {
namespace {

constexpr int64_t kChunk = 128;    // keys per work item
constexpr int64_t kSerial = 2048;  // scores in a call below which it runs on one thread
constexpr int64_t kItemCost = 16;  // an item's fixed cost, in keys read by one row

// The slot and range arguments, checked against the cache so that no item reads outside it.
struct Keys {
  const int64_t* own;  // [B, width]: row b's keys are own[b, begin[b]:end[b]]
  int64_t width;
  const int64_t* begin;
  const int64_t* end;
  const int64_t* shared_rows;  // [R] rows that also attend to shared_slots [S]
  int64_t num_shared_rows;
  const int64_t* shared_slots;
  int64_t num_shared;  // 0 when no row shares

  Keys(const at::Tensor& own_slots, const at::Tensor& own_begin, const at::Tensor& own_end,
       const at::Tensor& rows, const at::Tensor& slots, int64_t num_slots)
      : own(own_slots.data_ptr<int64_t>()),
        width(own_slots.size(1)),
        begin(own_begin.data_ptr<int64_t>()),
        end(own_end.data_ptr<int64_t>()),
        shared_rows(rows.data_ptr<int64_t>()),
        num_shared_rows(rows.numel()),
        shared_slots(slots.data_ptr<int64_t>()),
        num_shared(rows.numel() > 0 ? slots.numel() : 0) {
    const int64_t b_n = own_slots.size(0);
    for (int64_t b = 0; b < b_n; ++b) {
      TORCH_CHECK(0 <= begin[b] && begin[b] <= end[b] && end[b] <= width,
                  "paged_decode: key range out of bounds for row ", b);
      for (int64_t j = begin[b]; j < end[b]; ++j)
        TORCH_CHECK(0 <= own[b * width + j] && own[b * width + j] < num_slots,
                    "paged_decode: slot out of bounds for row ", b);
    }
    for (int64_t r = 0; r < num_shared_rows; ++r)
      TORCH_CHECK(0 <= shared_rows[r] && shared_rows[r] < b_n,
                  "paged_decode: shared row out of bounds");
    for (int64_t j = 0; j < num_shared; ++j)
      TORCH_CHECK(0 <= shared_slots[j] && shared_slots[j] < num_slots,
                  "paged_decode: shared slot out of bounds");
  }
};

struct Item {
  int64_t row;    // the sequence (own keys), or -1: shared keys, for every sharing row
  int64_t begin;  // first key: a column of the row's own slots, or an index into shared ones
  int64_t end;
  int64_t part;  // which of the row's partial results it writes (shared: past the own ones)
};

// The items of a call and where their partial results go: [B, Hkv, parts, G] maxima and
// sums and [B, Hkv, parts, G, D] weighted values, merged by `merge`.
struct Plan {
  std::vector<Item> items;
  std::vector<int64_t> own_parts;  // [B] items over each row's own keys
  int64_t parts = 0;
  int64_t kv, groups, d;
  std::vector<float> maxima, sums, accs;

  Plan(const Keys& keys, int64_t b_n, int64_t kv, int64_t groups, int64_t d)
      : own_parts(b_n), kv(kv), groups(groups), d(d) {
    for (int64_t b = 0; b < b_n; ++b) {
      own_parts[b] = (keys.end[b] - keys.begin[b] + kChunk - 1) / kChunk;
      parts = std::max(parts, own_parts[b]);
      for (int64_t c = 0, first = keys.begin[b]; c < own_parts[b]; ++c, first += kChunk)
        items.push_back({b, first, std::min(keys.end[b], first + kChunk), c});
    }
    const int64_t shared_parts = (keys.num_shared + kChunk - 1) / kChunk;
    for (int64_t c = 0, first = 0; c < shared_parts; ++c, first += kChunk)
      items.push_back({-1, first, std::min(keys.num_shared, first + kChunk), c});
    parts += shared_parts;
    const int64_t cells = b_n * kv * parts * groups;
    maxima.assign(cells, kNegInf);
    sums.assign(cells, 0.f);
    accs.assign(cells * d, 0.f);
  }

  int64_t cell(int64_t row, int64_t head, int64_t part, int64_t query) const {
    return ((row * kv + head) * parts + part) * groups + query;
  }

  // Where an item's chunk leaves its results, in its queries' (KV head, query) order: the
  // row's query heads, or for shared keys every sharing row's.
  void partials(const Item& item, const Keys& keys, std::vector<Partial>& out) {
    out.clear();
    for (int64_t h = 0; h < kv; ++h) {
      const int64_t rows = item.row >= 0 ? 1 : keys.num_shared_rows;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = item.row >= 0 ? item.row : keys.shared_rows[r];
        const int64_t part = item.row >= 0 ? item.part : own_parts[row] + item.part;
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t c = cell(row, h, part, g);
          out.push_back({&maxima[c], &sums[c], &accs[c * d]});
        }
      }
    }
  }

  // Each query head's partial results weighted by exp(their max - the overall max),
  // divided by the weighted sum: out [B, Hkv, G, D].
  template <typename Q>
  void merge(Q* out) const {
    std::vector<float> merged(d);
    for (int64_t head = 0; head < static_cast<int64_t>(own_parts.size()) * kv * groups; ++head) {
      const int64_t bh = head / groups, g = head % groups;  // (row, KV head), query
      float top = kNegInf, total = 0.f;
      for (int64_t p = 0; p < parts; ++p)
        top = std::max(top, maxima[(bh * parts + p) * groups + g]);
      std::fill(merged.begin(), merged.end(), 0.f);
      for (int64_t p = 0; p < parts; ++p) {
        const int64_t c = (bh * parts + p) * groups + g;
        if (maxima[c] == kNegInf) continue;  // a part this row has not
        const float w = std::exp(maxima[c] - top);
        total += sums[c] * w;
        for (int64_t i = 0; i < d; ++i) merged[i] += accs[c * d + i] * w;
      }
      const float inv = total > 0.f ? 1.f / total : 0.f;
      for (int64_t i = 0; i < d; ++i) merged[i] *= inv;
      narrow(merged.data(), out + head * d, d);
    }
  }
};

// The queries as float32 times the scale: [B, Hkv, G, D].
std::vector<float> scaled_queries(const at::Tensor& q, double scale) {
  std::vector<float> scaled(q.numel());
  if (q.scalar_type() == at::kFloat)
    widen(q.data_ptr<float>(), scaled.data(), q.numel());
  else
    widen(q.data_ptr<c10::BFloat16>(), scaled.data(), q.numel());
  for (float& x : scaled) x *= static_cast<float>(scale);
  return scaled;
}

// The sharing rows' queries of each KV head side by side: [kv, rows * G, D].
void gather_shared_queries(const std::vector<float>& scaled, const Keys& keys, int64_t kv,
                           int64_t groups, int64_t d, std::vector<float>& out) {
  const int64_t nq = keys.num_shared_rows * groups;
  out.resize(kv * nq * d);
  for (int64_t h = 0; h < kv; ++h)
    for (int64_t r = 0; r < keys.num_shared_rows; ++r)
      std::memcpy(out.data() + (h * nq + r * groups) * d,
                  scaled.data() + (keys.shared_rows[r] * kv + h) * groups * d, groups * d * 4);
}

// The items dealt out to `threads` threads by their cost (keys times the rows that read
// them), each in turn, dearest first, to the least loaded: a chunk of shared keys costs as
// much as many rows' own chunks, which come first in the list, so cutting the list into
// contiguous parts (as at::parallel_for does) left one thread with nearly all the work.
std::vector<std::vector<int64_t>> deal(const std::vector<Item>& items, const Keys& keys,
                                       int64_t threads) {
  const auto cost = [&](const Item& item) {
    return (item.end - item.begin) * (item.row >= 0 ? 1 : keys.num_shared_rows) + kItemCost;
  };
  std::vector<int64_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return cost(items[a]) > cost(items[b]); });
  std::vector<std::vector<int64_t>> shares(threads);
  std::vector<int64_t> loads(threads, 0);
  for (const int64_t i : order) {
    const int64_t t = std::min_element(loads.begin(), loads.end()) - loads.begin();
    shares[t].push_back(i);
    loads[t] += cost(items[i]);
  }
  return shares;
}

template <typename C>
void run(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
         const Keys& keys, double scale, double softcap, at::Tensor& out) {
  const int64_t b_n = q.size(0), kv = q.size(1), groups = q.size(2), d = q.size(3);
  Plan plan(keys, b_n, kv, groups, d);
  const std::vector<float> scaled = scaled_queries(q, scale);
  std::vector<float> shared_queries;
  gather_shared_queries(scaled, keys, kv, groups, d, shared_queries);
  const Chunk<C> base{nullptr, kv, groups, d, k_cache.data_ptr<C>(), v_cache.data_ptr<C>(),
                      nullptr, 0, static_cast<float>(softcap), nullptr};
  const bool tiles = tiles_take<C>(d);  // the tile loop (attend_tiles.h)

  int64_t scores = keys.num_shared * keys.num_shared_rows;
  for (int64_t b = 0; b < b_n; ++b) scores += keys.end[b] - keys.begin[b];
  const int64_t n_items = static_cast<int64_t>(plan.items.size());
  const int64_t threads =
      scores * kv * groups < kSerial ? 1 : std::min<int64_t>(at::get_num_threads(), n_items);
  const std::vector<std::vector<int64_t>> shares = deal(plan.items, keys, threads);
  at::parallel_for(0, threads, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch;
    std::vector<Partial> partials;
    const TileScope scope(tiles);
    for (int64_t t = lo; t < hi; ++t)
      for (const int64_t i : shares[t]) {
        const Item& item = plan.items[i];
        Chunk<C> chunk = base;
        chunk.n = item.end - item.begin;
        if (item.row >= 0) {
          chunk.queries = scaled.data() + item.row * kv * groups * d;
          chunk.slots = keys.own + item.row * keys.width + item.begin;
        } else {
          chunk.queries = shared_queries.data();
          chunk.nq = keys.num_shared_rows * groups;
          chunk.slots = keys.shared_slots + item.begin;
        }
        plan.partials(item, keys, partials);
        chunk.out = partials.data();
        attend_chunk(chunk, scratch, tiles);
      }
  });
  if (q.scalar_type() == at::kFloat)
    plan.merge(out.data_ptr<float>());
  else
    plan.merge(out.data_ptr<c10::BFloat16>());
}

bool is_float_or_bfloat16(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
}

at::Tensor paged_decode(const at::Tensor& q, at::Tensor& k_cache, at::Tensor& v_cache,
                        const at::Tensor& own_slots, const at::Tensor& own_begin,
                        const at::Tensor& own_end, const at::Tensor& shared_rows,
                        const at::Tensor& shared_slots, double scale, double softcap,
                        const std::optional<at::Tensor>& k_new,
                        const std::optional<at::Tensor>& v_new,
                        const std::optional<at::Tensor>& new_slots) {
  TORCH_CHECK(q.dim() == 4 && q.is_contiguous(),
              "paged_decode: q must be contiguous [B, Hkv, G, D]");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() &&
                  k_cache.scalar_type() == v_cache.scalar_type(),
              "paged_decode: caches must be contiguous [slots, Hkv, D] of one dtype");
  TORCH_CHECK(is_float_or_bfloat16(q) && is_float_or_bfloat16(k_cache),
              "paged_decode: float32 and bfloat16 only, not ", q.scalar_type(), " with a ",
              k_cache.scalar_type(), " cache");
  TORCH_CHECK(k_cache.size(1) == q.size(1) && k_cache.size(2) == q.size(3),
              "paged_decode: cache heads or head size differ from q's");
  for (const at::Tensor* t : {&own_slots, &own_begin, &own_end, &shared_rows, &shared_slots})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous(),
                "paged_decode: slot and range tensors must be contiguous int64");
  const int64_t b_n = q.size(0);
  TORCH_CHECK(own_slots.dim() == 2 && own_slots.size(0) == b_n && own_begin.numel() == b_n &&
                  own_end.numel() == b_n,
              "paged_decode: own_slots must be [B, L], own_begin and own_end [B]");
  const Keys keys(own_slots, own_begin, own_end, shared_rows, shared_slots, k_cache.size(0));
  store_new_keys("paged_decode", k_cache, v_cache, k_new, v_new, new_slots);
  at::Tensor out = at::empty(q.sizes(), q.options());
  if (k_cache.scalar_type() == at::kFloat)
    run<float>(q, k_cache, v_cache, keys, scale, softcap, out);
  else
    run<c10::BFloat16>(q, k_cache, v_cache, keys, scale, softcap, out);
  return out;
}

}  // namespace
}  // namespace limelight

TORCH_LIBRARY(limelight_kernels, m) {
  m.def(
      "paged_decode(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor own_slots, "
      "Tensor own_begin, Tensor own_end, Tensor shared_rows, Tensor shared_slots, "
      "float scale, float softcap, Tensor? k_new=None, Tensor? v_new=None, "
      "Tensor? new_slots=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) {
  m.impl("paged_decode", &limelight::paged_decode);
}
