// Pooling steps: MaxPool / AveragePool (kernel, stride, dilation, asymmetric pads, ceil-mode output
// sizes computed by the planner, count_include_pad) and GlobalAverage/MaxPool.
//
// Loop structure: destination rows (image, channel, output row) split evenly across threads; each
// row runs the vectorised ISA kernel (kernels/pool2d.cpp) when positions are contiguous (planar,
// or the images of a batch-interleaved group), else a scalar loop that visits the window's taps
// inside the input directly (no padding copy). Average divisor: taps inside the input, or with count_include_pad the taps inside the
// padded extent [-pad_begin, size + pad_end) (ONNX / ONNX Runtime semantics).
// References: runtime/ops/pool.py (NumPy).
#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "steps/bind.h"

namespace fd {

namespace {

struct PoolSpec {
  bool is_max = true;
  View src, dst;
  std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, dilation{1, 1}, pad_begin{0, 0},
      pad_end{0, 0};
  bool count_include_pad = false;
};

class PoolStep final : public Step {
 public:
  PoolStep(const PoolSpec& spec, const PlanContext& ctx)
      : is_max_(spec.is_max), src_(spec.src), dst_(spec.dst),
        include_pad_(spec.count_include_pad), k_table_(ctx.kernels) {
    for (int i = 0; i < 2; ++i) {
      k_[i] = spec.kernel[i];
      s_[i] = spec.stride[i];
      d_[i] = spec.dilation[i];
      pb_[i] = spec.pad_begin[i];
      pe_[i] = spec.pad_end[i];
      require(k_[i] >= 1 && s_[i] >= 1 && d_[i] >= 1 && pb_[i] >= 0 && pe_[i] >= 0,
              "pool: kernel, strides and dilations must be positive, pads non-negative");
    }
    require(src_.dim[0] == dst_.dim[0] && src_.dim[1] == dst_.dim[1],
            "pool: source and destination images and channels differ");
    const bool planar = src_.stride[3] == 1 && dst_.stride[3] == 1;
    const bool interleaved = src_.dim[0] > 1 && src_.stride[0] == 1 && dst_.stride[0] == 1 &&
                             src_.stride[3] == src_.dim[0] && dst_.stride[3] == dst_.dim[0];
    vector_ = planar || interleaved;
    E_ = interleaved ? src_.dim[0] : 1;
    counts();
  }
  std::string detail() const override { return vector_ ? "vector" : "scalar"; }
  const char* name() const override { return is_max_ ? "max_pool" : "avg_pool"; }
  std::vector<View> views() const override { return {src_, dst_}; }

  void run(int, const Buffers& buf, int tid, int nth) const override {
    if (vector_) {
      run_vector(buf, tid, nth);
      return;
    }
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
            acc = is_max_ ? (v != v || v > acc ? v : acc) : acc + v;  // NaN wins
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
  // Rows (image unless interleaved, channel, output row) through the ISA kernel.
  void run_vector(const Buffers& buf, int tid, int nth) const {
    PoolRowArgs a;
    a.H = src_.dim[2];
    a.W = src_.dim[3];
    a.src_rs = src_.stride[2];
    a.OW = dst_.dim[3];
    a.dst_ws = dst_.stride[3];
    a.E = E_;
    a.kh = k_[0], a.kw = k_[1], a.sh = s_[0], a.sw = s_[1], a.dh = d_[0], a.dw = d_[1];
    a.pt = pb_[0], a.pl = pb_[1];
    a.is_max = is_max_;
    a.include_pad = include_pad_;
    a.row_count = row_count_.data();
    a.col_count = col_count_.data();
    thread_local std::vector<float> acc;
    const auto scratch = static_cast<size_t>(pool_row_scratch(a));
    if (acc.size() < scratch) acc.resize(scratch);
    const int64_t images = E_ > 1 ? 1 : dst_.dim[0], C = dst_.dim[1], OH = dst_.dim[2];
    int64_t r0, r1;
    split_range(images * C * OH, tid, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oh = r % OH, nc = r / OH, c = nc % C, n = nc / C;
      const float* plane = buf.at(src_) + n * src_.stride[0] + c * src_.stride[1];
      float* out = buf.at(dst_) + n * dst_.stride[0] + c * dst_.stride[1] + oh * dst_.stride[2];
      k_table_.pool_row(a, plane, out, oh, acc.data());
    }
  }

  // Average pooling's divisors: taps per output row inside the padded extent, and per output
  // column inside the input (or the padded extent with count_include_pad).
  void counts() {
    const int64_t H = src_.dim[2], W = src_.dim[3];
    for (int64_t oh = 0; oh < dst_.dim[2]; ++oh) {
      int64_t n = 0;
      for (int64_t i = 0; i < k_[0]; ++i) {
        const int64_t h = oh * s_[0] + i * d_[0] - pb_[0];
        n += h >= -pb_[0] && h < H + pe_[0];
      }
      row_count_.push_back(n);
    }
    for (int64_t ow = 0; ow < dst_.dim[3]; ++ow) {
      int64_t n = 0;
      for (int64_t j = 0; j < k_[1]; ++j) {
        const int64_t w = ow * s_[1] + j * d_[1] - pb_[1];
        n += include_pad_ ? (w >= -pb_[1] && w < W + pe_[1]) : (w >= 0 && w < W);
      }
      col_count_.push_back(static_cast<float>(n));
    }
  }

  bool is_max_;
  View src_, dst_;
  int64_t k_[2], s_[2], d_[2], pb_[2], pe_[2];
  bool include_pad_;
  KernelTable k_table_;
  bool vector_ = false;
  int64_t E_ = 1;
  std::vector<int64_t> row_count_;
  std::vector<float> col_count_;
};

struct GlobalPoolSpec {
  bool is_max = false;
  View src, dst;
};

class GlobalPoolStep final : public Step {
 public:
  GlobalPoolStep(const GlobalPoolSpec& spec, const PlanContext& ctx)
      : is_max_(spec.is_max), src_(spec.src), dst_(spec.dst), k_(ctx.kernels) {
    require(src_.dim[0] == dst_.dim[0] && src_.dim[1] == dst_.dim[1] && dst_.dim[2] == 1 &&
                dst_.dim[3] == 1,
            "global pool: the destination must be (N, C, 1, 1) of the source's N, C");
  }
  const char* name() const override { return is_max_ ? "global_max_pool" : "global_avg_pool"; }
  // The pool before a batch's classifier splits among the threads like the classifier
  // (16 images of MobileNetV2: 1 M floats, 0.3 ms on one thread); one image's stays whole.
  bool light() const override { return src_.numel() < kParallelFloats; }
  std::vector<View> views() const override { return {src_, dst_}; }
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
      float* y = buf.at(dst_) + n * dst_.stride[0] + c * dst_.stride[1];
      if (src_.stride[3] == 1) {
        const float v = k_.reduce_plane(x, H, W, src_.stride[2], is_max_);
        *y = is_max_ ? v : v / static_cast<float>(H * W);
        continue;
      }
      float acc = is_max_ ? -INFINITY : 0.0f;
      for (int64_t h = 0; h < H; ++h) {
        const float* row = x + h * src_.stride[2];
        for (int64_t w = 0; w < W; ++w) {
          const float v = row[w * src_.stride[3]];
          acc = is_max_ ? (v != v || v > acc ? v : acc) : acc + v;  // NaN wins
        }
      }
      if (!is_max_) acc /= static_cast<float>(H * W);
      *y = acc;
    }
  }

 private:
  static constexpr int64_t kParallelFloats = 1 << 18;

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
              for (int64_t n = 0; n < lanes; ++n)
                acc[c][n] = is_max_ ? (v[n] != v[n] || v[n] > acc[c][n] ? v[n] : acc[c][n])
                                    : acc[c][n] + v[n];
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
  KernelTable k_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<PoolSpec>(m, "PoolSpec")
      .def(py::init<>())
      .def_readwrite("is_max", &PoolSpec::is_max)
      .def_readwrite("src", &PoolSpec::src)
      .def_readwrite("dst", &PoolSpec::dst)
      .def_readwrite("kernel", &PoolSpec::kernel)
      .def_readwrite("stride", &PoolSpec::stride)
      .def_readwrite("dilation", &PoolSpec::dilation)
      .def_readwrite("pad_begin", &PoolSpec::pad_begin)
      .def_readwrite("pad_end", &PoolSpec::pad_end)
      .def_readwrite("count_include_pad", &PoolSpec::count_include_pad);
  plan.def("add", &add_step<PoolStep, PoolSpec>);
  py::class_<GlobalPoolSpec>(m, "GlobalPoolSpec")
      .def(py::init<>())
      .def_readwrite("is_max", &GlobalPoolSpec::is_max)
      .def_readwrite("src", &GlobalPoolSpec::src)
      .def_readwrite("dst", &GlobalPoolSpec::dst);
  plan.def("add", &add_step<GlobalPoolStep, GlobalPoolSpec>);
}

}  // namespace fd
