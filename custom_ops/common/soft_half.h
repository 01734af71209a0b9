// Software IEEE binary16 (float16) and bfloat16 for the host: storage types
// with round-to-nearest-even conversions from float and exact conversions to
// float, the behaviour of CUDA's __float2half_rn / __half2float and
// __float2bfloat16_rn / __bfloat162float. Used by the CUDA emulation
// (cuda_emulation.h) so that the half-precision kernels run on any host CPU
// with the same rounding as on the GPU; standard C++ only, no compiler
// extension (_Float16 / __bf16 support differs between GCC versions and
// targets).
//
// Formats: IEEE 754-2008 binary16 (1 sign, 5 exponent, 10 fraction bits);
// bfloat16 = the upper 16 bits of an IEEE binary32 (8 exponent, 7 fraction).
#ifndef PADDLESEG_EXT_SOFT_HALF_H_
#define PADDLESEG_EXT_SOFT_HALF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace soft_half {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// binary32 -> binary16, round to nearest, ties to even; overflow gives inf,
// NaN stays a (quiet) NaN.
inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u) {  // inf, NaN
    return static_cast<uint16_t>(sign | 0x7c00u | (mag > 0x7f800000u ? 0x200u : 0u));
  }
  if (mag < 0x38800000u) {  // below 2^-14: a binary16 subnormal (or 0)
    // Multiples of 2^-24; scaling by 2^24 is exact, nearbyint rounds to
    // nearest even in the default rounding mode. 1024 is the smallest normal.
    const float units = std::nearbyint(bits_float(mag) * 16777216.0f);
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(units));
  }
  // Drop 13 fraction bits with ties to even; a carry moves into the exponent.
  const uint32_t rounded = mag + 0xfffu + ((mag >> 13) & 1u);
  const uint32_t h = (rounded >> 13) - ((127u - 15u) << 10);
  return static_cast<uint16_t>(sign | (h >= 0x7c00u ? 0x7c00u : h));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t frac = h & 0x3ffu;
  if (exp == 0) {  // subnormal: frac * 2^-24, exact in binary32
    const float v = std::ldexp(static_cast<float>(frac), -24);
    return sign != 0 ? -v : v;
  }
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (frac << 13));
  return bits_float(sign | ((exp + 127u - 15u) << 23) | (frac << 13));
}

// binary32 -> bfloat16, round to nearest, ties to even.
inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  }
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bfloat16_bits_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

// Storage types: 2 bytes, trivially copyable, no arithmetic (kernels convert
// to float to compute, as CUDA code does with __half2float).
struct Half {
  uint16_t bits;
};

struct BFloat16 {
  uint16_t bits;
};

static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2, "2-byte storage");

inline Half to_half(float f) { return Half{float_to_half_bits(f)}; }
inline float from_half(Half h) { return half_bits_to_float(h.bits); }
inline BFloat16 to_bfloat16(float f) { return BFloat16{float_to_bfloat16_bits(f)}; }
inline float from_bfloat16(BFloat16 b) { return bfloat16_bits_to_float(b.bits); }

}  // namespace soft_half

#endif  // PADDLESEG_EXT_SOFT_HALF_H_
