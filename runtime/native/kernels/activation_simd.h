// Vector formulas of the activation kinds (activation.h), one ISA variant per build.
//
// exp is Cephes' single-precision scheme: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6
// polynomial, 2^n written into the exponent field; relative error ~2 ulp on [-87.3, 88]. Inputs
// are clamped to that range first (e^88 is finite; below e^-87.3 results would be denormal),
// with the value as the second operand of the clamps so that NaN stays NaN.
#pragma once

#include <cmath>
#include <cstring>

#include "activation.h"
#include "simd.h"

namespace fd {
namespace FD_NS {
namespace simd {

inline vf exp(vf x) {
  x = vmin(splat(88.0f), x);
  x = vmax(splat(-87.33654475f), x);
#if defined(__AVX512F__) && FD_VLEN == 16
  // n = round(x / ln2) in one rounding instruction; 2^n applied by vscalefps below.
  const vf n = (vf)_mm512_maskz_roundscale_ps(0xFFFF, (__m512)(x * splat(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer.
  const vf magic = splat(12582912.0f);
  const vf n = (x * splat(1.44269504088896341f) + magic) - magic;
#endif
  const vf r = (x - n * splat(0.693359375f)) - n * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
#if defined(__AVX512F__) && FD_VLEN == 16
  return (vf)_mm512_maskz_scalef_ps(0xFFFF, (__m512)p, (__m512)n);
#else
  const vi pow2n = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)pow2n;
#endif
}

// 1 / d from the hardware estimate and one Newton step (relative error ~1e-7 after the step,
// against a division that costs several times the whole exp on 512-bit vectors). Inf -> 0,
// 0 -> inf and NaN -> NaN as with the division.
// 1 / d for d in [1, FLT_MAX] or NaN (no zero or infinite d, whose estimates the Newton step
// would turn into NaN): the sigmoid's 1 + e^-x.
inline vf recip_of_at_least_one(vf d) {
#if defined(__AVX512F__) && FD_VLEN == 16
  const vf r = (vf)_mm512_maskz_rcp14_ps(0xFFFF, (__m512)d);
  return r * (splat(2.0f) - d * r);
#elif defined(__AVX__) && FD_VLEN == 8
  const vf r = (vf)_mm256_rcp_ps((__m256)d);
  return r * (splat(2.0f) - d * r);
#else
  return splat(1.0f) / d;
#endif
}

// e^-x <= e^88 after exp's clamp, so 1 + e^-x is finite and >= 1.
inline vf sigmoid(vf x) { return recip_of_at_least_one(splat(1.0f) + exp(-x)); }

// erf by Abramowitz and Stegun 7.1.26 (absolute error <= 1.5e-7), odd in x.
inline vf erf(vf x) {
  const vf a = vmin(splat(9.0f), vmax(splat(-9.0f), x));  // erf(+-9) is +-1 in float
  const vf z = select(a < splat(0.0f), -a, a);
  const vf t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * z);
  vf p = splat(1.061405429f);
  p = p * t + splat(-1.453152027f);
  p = p * t + splat(1.421413741f);
  p = p * t + splat(-0.284496736f);
  p = p * t + splat(0.254829592f);
  const vf r = splat(1.0f) - p * t * exp(-z * z);
  return select(a < splat(0.0f), -r, r);
}

// Lane by lane with the C library (exact, rounding as std:: does): for kinds outside hot paths.
template <typename F>
inline vf per_lane(vf v, F f) {
  float lanes[V];
  std::memcpy(lanes, &v, sizeof v);
  for (int i = 0; i < V; ++i) lanes[i] = f(lanes[i]);
  std::memcpy(&v, lanes, sizeof v);
  return v;
}

inline vf unit_clamp(vf t) { return vmin(splat(1.0f), vmax(splat(0.0f), t)); }

// One activation of any kind on a vector of output channel `channel`.
inline vf activate(vf v, const Activation& act, int64_t channel) {
  const vi negative = v < splat(0.0f);
  switch (act.kind) {
    case kActClip: return vmin(splat(act.hi), vmax(splat(act.lo), v));
    case kActLeakyRelu: return select(negative, v * splat(act.alpha), v);
    case kActPRelu: return select(negative, v * splat(act.slopes[channel]), v);
    case kActSigmoid: return sigmoid(v);
    case kActHardSigmoid: return unit_clamp(v * splat(act.alpha) + splat(act.beta));
    case kActSilu: return v * sigmoid(v);
    case kActTanh: return splat(2.0f) * sigmoid(v + v) - splat(1.0f);
    case kActElu: return select(negative, splat(act.alpha) * (exp(v) - splat(1.0f)), v);
    case kActHardSwish: return v * unit_clamp(v * splat(act.alpha) + splat(act.beta));
    case kActErf: return erf(v);
    case kActSqrt: return per_lane(v, [](float x) { return std::sqrt(x); });
    case kActExp: return per_lane(v, [](float x) { return std::exp(x); });
    case kActLog: return per_lane(v, [](float x) { return std::log(x); });
    case kActAbs: return (vf)((vi)v & ~(vi)splat(-0.0f));  // clear the sign bit
    case kActNeg: return -v;
    case kActReciprocal: return splat(1.0f) / v;
    case kActFloor: return per_lane(v, [](float x) { return std::floor(x); });
    case kActCeil: return per_lane(v, [](float x) { return std::ceil(x); });
    case kActSoftplus:
      return per_lane(v, [](float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); });
    case kActGelu: return splat(0.5f) * v * (splat(1.0f) + erf(v * splat(0.70710678118654752f)));
    case kActMish: {
      // tanh(log(1 + t)) = n / (n + 2) with n = t (t + 2), t = e^x; past x = 20 the ratio is 1.
      const vf t = exp(vmin(splat(20.0f), v));
      const vf n = t * (t + splat(2.0f));
      return v * n * recip_of_at_least_one(n + splat(2.0f));
    }
    default: return v;
  }
}

}  // namespace simd
}  // namespace FD_NS
}  // namespace fd
