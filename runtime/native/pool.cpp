// Pooling steps: MaxPool / AveragePool (kernel, stride, dilation, asymmetric pads, ceil-mode output
// sizes computed by the planner, count_include_pad) and GlobalAverage/MaxPool.
//
// Loop structure: destination rows (image, channel, output row) split evenly across threads; per
// output element, the window's taps that fall inside the input are visited directly (no padding
// copy). Average divisor: taps inside the input, or with count_include_pad the taps inside the
// padded extent [-pad_begin, size + pad_end) (ONNX / ONNX Runtime semantics).
// References: runtime/kernels/reference.py::pool2d and ::global_pool.
#include <algorithm>
#include <cmath>

#include "common.h"

namespace fd {

namespace {

class PoolStep final : public Step {
 public:
  PoolStep(bool is_max, const View& src, const View& dst, const int64_t k[2], const int64_t s[2],
           const int64_t d[2], const int64_t pb[2], const int64_t pe[2], bool include_pad)
      : is_max_(is_max), src_(src), dst_(dst), include_pad_(include_pad) {
    for (int i = 0; i < 2; ++i) {
      k_[i] = k[i];
      s_[i] = s[i];
      d_[i] = d[i];
      pb_[i] = pb[i];
      pe_[i] = pe[i];
    }
  }
  const char* name() const override { return is_max_ ? "max_pool" : "avg_pool"; }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(dst_.rows(), tid, nth, &r0, &r1);
    const int64_t H = src_.dim[2], W = src_.dim[3], OH = dst_.dim[2], OW = dst_.dim[3];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % OH, nc = r / OH, c = nc % dst_.dim[1], n = nc / dst_.dim[1];
      const float* x = buf.at(src_) + n * src_.stride[0] + c * src_.stride[1];
      float* y = buf.at(dst_) + n * dst_.stride[0] + c * dst_.stride[1] + oh * dst_.stride[2];
      const int64_t h0 = oh * s_[0] - pb_[0];
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t w0 = ow * s_[1] - pb_[1];
        float acc = is_max_ ? -INFINITY : 0.0f;
        int64_t inside = 0, padded = 0;
        for (int64_t i = 0; i < k_[0]; ++i) {
          const int64_t h = h0 + i * d_[0];
          const bool h_in_pad = h >= -pb_[0] && h < H + pe_[0];
          for (int64_t j = 0; j < k_[1]; ++j) {
            const int64_t w = w0 + j * d_[1];
            if (h_in_pad && w >= -pb_[1] && w < W + pe_[1]) ++padded;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const float v = x[h * src_.stride[2] + w * src_.stride[3]];
            acc = is_max_ ? std::max(acc, v) : acc + v;
            ++inside;
          }
        }
        if (!is_max_) {
          const int64_t div = include_pad_ ? padded : inside;
          acc = div > 0 ? acc / static_cast<float>(div) : 0.0f;
        }
        y[ow * dst_.stride[3]] = acc;
      }
    }
  }

 private:
  bool is_max_;
  View src_, dst_;
  int64_t k_[2], s_[2], d_[2], pb_[2], pe_[2];
  bool include_pad_;
};

class GlobalPoolStep final : public Step {
 public:
  GlobalPoolStep(bool is_max, const View& src, const View& dst)
      : is_max_(is_max), src_(src), dst_(dst) {}
  const char* name() const override { return is_max_ ? "global_max_pool" : "global_avg_pool"; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    const int64_t C = src_.dim[1], H = src_.dim[2], W = src_.dim[3];
    if (src_.stride[0] == 1 && src_.dim[0] > 1) {
      run_interleaved(buf, tid, nth);
      return;
    }
    int64_t p0, p1;
    split_range(src_.dim[0] * C, tid, nth, &p0, &p1);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / C, c = p % C;
      const float* x = buf.at(src_) + n * src_.stride[0] + c * src_.stride[1];
      float acc = is_max_ ? -INFINITY : 0.0f;
      for (int64_t h = 0; h < H; ++h) {
        const float* row = x + h * src_.stride[2];
        for (int64_t w = 0; w < W; ++w) {
          const float v = row[w * src_.stride[3]];
          acc = is_max_ ? std::max(acc, v) : acc + v;
        }
      }
      if (!is_max_) acc /= static_cast<float>(H * W);
      buf.at(dst_)[n * dst_.stride[0] + c * dst_.stride[1]] = acc;
    }
  }

 private:
  // Batch-interleaved input (the images of a position adjacent): per channel, the running
  // results of up to 16 images are updated together from contiguous floats (vectorised). The
  // results of 16 channels are stored together, image by image (16 adjacent floats of an image's
  // row instead of 16 single floats 1 row apart each, which cost ~50 ns per channel).
  void run_interleaved(const Buffers& buf, int tid, int nth) const {
    constexpr int64_t kLanes = 16, kBlock = 16;
    const int64_t N = src_.dim[0], C = src_.dim[1], H = src_.dim[2], W = src_.dim[3];
    int64_t c0, c1;
    split_range(C, tid, nth, &c0, &c1);
    const float scale = is_max_ ? 1.0f : 1.0f / static_cast<float>(H * W);
    for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
      const int64_t lanes = N - n0 < kLanes ? N - n0 : kLanes;
      for (int64_t cb = c0; cb < c1; cb += kBlock) {
        const int64_t channels = c1 - cb < kBlock ? c1 - cb : kBlock;
        float acc[kBlock][kLanes];
        for (int64_t c = 0; c < channels; ++c) {
          const float* x = buf.at(src_) + (cb + c) * src_.stride[1] + n0;
          for (int64_t n = 0; n < kLanes; ++n) acc[c][n] = is_max_ ? -INFINITY : 0.0f;
          for (int64_t h = 0; h < H; ++h) {
            for (int64_t w = 0; w < W; ++w) {
              const float* v = x + h * src_.stride[2] + w * src_.stride[3];
              for (int64_t n = 0; n < lanes; ++n) acc[c][n] = is_max_ ? std::max(acc[c][n], v[n]) : acc[c][n] + v[n];
            }
          }
        }
        for (int64_t n = 0; n < lanes; ++n) {
          float* y = buf.at(dst_) + (n0 + n) * dst_.stride[0] + cb * dst_.stride[1];
          for (int64_t c = 0; c < channels; ++c) y[c * dst_.stride[1]] = acc[c][n] * scale;
        }
      }
    }
  }

  bool is_max_;
  View src_, dst_;
};

}  // namespace

StepPtr make_pool_step(bool is_max, const View& src, const View& dst, const int64_t kernel[2],
                       const int64_t stride[2], const int64_t dilation[2],
                       const int64_t pad_begin[2], const int64_t pad_end[2],
                       bool count_include_pad) {
  return StepPtr(new PoolStep(is_max, src, dst, kernel, stride, dilation, pad_begin, pad_end,
                              count_include_pad));
}
StepPtr make_global_pool_step(bool is_max, const View& src, const View& dst) {
  return StepPtr(new GlobalPoolStep(is_max, src, dst));
}

}  // namespace fd
