// General matrix multiply step: Y = alpha * A @ B + beta * C, all operands strided 2-D views
// (dims 2 and 3 of a View), C optional and broadcast through stride 0; dims 0 and 1 are batch
// dims (a batched MatMul), broadcast through stride 0 as well.
//
// When rows of A and columns of B are contiguous (the planner passes a constant B pre-transposed),
// threads split the columns and the ISA kernel gemm_dot computes them (vectorised dots);
// otherwise threads split the output elements (m, n), one scalar dot each.
// Reference: runtime/ops/gemm.py (NumPy).
#include "steps/bind.h"

namespace fd {

namespace {

struct GemmSpec {
  View a, b, c, y;  // (M, K), (K, N), (M, N) broadcast, (M, N) in dims 2 and 3
  bool has_c = false;
  float alpha = 1.0f, beta = 1.0f;
};

class GemmStep final : public Step {
 public:
  GemmStep(const GemmSpec& spec, const PlanContext& ctx)
      : a_(spec.a), b_(spec.b), c_(spec.c), has_c_(spec.has_c), y_(spec.y), alpha_(spec.alpha),
        beta_(spec.beta), k_(ctx.kernels) {
    require(a_.dim[2] == y_.dim[2] && b_.dim[3] == y_.dim[3] && a_.dim[3] == b_.dim[2],
            "gemm: operand shapes do not multiply to the output's");
    for (int i = 0; i < 2; ++i)
      require((a_.dim[i] == y_.dim[i] || a_.stride[i] == 0) &&
                  (b_.dim[i] == y_.dim[i] || b_.stride[i] == 0) &&
                  (!has_c_ || c_.dim[i] == y_.dim[i] || c_.stride[i] == 0),
              "gemm: batch dims do not broadcast to the output's");
    require(!has_c_ || ((c_.dim[2] == y_.dim[2] || c_.stride[2] == 0) &&
                        (c_.dim[3] == y_.dim[3] || c_.stride[3] == 0)),
            "gemm: C does not broadcast to the output");
  }
  const char* name() const override { return "gemm"; }
  // A classifier of a batch splits among the threads even at the end of a plan: 16 images'
  // 1280 x 1000 classifier (MobileNetV2) took 0.77 of 8.9 ms on one thread while the other
  // waited (two threads, AMD EPYC Zen4); one image's (1.3 M products) is not worth the split.
  bool light() const override {
    return y_.dim[0] * y_.dim[1] * y_.dim[2] * y_.dim[3] * a_.dim[3] < kParallelProducts;
  }
  std::vector<View> views() const override {
    std::vector<View> v = {a_, b_, y_};
    if (has_c_) v.push_back(c_);
    return v;
  }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    for (int64_t i = 0; i < y_.dim[0]; ++i)
      for (int64_t j = 0; j < y_.dim[1]; ++j) {
        const auto at = [&](const View& v) {
          return buf.at(v) + i * v.stride[0] + j * v.stride[1];
        };
        matrix(at(a_), at(b_), has_c_ ? at(c_) : nullptr, at(y_), tid, nth);
      }
  }

 private:
  static constexpr int64_t kParallelProducts = 1 << 22;

  // One (M, N) output of the batch: columns (or elements) [tid share] of nth.
  void matrix(const float* A, const float* B, const float* C, float* Y, int tid,
              int nth) const {
    const int64_t M = y_.dim[2], N = y_.dim[3], K = a_.dim[3];
    const int64_t am = a_.stride[2], ak = a_.stride[3], bk = b_.stride[2], bn = b_.stride[3];
    if (ak == 1 && bk == 1) {
      GemmDotArgs g;
      g.A = A;
      g.am = am;
      g.B = B;
      g.bn = bn;
      if (C) {
        g.C = C;
        g.cm = c_.stride[2];
        g.cn = c_.stride[3];
      }
      g.Y = Y;
      g.ym = y_.stride[2];
      g.yn = y_.stride[3];
      g.M = M;
      g.N = N;
      g.K = K;
      g.alpha = alpha_;
      g.beta = beta_;
      int64_t n0, n1;
      split_range(N, tid, nth, &n0, &n1);
      k_.gemm_dot(g, n0, n1);
      return;
    }
    int64_t e0, e1;
    split_range(M * N, tid, nth, &e0, &e1);
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t m = e / N, n = e % N;
      const float* arow = A + m * am;
      const float* bcol = B + n * bn;
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc += arow[k * ak] * bcol[k * bk];
      acc *= alpha_;
      if (C) acc += beta_ * C[m * c_.stride[2] + n * c_.stride[3]];
      Y[m * y_.stride[2] + n * y_.stride[3]] = acc;
    }
  }

  View a_, b_, c_;
  bool has_c_;
  View y_;
  float alpha_, beta_;
  KernelTable k_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<GemmSpec>(m, "GemmSpec")
      .def(py::init<>())
      .def_readwrite("a", &GemmSpec::a)
      .def_readwrite("b", &GemmSpec::b)
      .def_readwrite("c", &GemmSpec::c)
      .def_readwrite("y", &GemmSpec::y)
      .def_readwrite("has_c", &GemmSpec::has_c)
      .def_readwrite("alpha", &GemmSpec::alpha)
      .def_readwrite("beta", &GemmSpec::beta);
  plan.def("add", &add_step<GemmStep, GemmSpec>);
}

}  // namespace fd
