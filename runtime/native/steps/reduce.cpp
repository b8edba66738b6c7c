// Reductions over any subset of the four dims of a view (ReduceMean, ReduceSum, ReduceMax,
// ReduceMin, ReduceSumSquare, ReduceL2, ReduceProd), and layer normalization over the last dim
// of a (rows, features) view (LayerNormalization, with scale and bias per feature).
//
// Loop structure: the destination's elements are split across threads; each sums its window of
// the source in double (max / min in float, NaN winning), the innermost reduced dim
// contiguous in the common case (channels of a position, or a row). Layer norm: rows across
// threads, two passes per row (mean, then variance), then the normalized row.
// References: runtime/ops/reduce.py, runtime/ops/normalization.py.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "steps/bind.h"

namespace fd {

namespace {

enum ReduceOp : int { kSum = 0, kMean = 1, kMax = 2, kMin = 3, kSumSquare = 4, kL2 = 5,
                      kProd = 6, kReduceOps = 7 };
constexpr const char* kReduceNames[kReduceOps] = {"sum", "mean", "max", "min", "sum_square",
                                                  "l2", "prod"};

struct ReduceSpec {
  View src, dst;       // dst dims are src dims with the reduced ones set to 1
  int op = kSum;
  std::array<bool, 4> axes{false, false, false, false};
};

class ReduceStep final : public Step {
 public:
  ReduceStep(const ReduceSpec& spec, const PlanContext&) : s_(spec) {
    require(s_.op >= 0 && s_.op < kReduceOps, "reduce: unknown operation");
    for (int i = 0; i < 4; ++i) {
      const int64_t want = s_.axes[i] ? 1 : s_.src.dim[i];
      require(s_.dst.dim[i] == want, "reduce: destination dims must be the kept source dims");
      count_ *= s_.axes[i] ? s_.src.dim[i] : 1;
    }
  }
  const char* name() const override { return "reduce"; }
  std::string detail() const override { return kReduceNames[s_.op]; }
  std::vector<View> views() const override { return {s_.src, s_.dst}; }
  int64_t units(int, int64_t hint) const override {
    return std::min<int64_t>(hint, s_.dst.numel());
  }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t e0, e1;
    split_range(s_.dst.numel(), tid, nth, &e0, &e1);
    const float* src = buf.at(s_.src);
    float* dst = buf.at(s_.dst);
    int64_t extent[4];
    for (int i = 0; i < 4; ++i) extent[i] = s_.axes[i] ? s_.src.dim[i] : 1;
    for (int64_t e = e0; e < e1; ++e) {
      int64_t index[4], rem = e, origin = 0, out = 0;
      for (int i = 3; i >= 0; --i) {
        index[i] = rem % s_.dst.dim[i];
        rem /= s_.dst.dim[i];
        origin += index[i] * s_.src.stride[i];
        out += index[i] * s_.dst.stride[i];
      }
      dst[out] = reduce(src + origin, extent);
    }
  }

 private:
  float reduce(const float* base, const int64_t* extent) const {
    const bool extreme = s_.op == kMax || s_.op == kMin;
    double acc = s_.op == kProd ? 1.0 : 0.0;
    float best = s_.op == kMax ? -std::numeric_limits<float>::infinity()
                               : std::numeric_limits<float>::infinity();
    const int64_t* st = s_.src.stride;
    for (int64_t a = 0; a < extent[0]; ++a)
      for (int64_t b = 0; b < extent[1]; ++b)
        for (int64_t c = 0; c < extent[2]; ++c) {
          const float* row = base + a * st[0] + b * st[1] + c * st[2];
          for (int64_t d = 0; d < extent[3]; ++d) {
            const float v = row[d * st[3]];
            if (extreme) {
              const bool take = s_.op == kMax ? v > best : v < best;
              best = (v != v || take) ? v : best;  // NaN wins
              if (best != best) return best;
            } else if (s_.op == kProd) {
              acc *= v;
            } else if (s_.op == kSumSquare || s_.op == kL2) {
              acc += static_cast<double>(v) * v;
            } else {
              acc += v;
            }
          }
        }
    if (extreme) return best;
    if (s_.op == kMean) acc /= static_cast<double>(count_);
    if (s_.op == kL2) acc = std::sqrt(acc);
    return static_cast<float>(acc);
  }

  ReduceSpec s_;
  int64_t count_ = 1;
};

// y[r, :] = (x[r, :] - mean_r) / sqrt(var_r + eps) * scale + bias over the dim-3 features of
// every (d0, d1, d2) row.
struct LayerNormSpec {
  View src, dst;
  std::vector<float> scale, bias;  // one per feature (bias may be empty)
  float epsilon = 1e-5f;
};

class LayerNormStep final : public Step {
 public:
  LayerNormStep(LayerNormSpec spec, const PlanContext&) : s_(std::move(spec)) {
    const int64_t features = s_.dst.dim[3];
    require(std::equal(s_.src.dim, s_.src.dim + 4, s_.dst.dim),
            "layer norm: source and destination shapes differ");
    require(static_cast<int64_t>(s_.scale.size()) == features &&
                (s_.bias.empty() || static_cast<int64_t>(s_.bias.size()) == features),
            "layer norm: one scale (and bias) per feature");
    require(s_.epsilon >= 0.0f, "layer norm: epsilon must be >= 0");
  }
  const char* name() const override { return "layer_norm"; }
  std::vector<View> views() const override { return {s_.src, s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(s_.dst.rows(), tid, nth, &r0, &r1);
    const int64_t n = s_.dst.dim[3], ss = s_.src.stride[3], ds = s_.dst.stride[3];
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = row(buf, s_.src, r);
      float* y = row(buf, s_.dst, r);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += x[i * ss];
      const double mean = sum / static_cast<double>(n);
      double var = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const double d = x[i * ss] - mean;
        var += d * d;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(var / static_cast<double>(n) +
                                                           s_.epsilon));
      const float m = static_cast<float>(mean);
      for (int64_t i = 0; i < n; ++i) {
        const float v = (x[i * ss] - m) * inv * s_.scale[i];
        y[i * ds] = s_.bias.empty() ? v : v + s_.bias[i];
      }
    }
  }

 private:
  static float* row(const Buffers& buf, const View& v, int64_t r) {
    const int64_t i2 = r % v.dim[2], i01 = r / v.dim[2];
    return buf.at(v) + (i01 / v.dim[1]) * v.stride[0] + (i01 % v.dim[1]) * v.stride[1] +
           i2 * v.stride[2];
  }

  LayerNormSpec s_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<ReduceSpec>(m, "ReduceSpec")
      .def(py::init<>())
      .def_readwrite("src", &ReduceSpec::src)
      .def_readwrite("dst", &ReduceSpec::dst)
      .def_readwrite("op", &ReduceSpec::op)
      .def_readwrite("axes", &ReduceSpec::axes);
  py::dict ops;
  for (int op = 0; op < kReduceOps; ++op) ops[kReduceNames[op]] = op;
  m.attr("REDUCE_OPS") = ops;
  plan.def("add", &add_step<ReduceStep, ReduceSpec>);

  py::class_<LayerNormSpec> norm(m, "LayerNormSpec");
  norm.def(py::init<>())
      .def_readwrite("src", &LayerNormSpec::src)
      .def_readwrite("dst", &LayerNormSpec::dst)
      .def_readwrite("epsilon", &LayerNormSpec::epsilon);
  def_array(norm, "scale", &LayerNormSpec::scale);
  def_array(norm, "bias", &LayerNormSpec::bias);
  plan.def("add", &add_step<LayerNormStep, LayerNormSpec>);
}

}  // namespace fd
