// Element-wise and data-movement steps on strided 4-D views: copy (any strides: also transposes,
// slices and layout changes), fill (a constant: Pad's border), unary (per-channel affine, then an activation: BatchNormalization,
// Relu, Sigmoid, ...), binary (add, sub, mul, div, max, min, pow with broadcasting through
// stride-0 views, then an activation), softmax along one axis.
//
// Loop structure: the "rows" (i0, i1, i2) of the destination are split evenly across threads; each
// row is a run of d3 elements, contiguous in the common case (stride 1), which the compiler
// vectorises; activations other than a clamp run per row through the ISA kernel
// (kernels/activation.cpp). References: runtime/ops/ (each op's NumPy reference).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "steps/bind.h"

namespace fd {

namespace {

// Rows r = (i0, i1, i2) of a step's views (which share the destination's dims) from a first
// row on: divisions once, then counters (a 7-float row cannot afford three divisions).
class RowWalk {
 public:
  RowWalk(const View& dst, int64_t r) : d1_(dst.dim[1]), d2_(dst.dim[2]) {
    i2_ = r % d2_;
    const int64_t q = r / d2_;
    i1_ = q % d1_;
    i0_ = q / d1_;
  }
  float* at(const Buffers& buf, const View& v) const {
    return buf.at(v) + i0_ * v.stride[0] + i1_ * v.stride[1] + i2_ * v.stride[2];
  }
  int64_t channel() const { return i1_; }
  void next() {
    if (++i2_ < d2_) return;
    i2_ = 0;
    if (++i1_ < d1_) return;
    i1_ = 0;
    ++i0_;
  }

 private:
  int64_t d1_, d2_, i0_, i1_, i2_;
};

bool same_dims(const View& a, const View& b) {
  return std::equal(a.dim, a.dim + 4, b.dim);
}

// A view broadcast to `dims`: each of its dims equals dims[i] or is 1 with stride 0.
bool broadcasts_to(const View& v, const View& dst) {
  for (int i = 0; i < 4; ++i)
    if (v.dim[i] != dst.dim[i] && !(v.dim[i] == 1 && v.stride[i] == 0)) return false;
  return true;
}

// Dims 2 and 3 of every view as one (rows of W floats become planes of H * W) when each view
// steps from row to row exactly W elements on (compact planes, or broadcast over both dims):
// steps on small planes (7 x 7, 14 x 14) then run a few long rows instead of many short ones,
// each of which paid the row addressing and a scalar tail.
void merge_plane_rows(const View& dst, std::initializer_list<View*> views) {
  const int64_t W = dst.dim[3];
  for (View* v : views)
    if (v->stride[2] != W * v->stride[3] ||
        (v->dim[2] * v->dim[3] != 1 && v->dim[2] != dst.dim[2]))
      return;
  for (View* v : views) {
    v->dim[3] *= v->dim[2];
    v->dim[2] = 1;
  }
}

// Batch-interleaved views (the images of a position adjacent: dim 0 of stride 1) walked row by
// row touch one float per cache line, image after image (DenseNet's standalone BatchNorm at 16
// images on AMD Zen4: 25x slower per float than planar). When every view steps through dim 0
// with stride 1 or broadcasts over it, their dims are reordered to (H, C, W, N), keeping dim 1
// the channel (per-channel parameters), so a row is the images of consecutive positions; the
// step's merge_plane_rows then makes each row one contiguous run.
// A view broadcast over the positions (a value per image and channel, as a squeeze-excitation
// gate, in any layout) joins in: its rows become the images' values of one channel.
void images_innermost(std::initializer_list<View*> views) {
  const View& dst = **views.begin();
  if (dst.dim[0] < 2 || dst.stride[0] != 1) return;
  for (const View* v : views)
    if (v->stride[0] != 1 && !(v->stride[0] == 0 && v->dim[0] == 1) &&
        !(v->stride[2] == 0 && v->stride[3] == 0))
      return;
  for (View* v : views) {
    const View old = *v;
    const int order[4] = {2, 1, 3, 0};
    for (int i = 0; i < 4; ++i) {
      v->dim[i] = old.dim[order[i]];
      v->stride[i] = old.stride[order[i]];
    }
  }
}

// d[i] = clamp(src[i] * a + b, lo, hi) over a contiguous row, as one loop the compiler
// vectorizes (a call to Activation::apply per float kept it scalar: DenseNet-121's standalone
// BatchNorm + Relu steps, 19 of its 32 ms at batch 1 on AMD EPYC Zen4). The comparisons keep a
// NaN, as apply does.
void affine_clamp_row(const float* src, float* d, int64_t w, float a, float b, float lo,
                      float hi) {
  for (int64_t i = 0; i < w; ++i) {
    float x = src[i] * a + b;
    x = x < lo ? lo : x;
    d[i] = x > hi ? hi : x;
  }
}

// clamp(d[i], lo, hi) in place over a contiguous row (vectorized, as above).
void clamp_row(float* d, int64_t w, float lo, float hi) {
  for (int64_t i = 0; i < w; ++i) {
    const float x = d[i] < lo ? lo : d[i];
    d[i] = x > hi ? hi : x;
  }
}

// Applies `act` to the w floats of a destination row (stride ds) of channel c.
void activate_row(const KernelTable& k, float* d, int64_t w, int64_t ds, const Activation& act,
                  int64_t c) {
  if (act.kind == kActNone) return;
  if (ds == 1) {
    k.activate_row(d, d, w, act, c);
    return;
  }
  for (int64_t i = 0; i < w; ++i) d[i * ds] = act.apply(d[i * ds], c);
}

struct CopySpec {
  View src, dst;
};

class CopyStep final : public Step {
 public:
  static constexpr int64_t kParallelCopyFloats = 1 << 20;
  CopyStep(const CopySpec& spec, const PlanContext& ctx)
      : src_(spec.src), dst_(spec.dst), interleave_images_(ctx.kernels.interleave_images) {
    require(broadcasts_to(src_, dst_), "copy: source and destination shapes differ");
    images_innermost({&dst_, &src_});
    if (!(dst_.stride[0] == 1 && dst_.dim[0] > 1)) merge_plane_rows(dst_, {&src_, &dst_});
  }
  const char* name() const override { return "copy"; }
  std::vector<View> views() const override { return {src_, dst_}; }
  // A copy of kParallelCopyFloats or more splits among the threads even at the start or end of
  // a plan: 16 images of 3x224x224 into batch-interleaved planes took 1.05 ms of ResNet-18's
  // 42 ms on two threads, on the calling thread alone (AMD EPYC Zen4).
  bool light() const override { return dst_.numel() < kParallelCopyFloats; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t w = dst_.dim[3], ss = src_.stride[3], ds = dst_.stride[3];
    if (dst_.stride[0] == 1 && dst_.dim[0] > 1 && ss == 1 && src_.dim[0] == dst_.dim[0]) {
      interleave(buf, tid, nth);
      return;
    }
    int64_t r0, r1;
    split_range(dst_.rows(), tid, nth, &r0, &r1);
    for (RowWalk row(dst_, r0); r0 < r1; ++r0, row.next()) {
      const float* s = row.at(buf, src_);
      float* d = row.at(buf, dst_);
      if (ss == 1 && ds == 1) {
        std::memcpy(d, s, sizeof(float) * w);
      } else {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = s[i * ss];
      }
    }
  }

 private:
  // Planar rows into a batch-interleaved destination (the images of a position adjacent), one
  // (channel, row) at a time, all images' rows together (rows of the image-major copy scatter
  // every float to its own cache line: 3x slower).
  void interleave(const Buffers& buf, int tid, int nth) const {
    const int64_t N = dst_.dim[0], C = dst_.dim[1], H = dst_.dim[2], W = dst_.dim[3];
    int64_t r0, r1;
    split_range(C * H, tid, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / H, h = r % H;
      const float* s = buf.at(src_) + c * src_.stride[1] + h * src_.stride[2];
      float* d = buf.at(dst_) + c * dst_.stride[1] + h * dst_.stride[2];
      interleave_images_(s, src_.stride[0], N, d, dst_.stride[3], W);
    }
  }

  View src_, dst_;
  InterleaveImagesFn interleave_images_;
};

// Every element of dst = value.
struct FillSpec {
  View dst;
  float value = 0.0f;
};

class FillStep final : public Step {
 public:
  FillStep(const FillSpec& spec, const PlanContext&) : s_(spec) {
    images_innermost({&s_.dst});
    merge_plane_rows(s_.dst, {&s_.dst});
  }
  const char* name() const override { return "fill"; }
  std::vector<View> views() const override { return {s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(s_.dst.rows(), tid, nth, &r0, &r1);
    const int64_t w = s_.dst.dim[3], ds = s_.dst.stride[3];
    for (RowWalk row(s_.dst, r0); r0 < r1; ++r0, row.next()) {
      float* d = row.at(buf, s_.dst);
      for (int64_t i = 0; i < w; ++i) d[i * ds] = s_.value;
    }
  }

 private:
  FillSpec s_;
};

// dst = act(src * scale[c] + shift[c]) with c the dim-1 index (empty scale / shift: 1 / 0).
struct UnarySpec {
  View src, dst;
  std::vector<float> scale, shift;
  ActivationSpec act;
};

class UnaryStep final : public Step {
 public:
  UnaryStep(UnarySpec spec, const PlanContext& ctx) : s_(std::move(spec)), k_(ctx.kernels) {
    const int64_t channels = s_.dst.dim[1];
    require(same_dims(s_.src, s_.dst), "unary: source and destination shapes differ");
    require(s_.scale.empty() || static_cast<int64_t>(s_.scale.size()) >= channels,
            "unary: one scale per channel");
    require(s_.shift.empty() || static_cast<int64_t>(s_.shift.size()) >= channels,
            "unary: one shift per channel");
    s_.act.validate(channels, "unary");
    act_ = s_.act.view();
    images_innermost({&s_.dst, &s_.src});
    merge_plane_rows(s_.dst, {&s_.src, &s_.dst});
  }
  const char* name() const override { return "unary"; }
  std::string detail() const override {
    return std::string("act=") + kActivationNames[s_.act.kind] +
           (s_.scale.empty() && s_.shift.empty() ? "" : " affine");
  }
  std::vector<View> views() const override { return {s_.src, s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(s_.dst.rows(), tid, nth, &r0, &r1);
    const int64_t w = s_.dst.dim[3], ss = s_.src.stride[3], ds = s_.dst.stride[3];
    const bool affine = !s_.scale.empty() || !s_.shift.empty();
    for (RowWalk row(s_.dst, r0); r0 < r1; ++r0, row.next()) {
      const int64_t c = row.channel();
      const float* src = row.at(buf, s_.src);
      float* d = row.at(buf, s_.dst);
      if (!affine && act_.kind != kActClip && ss == 1 && ds == 1) {
        if (act_.kind == kActNone) {
          std::memmove(d, src, sizeof(float) * w);
        } else {
          k_.activate_row(src, d, w, act_, c);
        }
        continue;
      }
      const float a = s_.scale.empty() ? 1.0f : s_.scale[c];
      const float b = s_.shift.empty() ? 0.0f : s_.shift[c];
      if (act_.kind == kActClip && ss == 1 && ds == 1) {
        affine_clamp_row(src, d, w, a, b, act_.lo, act_.hi);
        continue;
      }
      if (act_.kind == kActClip) {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = act_.apply(src[i * ss] * a + b, c);
        continue;
      }
      for (int64_t i = 0; i < w; ++i) d[i * ds] = src[i * ss] * a + b;
      activate_row(k_, d, w, ds, act_, c);
    }
  }

 private:
  UnarySpec s_;
  KernelTable k_;
  Activation act_;
};

enum BinaryOp : int { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3, kMax = 4, kMin = 5, kPow = 6,
                      kBinaryOps = 7 };
constexpr const char* kBinaryNames[kBinaryOps] = {"add", "sub", "mul", "div", "max", "min",
                                                  "pow"};

// dst = act(a op b), a and b broadcast to dst through stride-0 dims.
struct BinarySpec {
  View a, b, dst;
  int op = kAdd;
  ActivationSpec act;
};

template <int Op>
inline float binary(float x, float y) {
  if constexpr (Op == kAdd) return x + y;
  if constexpr (Op == kSub) return x - y;
  if constexpr (Op == kMul) return x * y;
  if constexpr (Op == kDiv) return x / y;
  // NaN in either operand gives NaN (ONNX Max / Min).
  if constexpr (Op == kMax) return (x != x || y != y) ? x + y : (x > y ? x : y);
  if constexpr (Op == kMin) return (x != x || y != y) ? x + y : (x < y ? x : y);
  return std::pow(x, y);
}

class BinaryStep final : public Step {
 public:
  BinaryStep(BinarySpec spec, const PlanContext& ctx) : s_(std::move(spec)), k_(ctx.kernels) {
    require(s_.op >= 0 && s_.op < kBinaryOps, "binary: unknown operation");
    require(broadcasts_to(s_.a, s_.dst) && broadcasts_to(s_.b, s_.dst),
            "binary: operands do not broadcast to the destination");
    s_.act.validate(s_.dst.dim[1], "binary");
    act_ = s_.act.view();
    images_innermost({&s_.dst, &s_.a, &s_.b});
    merge_plane_rows(s_.dst, {&s_.a, &s_.b, &s_.dst});
    period_ = merge_cycled_rows();
  }
  const char* name() const override { return kBinaryNames[s_.op]; }
  std::string detail() const override {
    return s_.act.kind == kActNone ? "" : std::string("act=") + kActivationNames[s_.act.kind];
  }
  std::vector<View> views() const override { return {s_.a, s_.b, s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    switch (s_.op) {
      case kAdd: rows<kAdd>(buf, tid, nth); break;
      case kSub: rows<kSub>(buf, tid, nth); break;
      case kMul: rows<kMul>(buf, tid, nth); break;
      case kDiv: rows<kDiv>(buf, tid, nth); break;
      case kMax: rows<kMax>(buf, tid, nth); break;
      case kMin: rows<kMin>(buf, tid, nth); break;
      default: rows<kPow>(buf, tid, nth); break;
    }
  }

 private:
  template <int Op>
  void rows(const Buffers& buf, int tid, int nth) const {
    int64_t r0, r1;
    split_range(s_.dst.rows(), tid, nth, &r0, &r1);
    const int64_t w = s_.dst.dim[3];
    const int64_t as = s_.a.stride[3], bs = s_.b.stride[3], ds = s_.dst.stride[3];
    for (RowWalk row(s_.dst, r0); r0 < r1; ++r0, row.next()) {
      const int64_t c = row.channel();
      const float* x = row.at(buf, s_.a);
      const float* y = row.at(buf, s_.b);
      float* d = row.at(buf, s_.dst);
      if (period_ > 0) {
        cycled_row<Op>(x, y, d, w);
      } else if (as == 1 && bs == 1 && ds == 1) {
        for (int64_t i = 0; i < w; ++i) d[i] = binary<Op>(x[i], y[i]);
      } else if (as == 1 && bs == 0 && ds == 1) {
        const float yv = y[0];
        for (int64_t i = 0; i < w; ++i) d[i] = binary<Op>(x[i], yv);
      } else if (as == 0 && bs == 1 && ds == 1) {
        const float xv = x[0];
        for (int64_t i = 0; i < w; ++i) d[i] = binary<Op>(xv, y[i]);
      } else {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = binary<Op>(x[i * as], y[i * bs]);
      }
      if (act_.kind == kActClip && ds == 1) {
        clamp_row(d, w, act_.lo, act_.hi);
      } else if (act_.kind == kActClip) {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = act_.apply(d[i * ds], c);
      } else {
        activate_row(k_, d, w, ds, act_, c);
      }
    }
  }

  // One merged row (see merge_cycled_rows): the broadcast operand's `period_` values, gathered
  // once, against every position's run of the other operand.
  template <int Op>
  void cycled_row(const float* x, const float* y, float* d, int64_t w) const {
    const View& cycled = a_cycles_ ? s_.a : s_.b;
    const int64_t cs = cycled.stride[3];
    float g[kMaxPeriod];
    const float* src = a_cycles_ ? x : y;
    for (int64_t i = 0; i < period_; ++i) g[i] = src[i * cs];
    for (int64_t j = 0; j < w; j += period_) {
      if (a_cycles_) {
        for (int64_t i = 0; i < period_; ++i) d[j + i] = binary<Op>(g[i], y[j + i]);
      } else {
        for (int64_t i = 0; i < period_; ++i) d[j + i] = binary<Op>(x[j + i], g[i]);
      }
    }
  }

  // Rows of a few floats (the images of one position, batch-interleaved) where one operand is
  // a per-(channel, image) value broadcast over the positions (a squeeze-excitation gate:
  // x * scale[n, c]) and the other runs on with the destination: dims 2 and 3 become one row
  // of W * N floats, the broadcast operand repeating every N (its "period"). Walking 16-float
  // rows one by one cost EfficientNet-B0's gates 75 of 148 ms at 16 images (AMD EPYC Zen4).
  // Returns the period (0: rows unchanged).
  int64_t merge_cycled_rows() {
    View& d = s_.dst;
    const int64_t n = d.dim[3];
    auto runs_on = [&](const View& v) {
      return v.dim[2] == d.dim[2] && v.dim[3] == n && v.stride[3] == 1 && v.stride[2] == n;
    };
    auto cycles = [&](const View& v) { return v.stride[2] == 0 && v.dim[3] == n; };
    if (d.dim[2] < 2 || n > kMaxPeriod || !runs_on(d)) return 0;
    if (runs_on(s_.a) && cycles(s_.b)) {
      a_cycles_ = false;
    } else if (cycles(s_.a) && runs_on(s_.b)) {
      a_cycles_ = true;
    } else {
      return 0;
    }
    const int64_t run = d.dim[2] * n;
    for (View* v : {&s_.dst, a_cycles_ ? &s_.b : &s_.a}) {  // the broadcast one stays as is
      v->dim[3] = run;
      v->dim[2] = 1;
    }
    return n;
  }

  BinarySpec s_;
  KernelTable k_;
  Activation act_;
  static constexpr int64_t kMaxPeriod = 64;
  int64_t period_ = 0;
  bool a_cycles_ = false;
};

// Softmax along `axis` of a 4-D view: the other three axes are "lines", split across threads.
struct SoftmaxSpec {
  View src, dst;
  int axis = 3;
};

class SoftmaxStep final : public Step {
 public:
  SoftmaxStep(const SoftmaxSpec& spec, const PlanContext&)
      : src_(spec.src), dst_(spec.dst), axis_(spec.axis) {
    require(axis_ >= 0 && axis_ <= 3, "softmax: axis must be in [0, 3]");
    require(same_dims(src_, dst_), "softmax: source and destination shapes differ");
  }
  const char* name() const override { return "softmax"; }
  std::vector<View> views() const override { return {src_, dst_}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int other[3], k = 0;
    for (int d = 0; d < 4; ++d)
      if (d != axis_) other[k++] = d;
    const int64_t lines = dst_.dim[other[0]] * dst_.dim[other[1]] * dst_.dim[other[2]];
    const int64_t len = dst_.dim[axis_];
    const int64_t ss = src_.stride[axis_], ds = dst_.stride[axis_];
    int64_t l0, l1;
    split_range(lines, tid, nth, &l0, &l1);
    for (int64_t l = l0; l < l1; ++l) {
      int64_t rem = l, so = 0, doff = 0;
      for (int j = 2; j >= 0; --j) {
        const int d = other[j];
        const int64_t i = rem % dst_.dim[d];
        rem /= dst_.dim[d];
        so += i * src_.stride[d];
        doff += i * dst_.stride[d];
      }
      const float* s = buf.at(src_) + so;
      float* o = buf.at(dst_) + doff;
      float mx = -INFINITY;
      bool nan = false;
      for (int64_t i = 0; i < len; ++i) {
        nan |= s[i * ss] != s[i * ss];
        mx = std::max(mx, s[i * ss]);
      }
      if (nan) mx = NAN;  // NaN anywhere in the line: every output of it is NaN
      double sum = 0.0;
      for (int64_t i = 0; i < len; ++i) {
        const float e = std::exp(s[i * ss] - mx);
        o[i * ds] = e;
        sum += e;
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (int64_t i = 0; i < len; ++i) o[i * ds] *= inv;
    }
  }

 private:
  View src_, dst_;
  int axis_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<CopySpec>(m, "CopySpec")
      .def(py::init<>())
      .def_readwrite("src", &CopySpec::src)
      .def_readwrite("dst", &CopySpec::dst);
  plan.def("add", &add_step<CopyStep, CopySpec>);

  py::class_<FillSpec>(m, "FillSpec")
      .def(py::init<>())
      .def_readwrite("dst", &FillSpec::dst)
      .def_readwrite("value", &FillSpec::value);
  plan.def("add", &add_step<FillStep, FillSpec>);

  py::class_<UnarySpec> unary(m, "UnarySpec");
  unary.def(py::init<>())
      .def_readwrite("src", &UnarySpec::src)
      .def_readwrite("dst", &UnarySpec::dst)
      .def_readwrite("act", &UnarySpec::act);
  def_array(unary, "scale", &UnarySpec::scale);
  def_array(unary, "shift", &UnarySpec::shift);
  plan.def("add", &add_step<UnaryStep, UnarySpec>);

  py::class_<BinarySpec>(m, "BinarySpec")
      .def(py::init<>())
      .def_readwrite("a", &BinarySpec::a)
      .def_readwrite("b", &BinarySpec::b)
      .def_readwrite("dst", &BinarySpec::dst)
      .def_readwrite("op", &BinarySpec::op)
      .def_readwrite("act", &BinarySpec::act);
  py::dict ops;
  for (int op = 0; op < kBinaryOps; ++op) ops[kBinaryNames[op]] = op;
  m.attr("BINARY_OPS") = ops;
  plan.def("add", &add_step<BinaryStep, BinarySpec>);

  py::class_<SoftmaxSpec>(m, "SoftmaxSpec")
      .def(py::init<>())
      .def_readwrite("src", &SoftmaxSpec::src)
      .def_readwrite("dst", &SoftmaxSpec::dst)
      .def_readwrite("axis", &SoftmaxSpec::axis);
  plan.def("add", &add_step<SoftmaxStep, SoftmaxSpec>);
}

}  // namespace fd
