// Zero step: sets the rows of several views to 0.0f. The memory planner (runtime/planner/
// memory.py) shares arena space between tensors of different layouts; a padded tensor placed
// where another tensor's data was gets its border (pad rows and columns, the lead before the
// first plane, the slack after planes) zeroed by one such step before its producer runs, since
// conv kernels read the border as the zero padding and never write all of it themselves.
//
// Loop structure: the rows (i0, i1, i2) of all views, concatenated in order, are split evenly
// across units; each row is d3 contiguous floats (stride 1), cleared with one memset.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "steps/bind.h"

namespace fd {

namespace {

struct ZeroSpec {
  std::vector<View> dst;
};

class ZeroStep final : public Step {
 public:
  ZeroStep(ZeroSpec spec, const PlanContext&) : dst_(std::move(spec.dst)) {
    require(!dst_.empty(), "zero: no views");
    int64_t rows = 0;
    for (const View& v : dst_) {
      require(v.stride[3] == 1, "zero: rows must be contiguous (stride 1 in dim 3)");
      ends_.push_back(rows += v.rows());
    }
  }
  const char* name() const override { return "zero"; }
  std::string detail() const override {
    int64_t floats = 0;
    for (const View& v : dst_) floats += v.numel();
    return std::to_string(dst_.size()) + " views, " + std::to_string(floats) + " floats";
  }
  std::vector<View> views() const override { return dst_; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t r0, r1;
    split_range(ends_.back(), tid, nth, &r0, &r1);
    // First view holding row r0: the first whose (exclusive) end row exceeds it.
    size_t k = std::upper_bound(ends_.begin(), ends_.end(), r0) - ends_.begin();
    for (; r0 < r1; ++k) {
      const View& v = dst_[k];
      const int64_t begin = ends_[k] - v.rows(), stop = std::min(r1, ends_[k]);
      clear_rows(buf.at(v), v, r0 - begin, stop - begin);
      r0 = stop;
    }
  }

 private:
  // w <= 16 floats as two fixed-size (inlined) stores that may overlap: borders are mostly
  // such short rows (the pad columns between image rows), where a memset call per row cost
  // more than the stores.
  static inline void clear_short(float* row, int64_t w) {
    if (w >= 8) {
      std::memset(row, 0, 8 * sizeof(float));
      std::memset(row + w - 8, 0, 8 * sizeof(float));
    } else if (w >= 4) {
      std::memset(row, 0, 4 * sizeof(float));
      std::memset(row + w - 4, 0, 4 * sizeof(float));
    } else if (w >= 2) {
      std::memset(row, 0, 2 * sizeof(float));
      std::memset(row + w - 2, 0, 2 * sizeof(float));
    } else {
      row[0] = 0.0f;
    }
  }

  // Rows [a, b) of view v (row r = (i0, i1, i2) in row-major order); the row index advances
  // without divisions.
  static void clear_rows(float* base, const View& v, int64_t a, int64_t b) {
    const int64_t w = v.dim[3];
    int64_t i2 = a % v.dim[2], i01 = a / v.dim[2];
    int64_t i1 = i01 % v.dim[1], i0 = i01 / v.dim[1];
    for (int64_t r = a; r < b; ++r) {
      float* row = base + i0 * v.stride[0] + i1 * v.stride[1] + i2 * v.stride[2];
      if (w <= 16) {
        clear_short(row, w);
      } else {
        std::memset(row, 0, sizeof(float) * w);
      }
      if (++i2 == v.dim[2]) {
        i2 = 0;
        if (++i1 == v.dim[1]) {
          i1 = 0;
          ++i0;
        }
      }
    }
  }

  std::vector<View> dst_;
  std::vector<int64_t> ends_;  // cumulative row counts: view k holds rows [ends_[k-1], ends_[k])
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<ZeroSpec>(m, "ZeroSpec")
      .def(py::init<>())
      .def_readwrite("dst", &ZeroSpec::dst);
  plan.def("add", &add_step<ZeroStep, ZeroSpec>);
}

}  // namespace fd
