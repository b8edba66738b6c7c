// General matrix multiply step: Y = alpha * A @ B + beta * C, all operands strided 2-D views
// (dims 2 and 3 of a View), C optional and broadcast through stride 0.
//
// Loop structure: output elements (m, n) split across threads in contiguous ranges; each is one
// dot product over k with 8 independent partial sums (so the compiler can vectorise without
// reassociating a single sum). The planner passes a constant B pre-transposed, so the k loop
// reads both operands contiguously. Reference: runtime/kernels/reference.py::gemm.
#include "common.h"

namespace fd {

namespace {

class GemmStep final : public Step {
 public:
  GemmStep(const View& a, const View& b, const View* c, const View& y, float alpha, float beta)
      : a_(a), b_(b), has_c_(c != nullptr), y_(y), alpha_(alpha), beta_(beta) {
    if (c) c_ = *c;
  }
  const char* name() const override { return "gemm"; }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t M = y_.dim[2], N = y_.dim[3], K = a_.dim[3];
    const int64_t am = a_.stride[2], ak = a_.stride[3], bk = b_.stride[2], bn = b_.stride[3];
    int64_t e0, e1;
    split_range(M * N, tid, nth, &e0, &e1);
    const float* A = buf.at(a_);
    const float* B = buf.at(b_);
    float* Y = buf.at(y_);
    for (int64_t e = e0; e < e1; ++e) {
      const int64_t m = e / N, n = e % N;
      const float* arow = A + m * am;
      const float* bcol = B + n * bn;
      float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = 0;
      if (ak == 1 && bk == 1) {
        for (; k + 8 <= K; k += 8)
          for (int q = 0; q < 8; ++q) part[q] += arow[k + q] * bcol[k + q];
      }
      for (; k < K; ++k) part[0] += arow[k * ak] * bcol[k * bk];
      float acc = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
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
};

}  // namespace

StepPtr make_gemm_step(const View& a, const View& b, const View* c, const View& y, float alpha,
                       float beta) {
  return StepPtr(new GemmStep(a, b, c, y, alpha, beta));
}

}  // namespace fd
