// Attention of one sequence's prompt tokens over its paged KV cache with AMX tiles, each
// query's output the same bits whatever the other queries in the call are.  Registered as
// limelight_kernels::tile_attention; layers/attention.py calls it for each prompt chunk
// of a step (bfloat16 queries and cache, on CPUs that lend AMX tiles).
//
// Why hand-written: PyTorch's CPU flash attention sums a query's keys in an order that
// depends on the query's row in the call and on the number of keys, so a prompt token got
// other bits when the prefix cache cut its prompt elsewhere (layers/batch.py: ChunkSplit).
// Grouping positions and padding keys to PyTorch's blocks keeps the bits but pays for the
// padding, and the flash kernel does not use the tiles.  Here each query (a position and a
// query head) is one vector lane of a tile of 16; its keys are taken 32 at a time from key 0
// (blocks fixed by position, not by the call); a block's scores [32 keys, 16 queries] are
// one tile product chain over the head, folded into each lane's running maximum and sum
// across the lanes, and its values added with one more chain.  A block past a lane's last
// visible key leaves it as it was, exactly (its weights are zeros, its rescale 2^0 = 1), so
// how far the other lanes of its tile reach does not matter.
//
// Operands: keys are read in place, 16 rows of a cache block at a time (a gathered copy
// where the 16 slots are not consecutive, zeros past the last key); values are packed once
// a call, for 32 keys and 16 outputs as [16 outputs, 32 keys] (pairs of keys interleaved,
// then transposed); the queries of each tile as [16 input pairs, 16 queries].

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <climits>
#include <cstring>
#include <memory>
#include <vector>

#include "amx.h"
#include "convert.h"
#include "store.h"
#include "tile.h"
#if LIMELIGHT_AMX
#include "transpose.h"  // AVX-512, which every AMX CPU has
#endif

namespace limelight {
namespace {

constexpr int64_t kLanes = 16;  // queries a tile holds, one per vector lane
constexpr int64_t kKeys = 32;   // keys a block: one tile product's depth over keys
constexpr int64_t kGroup = 16;  // keys a tile of scores holds (rows of a key tile)
constexpr int64_t kDepth = 32;  // head inputs a tile product adds up
constexpr int64_t kOut = 16;    // head outputs a tile of values holds
constexpr int64_t kMaxHead = 256;

#if LIMELIGHT_AMX

// Memory that grows to the largest call and is kept: fresh pages for each layer's call
// cost more in page faults than the packing itself.
template <typename T>
struct Buffer {
  std::unique_ptr<T[]> memory;
  int64_t capacity = 0;

  T* data() const { return memory.get(); }
  void reserve(int64_t n) {
    if (n > capacity) memory.reset(new T[n]), capacity = n;
  }
};

// One call's operands in tile layout.  Keys are read in place where a group of 16 lies in
// consecutive slots (a cache block), else from a gathered copy (zeros past the last key).
struct Operands {
  int64_t kv, d, end, blocks, rows, tiles;  // blocks of kKeys keys; query rows a head, tiles
  Buffer<const uint16_t*> key_rows;  // [kv, blocks * 2] each group's first key row
  Buffer<int64_t> key_stride;        // [blocks * 2] bytes from a key's row to the next's
  Buffer<uint16_t> gathered;         // [kv, blocks * 2, 16, d] groups not in one block
  Buffer<uint16_t> values;           // [kv, blocks, d / 16, 16 outputs, 32 keys]
  Buffer<int32_t> queries;           // [kv, tiles, d / 32, 16 input pairs, 16 queries]
  Buffer<int32_t> positions;         // [tiles * 16] each row's position, -1 past the last

  const uint16_t* value_tile(int64_t h, int64_t b, int64_t c) const {
    return values.data() + ((h * blocks + b) * (d / kOut) + c) * kOut * kKeys;
  }
  const int32_t* query_tile(int64_t h, int64_t tile, int64_t s) const {
    return queries.data() + ((h * tiles + tile) * (d / kDepth) + s) * kLanes * kLanes;
  }
};

void place_keys(const uint16_t* cache, const int64_t* slots, int64_t h, Operands& o) {
  const int64_t width = o.kv * o.d;  // elements a cache slot
  for (int64_t g = 0; g < o.blocks * 2; ++g) {
    const int64_t first = g * kGroup, count = std::clamp<int64_t>(o.end - first, 0, kGroup);
    bool in_place = count == kGroup;
    for (int64_t i = 1; in_place && i < kGroup; ++i)
      in_place = slots[first + i] == slots[first] + i;
    if (in_place) {
      o.key_rows.data()[h * o.blocks * 2 + g] = cache + slots[first] * width + h * o.d;
      if (h == 0) o.key_stride.data()[g] = width * 2;
      continue;
    }
    uint16_t* copy = o.gathered.data() + (h * o.blocks * 2 + g) * kGroup * o.d;
    for (int64_t i = 0; i < kGroup; ++i) {
      if (i < count)
        std::memcpy(copy + i * o.d, cache + slots[first + i] * width + h * o.d, o.d * 2);
      else
        std::fill(copy + i * o.d, copy + (i + 1) * o.d, 0);
    }
    o.key_rows.data()[h * o.blocks * 2 + g] = copy;
    if (h == 0) o.key_stride.data()[g] = o.d * 2;
  }
}

// Values of head h as the first operand of the value product: for each 32 keys and 16
// outputs, [16 outputs, 32 keys].  Pairs of keys interleaved, then transposed as 32 bits.
void pack_values(const uint16_t* cache, const int64_t* slots, int64_t h, Operands& o) {
  const __m512i interleave = pair_interleave();
  const int64_t width = o.kv * o.d;
  for (int64_t b = 0; b < o.blocks; ++b)
    for (int64_t c = 0; c < o.d / kOut; ++c) {
      __m512i pairs[16];  // row p: outputs of keys 2p and 2p + 1, interleaved
      for (int64_t p = 0; p < kKeys / 2; ++p) {
        __m256i two[2];
        for (int64_t i = 0; i < 2; ++i) {
          const int64_t key = b * kKeys + 2 * p + i;
          two[i] = key < o.end ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                     cache + slots[key] * width + h * o.d + c * kOut))
                               : _mm256_setzero_si256();
        }
        const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(two[0]), two[1], 1);
        pairs[p] = _mm512_permutexvar_epi16(interleave, both);
      }
      transpose16(pairs);
      auto* out = reinterpret_cast<int32_t*>(const_cast<uint16_t*>(o.value_tile(h, b, c)));
      for (int j = 0; j < 16; ++j) _mm512_storeu_si512(out + kColumn.of[j] * 16, pairs[j]);
    }
}

constexpr float kLog2e = 1.44269504089f;

// 2^x for x <= 0 where it matters (the caller zeroes the weights of hidden keys): 2^k
// times a degree-5 polynomial of the rest on [-1/2, 1/2] (relative error 4e-7), whose
// constant is 1, so that 2^0 is 1 exactly.
inline __m512 exp2_weights(__m512 x) {
  const __m512 t = _mm512_max_ps(x, _mm512_set1_ps(-150.f));
  const __m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, k);
  __m512 p = _mm512_set1_ps(1.302133547142148e-3f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.661022573709488e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.551334470510483e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022412300109863e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931467056274414e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, k);
}

struct Rows {  // what a tile of query rows needs besides the operands
  __m512i position;  // each lane's; -1: a padding lane
  float scale, softcap;
  int64_t window;  // 0: none
};

// Which keys a block's lanes may not see, if any: the block is past some lane's position,
// or (with a window) before some lane's window.
inline bool block_hides(int64_t key0, int64_t lowest, int64_t last, int64_t window) {
  return key0 + kKeys - 1 > lowest || (window > 0 && key0 <= last - window);
}

// One tile of 16 query rows of head h against their keys: out [d, 16] (lane: query),
// divided by the sums.  Tiles: 0-3 a block's value sums (0-1 first its scores, keys by
// rows), 4 the queries, 5 and 7 keys or values, 6 the weights.
void attend_tile(const Operands& o, int64_t h, int64_t tile, const Rows& rows, float* out) {
  const int64_t d = o.d, segments = d / kDepth, outs = d / kOut;
  const __mmask16 real = _mm512_cmpge_epi32_mask(rows.position, _mm512_setzero_si512());
  if (!real) return;
  const int64_t last = _mm512_mask_reduce_max_epi32(real, rows.position);
  const int64_t lowest = _mm512_mask_reduce_min_epi32(real, rows.position);
  const int64_t first = rows.window > 0 ? std::max<int64_t>(0, lowest - rows.window + 1) : 0;
  alignas(64) float scores[kKeys * kLanes];  // [key, query]
  alignas(64) int32_t weights[kLanes * kLanes];  // [key pair, query]: 2 bfloat16
  alignas(64) float sums_of_block[4 * kOut * kLanes];
  const __m512 scale = _mm512_set1_ps(rows.scale), minus_inf = _mm512_set1_ps(kNegInf);
  const __m512 to_log2 = _mm512_set1_ps(rows.softcap > 0.f ? kLog2e : rows.scale * kLog2e);
  const __m512i window_start = _mm512_sub_epi32(rows.position, _mm512_set1_epi32(rows.window));
  const __m512i interleave = pair_interleave();
  __m512 maxima = minus_inf, sums = _mm512_setzero_ps();
  std::fill(out, out + d * kLanes, 0.f);

  for (int64_t b = first / kKeys; b <= last / kKeys; ++b) {
    // scores [32 keys, 16 queries]: tiles 0 and 1, the block's two groups of keys
    for (int64_t half = 0; half < 2; ++half) {
      const uint16_t* keys = o.key_rows.data()[h * o.blocks * 2 + 2 * b + half];
      const int64_t stride = o.key_stride.data()[2 * b + half];
      if (half == 0) _tile_zero(0); else _tile_zero(1);
      for (int64_t s = 0; s < segments; ++s) {
        _tile_loadd(4, o.query_tile(h, tile, s), 64);
        if (half == 0) {
          _tile_loadd(5, keys + s * kDepth, stride);
          _tile_dpbf16ps(0, 5, 4);
        } else {
          _tile_loadd(7, keys + s * kDepth, stride);
          _tile_dpbf16ps(1, 7, 4);
        }
      }
    }
    _tile_stored(0, scores, kLanes * 4);
    _tile_stored(1, scores + kGroup * kLanes, kLanes * 4);

    // capped (scaled first) where the model caps, hidden keys -inf; the new maxima.  The
    // scale goes into the exponent otherwise: max and exp of score x scale, one multiply.
    const int64_t key0 = b * kKeys;
    const bool hides = block_hides(key0, lowest, last, rows.window);
    __m512 top = maxima;
    for (int64_t k = 0; k < kKeys; ++k) {
      __m512 s = _mm512_load_ps(scores + k * kLanes);
      if (rows.softcap > 0.f) {
        alignas(64) float capped[kLanes];
        _mm512_store_ps(capped, _mm512_mul_ps(s, scale));
        for (float& x : capped) x = std::tanh(x / rows.softcap) * rows.softcap;
        s = _mm512_load_ps(capped);
      }
      if (hides) {
        const __m512i key = _mm512_set1_epi32(key0 + k);
        __mmask16 seen = _mm512_cmpge_epi32_mask(rows.position, key);
        if (rows.window > 0) seen &= _mm512_cmplt_epi32_mask(window_start, key);
        s = _mm512_mask_blend_ps(seen, minus_inf, s);
      }
      if (hides || rows.softcap > 0.f) _mm512_store_ps(scores + k * kLanes, s);
      top = _mm512_max_ps(top, s);
    }
    // a lane that sees nothing yet stays as it was (rescale 1, weights 0); one whose
    // maximum holds gets 2^0 = 1 exactly, so a block past its keys changes nothing
    const __mmask16 blind = _mm512_cmp_ps_mask(top, minus_inf, _CMP_EQ_OQ);
    const __m512 rescale = _mm512_mask_blend_ps(
        blind, exp2_weights(_mm512_mul_ps(_mm512_sub_ps(maxima, top), to_log2)),
        _mm512_set1_ps(1.f));
    maxima = top;
    __m512 block_sum = _mm512_setzero_ps();
    for (int64_t p = 0; p < kKeys / 2; ++p) {
      __m512 w[2];
      for (int i = 0; i < 2; ++i) {
        const __m512 s = _mm512_load_ps(scores + (2 * p + i) * kLanes);
        w[i] = exp2_weights(_mm512_mul_ps(_mm512_sub_ps(s, top), to_log2));
        if (hides)  // hidden keys weigh nothing (and blind lanes' NaNs go)
          w[i] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, minus_inf, _CMP_NEQ_OQ), w[i]);
        block_sum = _mm512_add_ps(block_sum, w[i]);
      }
      const __m512bh pair = _mm512_cvtne2ps_pbh(w[1], w[0]);  // key 2p low, 2p + 1 high
      _mm512_store_si512(weights + p * kLanes, _mm512_permutexvar_epi16(interleave, (__m512i)pair));
    }
    sums = _mm512_fmadd_ps(sums, rescale, block_sum);

    // the values, 16 outputs a tile: [16 outputs, 16 queries], added to the running sums
    _tile_loadd(6, weights, 64);
    for (int64_t c = 0; c < outs; c += 4) {
      const int64_t n = std::min<int64_t>(4, outs - c);
      _tile_zero(0);
      _tile_loadd(5, o.value_tile(h, b, c), 64);
      _tile_dpbf16ps(0, 5, 6);
      if (n > 1) {
        _tile_zero(1);
        _tile_loadd(7, o.value_tile(h, b, c + 1), 64);
        _tile_dpbf16ps(1, 7, 6);
      }
      if (n > 2) {
        _tile_zero(2);
        _tile_loadd(5, o.value_tile(h, b, c + 2), 64);
        _tile_dpbf16ps(2, 5, 6);
      }
      if (n > 3) {
        _tile_zero(3);
        _tile_loadd(7, o.value_tile(h, b, c + 3), 64);
        _tile_dpbf16ps(3, 7, 6);
      }
      _tile_stored(0, sums_of_block, kLanes * 4);
      if (n > 1) _tile_stored(1, sums_of_block + kOut * kLanes, kLanes * 4);
      if (n > 2) _tile_stored(2, sums_of_block + 2 * kOut * kLanes, kLanes * 4);
      if (n > 3) _tile_stored(3, sums_of_block + 3 * kOut * kLanes, kLanes * 4);
      float* acc = out + c * kOut * kLanes;
      for (int64_t i = 0; i < n * kOut; ++i)
        _mm512_store_ps(acc + i * kLanes,
                        _mm512_fmadd_ps(_mm512_load_ps(acc + i * kLanes), rescale,
                                        _mm512_load_ps(sums_of_block + i * kLanes)));
    }
  }
  const __mmask16 summed = _mm512_cmp_ps_mask(sums, _mm512_setzero_ps(), _CMP_GT_OQ);
  const __m512 inverse = _mm512_maskz_div_ps(summed, _mm512_set1_ps(1.f), sums);
  for (int64_t i = 0; i < d; ++i)
    _mm512_store_ps(out + i * kLanes, _mm512_mul_ps(_mm512_load_ps(out + i * kLanes), inverse));
}

void run(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
         const int64_t* slots, int64_t end, int64_t start, double scale, double softcap,
         int64_t window, at::Tensor& out) {
  const int64_t length = q.size(0), heads = q.size(1), d = q.size(2);
  const int64_t kv = k_cache.size(1), groups = heads / kv;
  thread_local Operands kept;  // the calling thread's: a reference, so that its workers fill it
  Operands& o = kept;
  o.kv = kv;
  o.d = d;
  o.end = end;
  o.blocks = (end + kKeys - 1) / kKeys;
  o.rows = length * groups;
  o.tiles = (o.rows + kLanes - 1) / kLanes;
  o.key_rows.reserve(kv * o.blocks * 2);
  o.key_stride.reserve(o.blocks * 2);
  o.gathered.reserve(kv * o.blocks * 2 * kGroup * d);
  o.values.reserve(kv * o.blocks * kKeys * d);
  o.queries.reserve(kv * o.tiles * kLanes * d / 2);
  o.positions.reserve(o.tiles * kLanes);
  int32_t* positions = o.positions.data();  // rows in (position, query head) order
  for (int64_t row = 0; row < o.tiles * kLanes; ++row)
    positions[row] = row < o.rows ? start + row / groups : -1;

  const auto* q_data = reinterpret_cast<const int32_t*>(q.data_ptr<c10::BFloat16>());
  const auto* k_data = reinterpret_cast<const uint16_t*>(k_cache.data_ptr<c10::BFloat16>());
  const auto* v_data = reinterpret_cast<const uint16_t*>(v_cache.data_ptr<c10::BFloat16>());
  at::parallel_for(0, kv, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t h = lo; h < hi; ++h) {
      place_keys(k_data, slots, h, o);
      pack_values(v_data, slots, h, o);
      for (int64_t tile = 0; tile < o.tiles; ++tile)  // row (position i, query head g)
        for (int64_t s = 0; s < d / kDepth; ++s) {
          const int64_t row = tile * kLanes, count = std::min<int64_t>(kLanes, o.rows - row);
          // rows of one position are `d` apart, positions `heads * d`: one row at a time
          alignas(64) int32_t rows[kLanes * kLanes];
          for (int64_t i = 0; i < count; ++i) {
            const int64_t r = row + i;
            std::memcpy(rows + i * kLanes,
                        q_data + (((r / groups) * heads + h * groups + r % groups) * d + s * kDepth) / 2,
                        kLanes * 4);
          }
          transpose_into(rows, kLanes, count,
                         const_cast<int32_t*>(o.query_tile(h, tile, s)));
        }
    }
  });

  // units (tile, head), dealt round-robin: later tiles reach more keys
  const int64_t units = o.tiles * kv;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), units);
  auto* result = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, threads, 1, [&](int64_t lo, int64_t hi) {
    configure_tiles();
    alignas(64) float by_output[kMaxHead * kLanes];
    alignas(64) float by_query[kLanes * kLanes];
    for (int64_t t = lo; t < hi; ++t)
      for (int64_t u = t; u < units; u += threads) {
        const int64_t tile = u / kv, h = u % kv;
        const Rows rows{_mm512_loadu_si512(positions + tile * kLanes), static_cast<float>(scale),
                        static_cast<float>(softcap), window};
        attend_tile(o, h, tile, rows, by_output);
        for (int64_t c = 0; c < d / kLanes; ++c) {  // [16 outputs, 16 queries] → by query
          transpose_into(reinterpret_cast<const int32_t*>(by_output) + c * kLanes * kLanes,
                         kLanes, kLanes, reinterpret_cast<int32_t*>(by_query));
          for (int64_t i = 0; i < kLanes; ++i) {
            const int64_t row = tile * kLanes + i;
            if (row >= o.rows) break;
            const int64_t at = ((row / groups) * heads + h * groups + row % groups) * d + c * kLanes;
            narrow(by_query + i * kLanes, result + at, kLanes);
          }
        }
      }
    _tile_release();
  });
}

#endif

bool tile_attention_usable() { return LIMELIGHT_AMX && amx_usable(); }

at::Tensor tile_attention(const at::Tensor& q, at::Tensor& k_cache, at::Tensor& v_cache,
                          const at::Tensor& slots, int64_t start, double scale, double softcap,
                          int64_t window, const std::optional<at::Tensor>& k_new,
                          const std::optional<at::Tensor>& v_new,
                          const std::optional<at::Tensor>& new_slots) {
  TORCH_CHECK(tile_attention_usable(), "tile_attention: this CPU lends no AMX tiles");
  TORCH_CHECK(q.dim() == 3 && q.is_contiguous() && q.scalar_type() == at::kBFloat16,
              "tile_attention: q must be contiguous bfloat16 [L, H, D]");
  TORCH_CHECK(k_cache.dim() == 3 && k_cache.is_contiguous() && v_cache.is_contiguous() &&
                  k_cache.sizes() == v_cache.sizes() &&
                  k_cache.scalar_type() == at::kBFloat16 &&
                  v_cache.scalar_type() == at::kBFloat16,
              "tile_attention: caches must be contiguous bfloat16 [slots, Hkv, D]");
  const int64_t length = q.size(0), heads = q.size(1), d = q.size(2), kv = k_cache.size(1);
  TORCH_CHECK(k_cache.size(2) == d && d % kDepth == 0 && d <= kMaxHead && heads % kv == 0,
              "tile_attention: head size ", d, " (a multiple of 32 up to 256, the cache's) or ", heads,
              " heads over ", kv, " KV heads do not fit");
  TORCH_CHECK(slots.dim() == 1 && slots.is_contiguous() && slots.scalar_type() == at::kLong,
              "tile_attention: slots must be contiguous int64 [start + L]");
  const int64_t end = slots.numel();
  TORCH_CHECK(start >= 0 && start + length == end,
              "tile_attention: ", end, " slots for ", length, " queries from position ", start);
  TORCH_CHECK(window >= 0, "tile_attention: negative window");
  const int64_t* at = slots.data_ptr<int64_t>();
  for (int64_t j = 0; j < end; ++j)
    TORCH_CHECK(0 <= at[j] && at[j] < k_cache.size(0), "tile_attention: slot out of bounds");
  store_new_keys("tile_attention", k_cache, v_cache, k_new, v_new, new_slots);
  at::Tensor out = at::empty({length, heads * d}, q.options());
  if (length == 0) return out;
#if LIMELIGHT_AMX
  run(q, k_cache, v_cache, at, end, start, scale, softcap, window, out);
#endif
  return out;
}

}  // namespace
}  // namespace limelight

TORCH_LIBRARY_FRAGMENT(limelight_kernels, m) {
  m.def(
      "tile_attention(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor slots, "
      "int start, float scale, float softcap, int window, Tensor? k_new=None, "
      "Tensor? v_new=None, Tensor? new_slots=None) -> Tensor");
  m.def("tile_attention_usable() -> bool", &limelight::tile_attention_usable);
}

TORCH_LIBRARY_IMPL(limelight_kernels, CPU, m) {
  m.impl("tile_attention", &limelight::tile_attention);
}
