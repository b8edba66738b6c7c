// General matrix multiply step: Y = alpha * A @ B + beta * C, all operands strided 2-D views
// (dims 2 and 3 of a View), C optional and broadcast through stride 0.
//
// When rows of A and columns of B are contiguous (the planner passes a constant B pre-transposed),
// threads split the columns and the ISA kernel gemm_dot computes them (vectorised dots);
// otherwise threads split the output elements (m, n), one scalar dot each.
// Reference: runtime/kernels/reference.py::gemm.
#include "common.h"
#include "conv_kernels.h"

namespace fd {

namespace {

class GemmStep final : public Step {
 public:
  GemmStep(const View& a, const View& b, const View* c, const View& y, float alpha, float beta)
      : a_(a), b_(b), has_c_(c != nullptr), y_(y), alpha_(alpha), beta_(beta), k_(kernels()) {
    if (c) c_ = *c;
  }
  const char* name() const override { return "gemm"; }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t M = y_.dim[2], N = y_.dim[3], K = a_.dim[3];
    const int64_t am = a_.stride[2], ak = a_.stride[3], bk = b_.stride[2], bn = b_.stride[3];
    const float* A = buf.at(a_);
    const float* B = buf.at(b_);
    float* Y = buf.at(y_);
    if (ak == 1 && bk == 1) {
      GemmDotArgs g;
      g.A = A;
      g.am = am;
      g.B = B;
      g.bn = bn;
      if (has_c_) {
        g.C = buf.at(c_);
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
      if (has_c_) acc += beta_ * buf.at(c_)[m * c_.stride[2] + n * c_.stride[3]];
      Y[m * y_.stride[2] + n * y_.stride[3]] = acc;
    }
  }

 private:
  View a_, b_, c_;
  bool has_c_;
  View y_;
  float alpha_, beta_;
  KernelTable k_;
};

}  // namespace

StepPtr make_gemm_step(const View& a, const View& b, const View* c, const View& y, float alpha,
                       float beta) {
  return StepPtr(new GemmStep(a, b, c, y, alpha, beta));
}

}  // namespace fd
