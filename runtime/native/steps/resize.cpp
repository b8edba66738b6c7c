// Resize / Upsample of the two trailing dims of a 4-D view, nearest or (bi)linear, from index
// and weight tables the planner computes with the ONNX coordinate rules (runtime/ops/resize.py):
// every mode and rounding rule lives there, this step only gathers.
//
//   nearest: y[n, c, oy, ox] = x[n, c, iy0[oy], ix0[ox]]
//   linear:  y = (1 - wy) * ((1 - wx) x[iy0, ix0] + wx x[iy0, ix1])
//                  + wy  * ((1 - wx) x[iy1, ix0] + wx x[iy1, ix1])
// Output rows (n, c, oy) are split across threads. Reference: runtime/ops/resize.py.
#include <string>
#include <vector>

#include "steps/bind.h"

namespace fd {

namespace {

struct ResizeSpec {
  View src, dst;
  bool linear = false;
  std::vector<int64_t> y0, y1, x0, x1;  // per output row / column (y1, x1: linear only)
  std::vector<float> wy, wx;            // weight of y1 / x1 (linear only)
};

class ResizeStep final : public Step {
 public:
  ResizeStep(ResizeSpec spec, const PlanContext&) : s_(std::move(spec)) {
    const int64_t OH = s_.dst.dim[2], OW = s_.dst.dim[3], H = s_.src.dim[2], W = s_.src.dim[3];
    require(s_.src.dim[0] == s_.dst.dim[0] && s_.src.dim[1] == s_.dst.dim[1],
            "resize: only the two trailing dims change");
    const auto in_range = [](const std::vector<int64_t>& v, int64_t size, int64_t n) {
      if (static_cast<int64_t>(v.size()) != n) return false;
      for (int64_t i : v)
        if (i < 0 || i >= size) return false;
      return true;
    };
    require(in_range(s_.y0, H, OH) && in_range(s_.x0, W, OW), "resize: bad index tables");
    if (s_.linear)
      require(in_range(s_.y1, H, OH) && in_range(s_.x1, W, OW) &&
                  static_cast<int64_t>(s_.wy.size()) == OH &&
                  static_cast<int64_t>(s_.wx.size()) == OW,
              "resize: bad linear tables");
  }
  const char* name() const override { return s_.linear ? "resize_linear" : "resize_nearest"; }
  std::vector<View> views() const override { return {s_.src, s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(s_.dst.rows(), tid, nth, &r0, &r1);
    const int64_t OH = s_.dst.dim[2], OW = s_.dst.dim[3], C = s_.dst.dim[1];
    const int64_t sr = s_.src.stride[2], sw = s_.src.stride[3], dw = s_.dst.stride[3];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t oy = r % OH, nc = r / OH, c = nc % C, n = nc / C;
      const float* plane = buf.at(s_.src) + n * s_.src.stride[0] + c * s_.src.stride[1];
      float* out = buf.at(s_.dst) + n * s_.dst.stride[0] + c * s_.dst.stride[1] +
                   oy * s_.dst.stride[2];
      const float* a = plane + s_.y0[oy] * sr;
      if (!s_.linear) {
        for (int64_t ox = 0; ox < OW; ++ox) out[ox * dw] = a[s_.x0[ox] * sw];
        continue;
      }
      const float* b = plane + s_.y1[oy] * sr;
      const float wy = s_.wy[oy];
      for (int64_t ox = 0; ox < OW; ++ox) {
        const float wx = s_.wx[ox];
        const int64_t i0 = s_.x0[ox] * sw, i1 = s_.x1[ox] * sw;
        const float top = a[i0] + wx * (a[i1] - a[i0]);
        const float bottom = b[i0] + wx * (b[i1] - b[i0]);
        out[ox * dw] = top + wy * (bottom - top);
      }
    }
  }

 private:
  ResizeSpec s_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<ResizeSpec> resize(m, "ResizeSpec");
  resize.def(py::init<>())
      .def_readwrite("src", &ResizeSpec::src)
      .def_readwrite("dst", &ResizeSpec::dst)
      .def_readwrite("linear", &ResizeSpec::linear);
  def_array(resize, "y0", &ResizeSpec::y0);
  def_array(resize, "y1", &ResizeSpec::y1);
  def_array(resize, "x0", &ResizeSpec::x0);
  def_array(resize, "x1", &ResizeSpec::x1);
  def_array(resize, "wy", &ResizeSpec::wy);
  def_array(resize, "wx", &ResizeSpec::wx);
  plan.def("add", &add_step<ResizeStep, ResizeSpec>);
}

}  // namespace fd
