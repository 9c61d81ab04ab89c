// Conversions between the tensors' element types and float32, for the kernels' inner loops.

#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace limelight {

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

}  // namespace limelight
