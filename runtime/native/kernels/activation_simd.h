// Vector formulas of the activation kinds (activation.h), one ISA variant per build.
//
// exp is Cephes' single-precision scheme: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6
// polynomial, 2^n written into the exponent field; relative error ~2 ulp on [-87.3, 88]. Inputs
// are clamped to that range first (e^88 is finite; below e^-87.3 results would be denormal),
// with the value as the second operand of the clamps so that NaN stays NaN.
#pragma once

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

inline vf sigmoid(vf x) { return splat(1.0f) / (splat(1.0f) + exp(-x)); }

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
    default: return v;
  }
}

}  // namespace simd
}  // namespace FD_NS
}  // namespace fd
