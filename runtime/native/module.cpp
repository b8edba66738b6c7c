// Python bindings of the native engine (module runtime._native).
//
// Python (runtime/plan.py) builds a Plan step by step: every tensor operand is a view given as a
// 10-tuple (space, origin, d0, d1, d2, d3, s0, s1, s2, s3); weights and constants as NumPy arrays
// (copied into the plan). Plan.run releases the GIL, so several Python threads can run one plan.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "conv_kernels.h"
#include "conv_step.h"
#include "plan.h"

namespace py = pybind11;

namespace fd {
namespace {

View to_view(const std::vector<int64_t>& t) {
  if (t.size() != 10) throw std::invalid_argument("a view is (space, origin, 4 dims, 4 strides)");
  View v;
  v.space = static_cast<int>(t[0]);
  v.origin = t[1];
  for (int i = 0; i < 4; ++i) {
    v.dim[i] = t[2 + i];
    v.stride[i] = t[6 + i];
  }
  return v;
}

template <typename T>
std::vector<T> to_vector(const py::handle& obj) {
  auto arr = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  if (!arr) throw std::invalid_argument("expected a numeric array");
  return std::vector<T>(arr.data(), arr.data() + arr.size());
}

Activation to_act(int kind, float lo, float hi) {
  Activation a;
  a.kind = kind;
  a.lo = lo;
  a.hi = hi;
  return a;
}

void add_conv(Plan& plan, const py::dict& d) {
  ConvSpec s;
  s.in = to_view(d["in"].cast<std::vector<int64_t>>());
  s.out = to_view(d["out"].cast<std::vector<int64_t>>());
  s.has_res = !d["res"].is_none();
  if (s.has_res) s.res = to_view(d["res"].cast<std::vector<int64_t>>());
  s.bsr = d["bsr"].cast<bool>();
  s.skip_empty = d.contains("skip_empty") && d["skip_empty"].cast<bool>();
  s.lanes = d.contains("lanes") ? d["lanes"].cast<int64_t>() : 1;
  s.gather = d.contains("gather") && d["gather"].cast<bool>();
  s.strided = d.contains("strided") && d["strided"].cast<bool>();
  s.direct = d.contains("direct") && d["direct"].cast<bool>();
  if (s.direct && (s.bsr || s.lanes != 1 || s.phase_split))
    throw std::invalid_argument("direct conv needs planar CSR weights and no phase split");
  if (s.strided && (s.bsr || s.lanes % kernels().vector_floats != 0))
    throw std::invalid_argument("strided conv needs CSR weights and lanes % vector floats == 0");
  s.stream_rs = d["stream_rs"].cast<int64_t>();
  s.stream_len = d["stream_len"].cast<int64_t>();
  s.width = d["width"].cast<int64_t>();
  s.fast = d["fast"].cast<bool>();
  s.pad_top = d["pad_top"].cast<int64_t>();
  s.pad_left = d["pad_left"].cast<int64_t>();
  s.phase_split = d["phase_split"].cast<bool>();
  s.split_here = d["split_here"].cast<bool>();
  s.stride_h = d["stride_h"].cast<int64_t>();
  s.stride_w = d["stride_w"].cast<int64_t>();
  s.phase_rows = d["phase_rows"].cast<int64_t>();
  s.phase_rs = d["phase_rs"].cast<int64_t>();
  s.phase_plane = d["phase_plane"].cast<int64_t>();
  s.scratch_origin = d["scratch_origin"].cast<int64_t>();
  s.ptr = to_vector<int32_t>(d["ptr"]);
  s.off = to_vector<int32_t>(d["off"]);
  s.val = to_vector<float>(d["val"]);
  s.bias = to_vector<float>(d["bias"]);
  s.mask = to_vector<uint32_t>(d["mask"]);
  s.bounds = to_vector<int64_t>(d["bounds"]);
  s.units = d["units"].cast<int64_t>();
  s.row_units = d.contains("row_units") ? d["row_units"].cast<int64_t>() : 0;
  if (d.contains("blocks")) {
    s.blocks = d["blocks"].cast<int64_t>();
    s.block_ptr = to_vector<int32_t>(d["block_ptr"]);
    if (s.blocks < 1 || !s.strided ||
        static_cast<int64_t>(s.block_ptr.size()) != s.units * (s.blocks + 1))
      throw std::invalid_argument("conv: channel blocks need a strided CSR conv and "
                                  "units * (blocks + 1) block pointers");
  }
  s.window_planes = d["window_planes"].cast<int64_t>();
  s.window_reach = d["window_reach"].cast<int64_t>();
  s.halo = d.contains("halo") && d["halo"].cast<bool>();
  if (s.halo && !s.strided) throw std::invalid_argument("conv: halo needs a strided CSR conv");
  s.act = to_act(d["act"].cast<int>(), d["lo"].cast<float>(), d["hi"].cast<float>());
  if (s.bounds.size() < 2) throw std::invalid_argument("conv: bounds needs at least 2 entries");
  if (d.contains("wave_group")) {
    s.wave.group = d["wave_group"].cast<int64_t>();
    s.wave.in_from = d["wave_in"].cast<int>();
    s.wave.res_from = d["wave_res"].cast<int>();
    s.wave.guard_in = d["wave_guard_in"].cast<std::vector<int>>();
    s.wave.guard_res = d["wave_guard_res"].cast<std::vector<int>>();
    s.wave.reach_rows = d["wave_reach_rows"].cast<int64_t>();
    s.wave.step = d["wave_step"].cast<int64_t>();
    s.wave.overhang = d["wave_overhang"].cast<int64_t>();
    if (s.wave.step < 1 || s.wave.overhang < 0 || s.wave.overhang > 1)
      throw std::invalid_argument("conv: wavefront step must be >= 1 and overhang 0 or 1");
  }
  plan.add(make_conv_step(std::move(s)));
}

void add_tiny_conv(Plan& plan, const py::dict& d) {
  TinyConvSpec s;
  s.in = to_view(d["in"].cast<std::vector<int64_t>>());
  s.out = to_view(d["out"].cast<std::vector<int64_t>>());
  s.has_res = !d["res"].is_none();
  if (s.has_res) s.res = to_view(d["res"].cast<std::vector<int64_t>>());
  s.wt = to_vector<float>(d["wt"]);
  s.bias = to_vector<float>(d["bias"]);
  s.wt_stride = d["wt_stride"].cast<int64_t>();
  s.bounds = to_vector<int64_t>(d["bounds"]);
  s.act = to_act(d["act"].cast<int>(), d["lo"].cast<float>(), d["hi"].cast<float>());
  if (s.bounds.size() < 2) throw std::invalid_argument("tiny conv: bounds needs 2 entries");
  if (s.in.stride[3] != 1) throw std::invalid_argument("tiny conv: rows must be contiguous");
  if (s.wt_stride % 16 || static_cast<int64_t>(s.wt.size()) != s.wt_stride * s.in.dim[1] ||
      static_cast<int64_t>(s.bias.size()) != s.wt_stride)
    throw std::invalid_argument("tiny conv: weights must be [blocks][in_channels][16]");
  plan.add(make_tiny_conv_step(std::move(s)));
}

void run_plan(Plan& plan, const py::array& x, py::array& y) {
  auto xin = py::array_t<float, py::array::c_style>::ensure(x);
  if (!xin || xin.size() != plan.input_floats())
    throw std::invalid_argument("input must be a C-contiguous float32 array of the planned size");
  if (!(y.flags() & py::array::c_style) || !py::isinstance<py::array_t<float>>(y) ||
      y.size() != plan.output_floats() || !y.writeable())
    throw std::invalid_argument("output must be a writable C-contiguous float32 array of the planned size");
  const float* in = xin.data();
  float* out = static_cast<float*>(y.mutable_data());
  py::gil_scoped_release release;
  plan.run(in, out);
}

}  // namespace
}  // namespace fd

PYBIND11_MODULE(_native, m) {
  using namespace fd;
  m.doc() = "featherdeploy native sparse CPU engine (plan executor and kernels)";
  m.def("native_isa", [] { return std::string(kernels().isa); },
        "Kernel variant chosen for this CPU (FEATHERDEPLOY_ISA forces one).");
  m.def("vector_floats", [] { return kernels().vector_floats; });
  // The column-segment row kernels on their own (runtime/kernels/native.py): (n, P * V) rows
  // <-> (n, P + 2, V) segment rows, halo positions first and last.
  m.def("segment_rows", [](const py::array& x, bool to_segments) {
    const KernelTable k = kernels();
    const int64_t V = k.vector_floats;
    auto in = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(x);
    if (!in || (to_segments ? in.ndim() != 2 || in.shape(1) % V != 0
                            : in.ndim() != 3 || in.shape(2) != V || in.shape(1) < 3))
      throw std::invalid_argument("segment_rows: (n, P * V) rows or (n, P + 2, V) segments");
    const int64_t n = in.shape(0), P = to_segments ? in.shape(1) / V : in.shape(1) - 2;
    py::array_t<float> out = to_segments ? py::array_t<float>({n, P + 2, V})
                                         : py::array_t<float>({n, P * V});
    for (int64_t r = 0; r < n; ++r) {
      if (to_segments) {
        k.to_segments(in.data() + r * P * V, out.mutable_data() + r * (P + 2) * V + V, P);
      } else {
        k.from_segments(in.data() + r * (P + 2) * V + V, out.mutable_data() + r * P * V, P);
      }
    }
    return out;
  });
  m.attr("BSR_BLOCK") = kBsrBlock;

  py::class_<Plan>(m, "Plan")
      .def(py::init([](int threads, int64_t arena_floats, const py::handle& consts,
                       int64_t input_floats, int64_t output_floats) {
             return new Plan(threads, arena_floats, to_vector<float>(consts), input_floats,
                             output_floats);
           }),
           py::arg("threads"), py::arg("arena_floats"), py::arg("consts"), py::arg("input_floats"),
           py::arg("output_floats"))
      .def("add_copy", [](Plan& p, const std::vector<int64_t>& s, const std::vector<int64_t>& d) {
        p.add(make_copy_step(to_view(s), to_view(d)));
      })
      .def("add_segment_copy", [](Plan& p, const std::vector<int64_t>& planar,
                                  const std::vector<int64_t>& segments, bool to_segments) {
        p.add(make_segment_copy_step(to_view(planar), to_view(segments), to_segments));
      })
      .def("add_affine", [](Plan& p, const std::vector<int64_t>& s, const std::vector<int64_t>& d,
                            const py::handle& scale, const py::handle& shift, int act, float lo,
                            float hi) {
        p.add(make_affine_step(to_view(s), to_view(d), to_vector<float>(scale),
                               to_vector<float>(shift), to_act(act, lo, hi)));
      })
      .def("add_add", [](Plan& p, const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                         const std::vector<int64_t>& d, int act, float lo, float hi) {
        p.add(make_add_step(to_view(a), to_view(b), to_view(d), to_act(act, lo, hi)));
      })
      .def("add_softmax", [](Plan& p, const std::vector<int64_t>& s, const std::vector<int64_t>& d,
                             int axis) {
        if (axis < 0 || axis > 3) throw std::invalid_argument("softmax axis must be in [0, 3]");
        p.add(make_softmax_step(to_view(s), to_view(d), axis));
      })
      .def("add_gemm", [](Plan& p, const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                          const py::object& c, const std::vector<int64_t>& y, float alpha,
                          float beta) {
        View cv;
        const bool has_c = !c.is_none();
        if (has_c) cv = to_view(c.cast<std::vector<int64_t>>());
        p.add(make_gemm_step(to_view(a), to_view(b), has_c ? &cv : nullptr, to_view(y), alpha, beta));
      })
      .def("add_pool", [](Plan& p, bool is_max, const std::vector<int64_t>& s,
                          const std::vector<int64_t>& d, std::vector<int64_t> k,
                          std::vector<int64_t> st, std::vector<int64_t> dil,
                          std::vector<int64_t> pb, std::vector<int64_t> pe, bool include_pad) {
        if (k.size() != 2 || st.size() != 2 || dil.size() != 2 || pb.size() != 2 || pe.size() != 2)
          throw std::invalid_argument("pool parameters must have 2 entries");
        p.add(make_pool_step(is_max, to_view(s), to_view(d), k.data(), st.data(), dil.data(),
                             pb.data(), pe.data(), include_pad));
      })
      .def("add_global_pool", [](Plan& p, bool is_max, const std::vector<int64_t>& s,
                                 const std::vector<int64_t>& d) {
        p.add(make_global_pool_step(is_max, to_view(s), to_view(d)));
      })
      .def("add_conv", &add_conv)
      .def("add_conv_tiny", &add_tiny_conv)
      .def("run", &run_plan, py::arg("x"), py::arg("y"))
      .def("run_images", [](Plan& p, const py::array& x, py::array& y, int64_t images) {
        auto xin = py::array_t<float, py::array::c_style>::ensure(x);
        if (images < 1 || !xin || xin.size() != p.input_floats() * images)
          throw std::invalid_argument("run_images: input must hold `images` planned inputs");
        if (!(y.flags() & py::array::c_style) || !py::isinstance<py::array_t<float>>(y) ||
            y.size() != p.output_floats() * images || !y.writeable())
          throw std::invalid_argument("run_images: output must hold `images` planned outputs");
        const float* in = xin.data();
        float* out = static_cast<float*>(y.mutable_data());
        py::gil_scoped_release release;
        p.run_images(in, out, images);
      })
      .def("profile", [](Plan& p, const py::array& x, py::array& y, int reps) {
        auto xin = py::array_t<float, py::array::c_style>::ensure(x);
        if (!xin || xin.size() != p.input_floats() || y.size() != p.output_floats())
          throw std::invalid_argument("profile: arrays of the planned sizes required");
        const float* in = xin.data();
        float* out = static_cast<float*>(y.mutable_data());
        py::gil_scoped_release release;
        return p.profile(in, out, reps);
      })
      .def_property_readonly("threads", &Plan::threads)
      .def_property_readonly("helper_units", [](const Plan& p) { return p.helper_units.load(); })
      .def_property_readonly("arena_floats", &Plan::arena_floats)
      .def("step_names", [](const Plan& p) {
        std::vector<std::string> out;
        for (const char* n : p.step_names()) out.emplace_back(n);
        return out;
      });
}
