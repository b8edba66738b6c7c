// Activation functions, described once: a kind plus parameters (as ONNX Runtime's FusedConv
// carries an activation name and its parameters). Every conv epilogue, the generated conv code
// and the element-wise steps apply them through this header (scalar) and
// kernels/activation_simd.h (vector, one ISA variant per build).
//
// Adding an activation: a kind below (with its name in kActivationNames and its scalar formula in
// Activation::apply), its vector formula in kernels/activation_simd.h, and its ONNX operator in
// runtime/ops/activation.py. docs/ADDING_AN_OP.md lists exactly that.
//
// NaN propagates: every formula returns NaN for a NaN input (ONNX Runtime does too), including
// the clamps (x < lo ? lo : x keeps a NaN x).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace fd {

enum ActKind : int {
  kActNone = 0,
  kActClip = 1,         // clamp to [lo, hi]: Relu = [0, inf), Relu6 = [0, 6]
  kActLeakyRelu = 2,    // x < 0 ? alpha * x : x
  kActPRelu = 3,        // x < 0 ? slopes[channel] * x : x
  kActSigmoid = 4,      // 1 / (1 + exp(-x))
  kActHardSigmoid = 5,  // clamp(alpha * x + beta, 0, 1)
  kActSilu = 6,         // x * sigmoid(x)
  kActTanh = 7,         // tanh(x)
  kActElu = 8,          // x < 0 ? alpha * (exp(x) - 1) : x
  kActHardSwish = 9,    // x * clamp(alpha * x + beta, 0, 1)   (ONNX: alpha 1/6, beta 0.5)
  // Element-wise functions of the same machinery (standalone unary steps, or fused after a
  // conv like any activation).
  kActErf = 10,
  kActSqrt = 11,
  kActExp = 12,
  kActLog = 13,
  kActAbs = 14,
  kActNeg = 15,
  kActReciprocal = 16,
  kActFloor = 17,
  kActCeil = 18,
  kActSoftplus = 19,    // log(1 + exp(x))
  kActGelu = 20,        // x / 2 * (1 + erf(x / sqrt(2)))
  kActKinds = 21,
};

// Index = kind; exported to Python (runtime._native.activation_kinds()).
inline constexpr const char* kActivationNames[kActKinds] = {
    "none", "clip", "leaky_relu", "prelu", "sigmoid", "hard_sigmoid", "silu", "tanh", "elu",
    "hard_swish", "erf", "sqrt", "exp", "log", "abs", "neg", "reciprocal", "floor", "ceil",
    "softplus", "gelu"};

// The form kernels carry (plain data: copied into every kernel call). `slopes` points into the
// owning step's storage (ActivationSpec), one value per output channel.
struct Activation {
  int kind = kActNone;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  float alpha = 0.0f, beta = 0.0f;
  const float* slopes = nullptr;

  // True for the kinds the kernels' inline epilogue handles (no activation, or a clamp); the
  // others go through the out-of-line vector formulas after the store.
  bool is_clamp() const { return kind == kActNone || kind == kActClip; }

  float apply(float x, int64_t channel = 0) const {
    switch (kind) {
      case kActClip:
        x = x < lo ? lo : x;
        return x > hi ? hi : x;
      case kActLeakyRelu: return x < 0.0f ? alpha * x : x;
      case kActPRelu: return x < 0.0f ? slopes[channel] * x : x;
      case kActSigmoid: return 1.0f / (1.0f + std::exp(-x));
      case kActHardSigmoid: return unit_clamp(alpha * x + beta);
      case kActSilu: return x / (1.0f + std::exp(-x));
      case kActTanh: return std::tanh(x);
      case kActElu: return x < 0.0f ? alpha * std::expm1(x) : x;
      case kActHardSwish: return x * unit_clamp(alpha * x + beta);
      case kActErf: return std::erf(x);
      case kActSqrt: return std::sqrt(x);
      case kActExp: return std::exp(x);
      case kActLog: return std::log(x);
      case kActAbs: return std::fabs(x);
      case kActNeg: return -x;
      case kActReciprocal: return 1.0f / x;
      case kActFloor: return std::floor(x);
      case kActCeil: return std::ceil(x);
      case kActSoftplus: return x > 20.0f ? x : std::log1p(std::exp(x));
      case kActGelu: return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
      default: return x;
    }
  }

 private:
  static float unit_clamp(float t) {
    t = t < 0.0f ? 0.0f : t;
    return t > 1.0f ? 1.0f : t;
  }
};

// The form steps own and Python sets (runtime._native.ActivationSpec): the parameters plus the
// per-channel slopes of PRelu.
struct ActivationSpec {
  int kind = kActNone;
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  float alpha = 0.0f, beta = 0.0f;
  std::vector<float> slopes;

  // Kernels' form; valid while this spec lives and is not modified.
  Activation view() const {
    Activation a;
    a.kind = kind;
    a.lo = lo;
    a.hi = hi;
    a.alpha = alpha;
    a.beta = beta;
    a.slopes = slopes.empty() ? nullptr : slopes.data();
    return a;
  }

  // For a step whose channel index ranges over [0, channels).
  void validate(int64_t channels, const std::string& step) const {
    if (kind < 0 || kind >= kActKinds)
      throw std::invalid_argument(step + ": unknown activation kind " + std::to_string(kind));
    if (kind == kActClip && !(lo <= hi))
      throw std::invalid_argument(step + ": clip bounds need lo <= hi");
    if (kind == kActPRelu && static_cast<int64_t>(slopes.size()) < channels)
      throw std::invalid_argument(step + ": PRelu needs one slope per channel");
  }
};

}  // namespace fd
