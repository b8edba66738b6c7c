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
  // n = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer.
  const vf magic = splat(12582912.0f);
  const vf n = (x * splat(1.44269504088896341f) + magic) - magic;
  const vf r = (x - n * splat(0.693359375f)) - n * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * (r * r) + r + splat(1.0f);
  const vi pow2n = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)pow2n;
}

// 1 / d from the hardware estimate and one Newton step (relative error ~1e-7 after the step,
// against a division that costs several times the whole exp on 512-bit vectors). Inf -> 0,
// 0 -> inf and NaN -> NaN as with the division.
inline vf recip(vf d) {
#if defined(__AVX512F__) && FD_VLEN == 16
  const vf r = (vf)_mm512_maskz_rcp14_ps(0xFFFF, (__m512)d);
#elif defined(__AVX__) && FD_VLEN == 8
  const vf r = (vf)_mm256_rcp_ps((__m256)d);
#else
  return splat(1.0f) / d;
#endif
#if (defined(__AVX512F__) && FD_VLEN == 16) || (defined(__AVX__) && FD_VLEN == 8)
  const vf refined = r * (splat(2.0f) - d * r);
  // The Newton step turns the estimate's exact 0 (d = inf) and inf (d = 0) into NaN: keep them.
  return select((r == splat(0.0f)) | (d == splat(0.0f)), r, refined);
#endif
}

inline vf sigmoid(vf x) { return recip(splat(1.0f) + exp(-x)); }

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
    default: return v;
  }
}

}  // namespace simd
}  // namespace FD_NS
}  // namespace fd
