// Element-wise and data-movement steps on strided 4-D views: copy, per-channel affine + clamp
// (BatchNormalization, Relu, Clip), two-input add + clamp (with broadcasting through stride-0
// views), softmax along one axis.
//
// Loop structure: the "rows" (i0, i1, i2) of the destination are split evenly across threads; each
// row is a run of d3 elements, contiguous in the common case (stride 1), which the compiler
// vectorises. References: runtime/kernels/reference.py (copy, affine, add, softmax).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"

namespace fd {

namespace {

// Pointer to the start of row r = (i0, i1, i2) of view v; also returns i1 (the channel).
inline float* row_ptr(const Buffers& buf, const View& v, int64_t r, int64_t* channel) {
  const int64_t i2 = r % v.dim[2];
  const int64_t i01 = r / v.dim[2];
  const int64_t i1 = i01 % v.dim[1], i0 = i01 / v.dim[1];
  if (channel) *channel = i1;
  return buf.at(v) + i0 * v.stride[0] + i1 * v.stride[1] + i2 * v.stride[2];
}

class CopyStep final : public Step {
 public:
  CopyStep(const View& src, const View& dst) : src_(src), dst_(dst) {}
  const char* name() const override { return "copy"; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t w = dst_.dim[3], ss = src_.stride[3], ds = dst_.stride[3];
    if (dst_.stride[0] == 1 && dst_.dim[0] > 1 && ss == 1) {
      interleave(buf, tid, nth);
      return;
    }
    int64_t r0, r1;
    split_range(dst_.rows(), tid, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = row_ptr(buf, src_, r, nullptr);
      float* d = row_ptr(buf, dst_, r, nullptr);
      if (ss == 1 && ds == 1) {
        std::memcpy(d, s, sizeof(float) * w);
      } else {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = s[i * ss];
      }
    }
  }

 private:
  // Planar rows into a batch-interleaved destination (the images of a position adjacent): per
  // (channel, row), position by position, the images' values are written as one contiguous run
  // (rows of the image-major copy scatter every float to its own cache line: 3x slower).
  void interleave(const Buffers& buf, int tid, int nth) const {
    const int64_t N = dst_.dim[0], C = dst_.dim[1], H = dst_.dim[2], W = dst_.dim[3];
    int64_t r0, r1;
    split_range(C * H, tid, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / H, h = r % H;
      const float* s = buf.at(src_) + c * src_.stride[1] + h * src_.stride[2];
      float* d = buf.at(dst_) + c * dst_.stride[1] + h * dst_.stride[2];
      for (int64_t x = 0; x < W; ++x) {
        float* out = d + x * dst_.stride[3];
        for (int64_t n = 0; n < N; ++n) out[n] = s[n * src_.stride[0] + x];
      }
    }
  }

  View src_, dst_;
};

class AffineStep final : public Step {
 public:
  AffineStep(const View& src, const View& dst, std::vector<float> scale, std::vector<float> shift,
             Activation act)
      : src_(src), dst_(dst), scale_(std::move(scale)), shift_(std::move(shift)), act_(act) {}
  const char* name() const override { return "affine"; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(dst_.rows(), tid, nth, &r0, &r1);
    const int64_t w = dst_.dim[3], ss = src_.stride[3], ds = dst_.stride[3];
    const float lo = act_.kind == kActNone ? -INFINITY : act_.lo;
    const float hi = act_.kind == kActNone ? INFINITY : act_.hi;
    for (int64_t r = r0; r < r1; ++r) {
      int64_t c;
      const float* s = row_ptr(buf, src_, r, &c);
      float* d = row_ptr(buf, dst_, r, nullptr);
      const float a = scale_.empty() ? 1.0f : scale_[c];
      const float b = shift_.empty() ? 0.0f : shift_[c];
      if (ss == 1 && ds == 1) {
        for (int64_t i = 0; i < w; ++i) d[i] = std::min(std::max(s[i] * a + b, lo), hi);
      } else {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = std::min(std::max(s[i * ss] * a + b, lo), hi);
      }
    }
  }

 private:
  View src_, dst_;
  std::vector<float> scale_, shift_;
  Activation act_;
};

class AddStep final : public Step {
 public:
  AddStep(const View& a, const View& b, const View& dst, Activation act)
      : a_(a), b_(b), dst_(dst), act_(act) {}
  const char* name() const override { return "add"; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(dst_.rows(), tid, nth, &r0, &r1);
    const int64_t w = dst_.dim[3];
    const int64_t as = a_.stride[3], bs = b_.stride[3], ds = dst_.stride[3];
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = row_ptr(buf, a_, r, nullptr);
      const float* y = row_ptr(buf, b_, r, nullptr);
      float* d = row_ptr(buf, dst_, r, nullptr);
      if (as == 1 && bs == 1 && ds == 1 && act_.kind == kActNone) {
        for (int64_t i = 0; i < w; ++i) d[i] = x[i] + y[i];
      } else {
        for (int64_t i = 0; i < w; ++i) d[i * ds] = act_.apply(x[i * as] + y[i * bs]);
      }
    }
  }

 private:
  View a_, b_, dst_;
  Activation act_;
};

// Softmax along `axis` of a 4-D view: the other three axes are "lines", split across threads.
class SoftmaxStep final : public Step {
 public:
  SoftmaxStep(const View& src, const View& dst, int axis) : src_(src), dst_(dst), axis_(axis) {}
  const char* name() const override { return "softmax"; }
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
      for (int64_t i = 0; i < len; ++i) mx = std::max(mx, s[i * ss]);
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

StepPtr make_copy_step(const View& src, const View& dst) { return StepPtr(new CopyStep(src, dst)); }
StepPtr make_affine_step(const View& src, const View& dst, std::vector<float> scale,
                         std::vector<float> shift, Activation act) {
  return StepPtr(new AffineStep(src, dst, std::move(scale), std::move(shift), act));
}
StepPtr make_add_step(const View& a, const View& b, const View& dst, Activation act) {
  return StepPtr(new AddStep(a, b, dst, act));
}
StepPtr make_softmax_step(const View& src, const View& dst, int axis) {
  return StepPtr(new SoftmaxStep(src, dst, axis));
}

}  // namespace fd
