// What both attention kernels do first: the step's new keys and values into their cache
// slots, checked, so that a kernel reads them with the rest.

#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstring>
#include <optional>

namespace limelight {

// k_new, v_new [N, Hkv, D] in the cache's dtype to slots new_slots [N]; nothing without
// new_slots.  `kernel` names the caller in errors.
inline void store_new_keys(const char* kernel, at::Tensor& k_cache, at::Tensor& v_cache,
                           const std::optional<at::Tensor>& k_new,
                           const std::optional<at::Tensor>& v_new,
                           const std::optional<at::Tensor>& new_slots) {
  if (!new_slots.has_value()) return;
  TORCH_CHECK(k_new.has_value() && v_new.has_value(), kernel,
              ": new_slots needs k_new and v_new");
  const at::Tensor& slots = *new_slots;
  const int64_t n = slots.numel();
  TORCH_CHECK(slots.scalar_type() == at::kLong && slots.is_contiguous(), kernel,
              ": new_slots must be contiguous int64");
  for (const at::Tensor* t : {&*k_new, &*v_new})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == k_cache.scalar_type() &&
                    t->dim() == 3 && t->size(0) == n && t->size(1) == k_cache.size(1) &&
                    t->size(2) == k_cache.size(2),
                kernel, ": k_new and v_new must be contiguous [N, Hkv, D] in the cache's dtype");
  const int64_t* at = slots.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(0 <= at[i] && at[i] < k_cache.size(0), kernel, ": new slot out of bounds");
  const int64_t row = k_cache.size(1) * k_cache.size(2) * k_cache.element_size();
  auto* k_dst = static_cast<char*>(k_cache.data_ptr());
  auto* v_dst = static_cast<char*>(v_cache.data_ptr());
  const auto* k_src = static_cast<const char*>(k_new->data_ptr());
  const auto* v_src = static_cast<const char*>(v_new->data_ptr());
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(k_dst + at[i] * row, k_src + i * row, row);
    std::memcpy(v_dst + at[i] * row, v_src + i * row, row);
  }
}

}  // namespace limelight
