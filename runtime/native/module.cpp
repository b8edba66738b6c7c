// Python bindings of the native engine (module runtime._native).
//
// Python (runtime/planner/) builds a Plan step by step from typed specs (View, ActivationSpec and
// one spec class per step family, bound next to each step in steps/*.cpp); each step validates
// its spec when it is added. Plan.run releases the GIL, so several Python threads can run one plan.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "activation.h"
#include "common.h"
#include "exec/plan.h"
#include "kernels/conv_kernels.h"
#include "kernels/winograd.h"
#include "steps/bind.h"
#include "tunables.h"

namespace fd {

std::vector<Binder>& binder_list() {
  static std::vector<Binder> list;
  return list;
}
int register_binder(Binder binder) {
  binder_list().push_back(binder);
  return static_cast<int>(binder_list().size());
}
const std::vector<Binder>& binders() { return binder_list(); }

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

// The arrays' data pointers after checking dtype, layout and size (`sizes` floats each, times
// `images`). Outputs must be writable.
template <typename Ptr>
std::vector<Ptr> data_pointers(const std::vector<py::array>& arrays,
                               const std::vector<int64_t>& sizes, int64_t images,
                               const char* what, bool writable) {
  if (arrays.size() != sizes.size())
    throw std::invalid_argument(std::string("plan: expected ") + std::to_string(sizes.size()) +
                                " " + what + " arrays, got " + std::to_string(arrays.size()));
  std::vector<Ptr> pointers;
  for (size_t k = 0; k < arrays.size(); ++k) {
    const py::array& a = arrays[k];
    if (!py::isinstance<FloatArray>(a) || !(a.flags() & py::array::c_style) ||
        a.size() != sizes[k] * images || (writable && !a.writeable()))
      throw std::invalid_argument(std::string("plan: ") + what + " " + std::to_string(k) +
                                  " must be a " + (writable ? "writable " : "") +
                                  "C-contiguous float32 array of the planned size");
    void* data = writable ? const_cast<py::array&>(a).mutable_data() : const_cast<void*>(a.data());
    pointers.push_back(static_cast<Ptr>(data));
  }
  return pointers;
}

std::array<int64_t, 4> dims_of(const View& v) { return {v.dim[0], v.dim[1], v.dim[2], v.dim[3]}; }
std::array<int64_t, 4> strides_of(const View& v) {
  return {v.stride[0], v.stride[1], v.stride[2], v.stride[3]};
}

// A^T, G, B^T of one Winograd tile (kernels/winograd.h) and the weights' channel block.
template <class W>
py::dict winograd_dict() {
  py::array_t<float> at({W::kOut, W::kTile}), g({W::kTile, winograd::kKernel}),
      bt({W::kTile, W::kTile});
  std::memcpy(at.mutable_data(), W::kAT, sizeof W::kAT);
  std::memcpy(g.mutable_data(), W::kG, sizeof W::kG);
  std::memcpy(bt.mutable_data(), W::kBT, sizeof W::kBT);
  return py::dict(py::arg("AT") = at, py::arg("G") = g, py::arg("BT") = bt,
                  py::arg("block") = winograd::kBlock);
}

void bind_core(py::module_& m) {
  py::class_<View>(m, "View")
      .def(py::init([](int space, int slot, int64_t origin, std::array<int64_t, 4> dims,
                       std::array<int64_t, 4> strides) {
             View v;
             v.space = space;
             v.slot = slot;
             v.origin = origin;
             for (int i = 0; i < 4; ++i) {
               v.dim[i] = dims[i];
               v.stride[i] = strides[i];
             }
             return v;
           }),
           py::arg("space"), py::arg("slot"), py::arg("origin"), py::arg("dims"),
           py::arg("strides"))
      .def(py::init<>())
      .def_readonly("space", &View::space)
      .def_readonly("slot", &View::slot)
      .def_readonly("origin", &View::origin)
      .def_property_readonly("dims", &dims_of)
      .def_property_readonly("strides", &strides_of);
  m.attr("SPACES") = py::dict(py::arg("arena") = static_cast<int>(kArena),
                              py::arg("const") = static_cast<int>(kConst),
                              py::arg("input") = static_cast<int>(kInput),
                              py::arg("output") = static_cast<int>(kOutput));

  py::class_<WaveInfo>(m, "WaveInfo")
      .def(py::init<>())
      .def_readwrite("group", &WaveInfo::group)
      .def_readwrite("in_from", &WaveInfo::in_from)
      .def_readwrite("res_from", &WaveInfo::res_from)
      .def_readwrite("guard_in", &WaveInfo::guard_in)
      .def_readwrite("guard_res", &WaveInfo::guard_res)
      .def_readwrite("reach_rows", &WaveInfo::reach_rows)
      .def_readwrite("step", &WaveInfo::step)
      .def_readwrite("overhang", &WaveInfo::overhang)
      .def_readwrite("bands", &WaveInfo::bands);

  py::class_<ActivationSpec> act(m, "ActivationSpec");
  act.def(py::init<>())
      .def_readwrite("kind", &ActivationSpec::kind)
      .def_readwrite("lo", &ActivationSpec::lo)
      .def_readwrite("hi", &ActivationSpec::hi)
      .def_readwrite("alpha", &ActivationSpec::alpha)
      .def_readwrite("beta", &ActivationSpec::beta);
  def_array(act, "slopes", &ActivationSpec::slopes);
  py::dict kinds;
  for (int k = 0; k < kActKinds; ++k) kinds[kActivationNames[k]] = k;
  m.attr("ACTIVATION_KINDS") = kinds;
  m.attr("CONSTANTS") = py::dict(py::arg("max_vector_floats") = kMaxVectorFloats,
                                 py::arg("bsr_block") = kBsrBlock,
                                 py::arg("max_pool_kernel") = kMaxPoolKernel);
  m.def("chunk_vectors", &chunk_vectors, py::arg("vector_floats"),
        "Output vectors per chunk of the CSR kernels for a build of this vector width.");
  m.def("pair_chunk_vectors", &pair_chunk_vectors, py::arg("vector_floats"),
        "Vectors per output channel in one chunk of the interleaved CSR kernel.");
  m.def("native_isa", [](const std::string& isa) { return std::string(kernels_for(isa).isa); },
        py::arg("isa") = "auto", "Kernel variant an isa option resolves to on this CPU.");
  m.def("vector_floats", [](const std::string& isa) { return kernels_for(isa).vector_floats; },
        py::arg("isa") = "auto");
  // The column-segment row kernels on their own (runtime/kernels/native.py): (n, P * V) rows
  // <-> (n, P + 2, V) segment rows, halo positions first and last.
  m.def("segment_rows", [](const py::array& x, bool to_segments, const std::string& isa) {
    const KernelTable k = kernels_for(isa);
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
  }, py::arg("x"), py::arg("to_segments"), py::arg("isa") = "auto");
  // The batch-interleaving kernel on its own: (images, W) planar rows -> (W, images) positions.
  m.def("interleave_images", [](const py::array& x, const std::string& isa) {
    const KernelTable k = kernels_for(isa);
    auto in = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(x);
    if (!in || in.ndim() != 2)
      throw std::invalid_argument("interleave_images: (images, W) rows");
    const int64_t images = in.shape(0), W = in.shape(1);
    py::array_t<float> out({W, images});
    k.interleave_images(in.data(), W, images, out.mutable_data(), images, W);
    return out;
  }, py::arg("x"), py::arg("isa") = "auto");

  // The Winograd transforms the conv_winograd kernel applies (kernels/winograd.h) for output
  // tiles of `tile` (3 or 5): A^T, G and B^T as float32 arrays, and the output channels of one
  // block of transformed weights.
  m.def("winograd_matrices", [](int tile) {
    require(tile == winograd::F3::kOut || tile == winograd::F5::kOut,
            "winograd_matrices: tile must be 3 or 5");
    return tile == winograd::F3::kOut ? winograd_dict<winograd::F3>()
                                      : winograd_dict<winograd::F5>();
  }, py::arg("tile") = 3);

  py::class_<PlanOptions>(m, "PlanOptions")
      .def(py::init<>())
      .def_readwrite("threads", &PlanOptions::threads)
      .def_readwrite("isa", &PlanOptions::isa)
      .def_readwrite("jit", &PlanOptions::jit)
      .def_readwrite("poison_arena", &PlanOptions::poison_arena);
}

// The constant tables of a plan: held, not copied (each keeps its array alive; the array is
// released under the GIL). Read-only arrays are accepted: the plan never writes them.
std::vector<ConstSlot> const_slots(const std::vector<py::array>& tables) {
  std::vector<ConstSlot> slots;
  for (const py::array& a : tables) {
    if (!py::isinstance<FloatArray>(a) || !(a.flags() & py::array::c_style) || a.size() < 1)
      throw py::type_error("plan: constant tables must be non-empty C-contiguous float32 arrays");
    ConstSlot slot;
    slot.data = static_cast<const float*>(a.data());
    slot.floats = static_cast<int64_t>(a.size());
    slot.owner = std::shared_ptr<const void>(new py::object(a), [](const void* held) {
      py::gil_scoped_acquire gil;
      delete static_cast<const py::object*>(held);
    });
    slots.push_back(std::move(slot));
  }
  return slots;
}

// One image set (serial: on the calling thread alone), or `images` independent ones.
void run(Plan& p, const std::vector<py::array>& inputs, const std::vector<py::array>& outputs,
         int64_t images, bool serial = false) {
  if (images < 1) throw std::invalid_argument("plan: images must be >= 1");
  const auto in = data_pointers<const float*>(inputs, p.input_floats(), images, "input", false);
  const auto out = data_pointers<float*>(outputs, p.output_floats(), images, "output", true);
  py::gil_scoped_release release;
  if (images == 1) {
    p.run(in, out, serial);
  } else {
    p.run_images(in, out, images);
  }
}

py::class_<Plan> bind_plan(py::module_& m) {
  py::class_<Plan> plan(m, "Plan");
  plan.def(py::init([](const PlanOptions& options, int64_t arena_floats,
                       const std::vector<py::array>& consts, std::vector<int64_t> input_floats,
                       std::vector<int64_t> output_floats) {
             return new Plan(options, arena_floats, const_slots(consts),
                             std::move(input_floats), std::move(output_floats));
           }),
           py::arg("options"), py::arg("arena_floats"), py::arg("consts"),
           py::arg("input_floats"), py::arg("output_floats"))
      .def("run", [](Plan& p, const std::vector<py::array>& inputs,
                     const std::vector<py::array>& outputs) { run(p, inputs, outputs, 1); },
           py::arg("inputs"), py::arg("outputs"),
           "Runs the plan once: one float32 array per input and per output (planned sizes).")
      .def("run_serial", [](Plan& p, const std::vector<py::array>& inputs,
                            const std::vector<py::array>& outputs) {
             run(p, inputs, outputs, 1, true);
           },
           py::arg("inputs"), py::arg("outputs"),
           "Runs the plan once on the calling thread alone (what one thread would cost).")
      .def("run_images", [](Plan& p, const std::vector<py::array>& inputs,
                            const std::vector<py::array>& outputs, int64_t images) {
             run(p, inputs, outputs, images);
           },
           py::arg("inputs"), py::arg("outputs"), py::arg("images"),
           "Runs `images` independent input sets through a plan built for one image.")
      .def("profile", [](Plan& p, const std::vector<py::array>& inputs,
                         const std::vector<py::array>& outputs, int reps) {
             const auto in = data_pointers<const float*>(inputs, p.input_floats(), 1, "input", false);
             const auto out = data_pointers<float*>(outputs, p.output_floats(), 1, "output", true);
             py::gil_scoped_release release;
             return p.profile(in, out, reps);
           })
      .def("timeline", [](Plan& p, const std::vector<py::array>& inputs,
                          const std::vector<py::array>& outputs, int reps) {
             const auto in = data_pointers<const float*>(inputs, p.input_floats(), 1, "input", false);
             const auto out = data_pointers<float*>(outputs, p.output_floats(), 1, "output", true);
             std::vector<Plan::Span> spans;
             {
               py::gil_scoped_release release;
               spans = p.timeline(in, out, reps);
             }
             std::vector<std::tuple<int64_t, int64_t, double>> rows;
             for (const Plan::Span& s : spans) rows.emplace_back(s.first, s.last, s.seconds);
             return rows;
           },
           "Development aid: (first step, last step, seconds) per span of `reps` real runs.")
      .def_property_readonly("threads", &Plan::threads)
      .def_property_readonly("isa", [](const Plan& p) { return p.context().kernels.isa; })
      .def_property_readonly("jit", [](const Plan& p) { return p.context().jit; })
      .def_property_readonly("helper_units", [](const Plan& p) { return p.helper_units.load(); })
      .def_property_readonly("banded_groups", &Plan::banded_groups,
                             "Wavefront groups that parallel runs cut into row bands.")
      .def_property_readonly("serial_wave_groups", &Plan::serial_wave_groups,
                             "Wavefront groups that serial runs may compute as row wavefronts.")
      .def_property("serial_wavefronts", &Plan::serial_wavefronts, &Plan::set_serial_wavefronts,
                    "Whether serial runs compute those groups as row wavefronts (else member "
                    "by member; results are bit-identical). Set it between runs.")
      .def_property_readonly("arena_floats", &Plan::arena_floats)
      .def_property_readonly("const_addresses", [](const Plan& p) {
             std::vector<uintptr_t> out;
             for (const ConstSlot& c : p.consts()) out.push_back(reinterpret_cast<uintptr_t>(c.data));
             return out;
           }, "Where each constant table's floats are (plans sharing a constant show one address).")
      .def_property_readonly("input_floats", &Plan::input_floats)
      .def_property_readonly("output_floats", &Plan::output_floats)
      .def("step_names", [](const Plan& p) {
        std::vector<std::string> out;
        for (const auto& s : p.steps()) out.emplace_back(s->name());
        return out;
      })
      .def("step_details", [](const Plan& p) {
        std::vector<std::string> out;
        for (const auto& s : p.steps()) out.push_back(s->detail());
        return out;
      });
  return plan;
}

}  // namespace
}  // namespace fd

PYBIND11_MODULE(_native, m) {
  using namespace fd;
  m.doc() = "featherdeploy native sparse CPU engine (plan executor and kernels)";
  bind_core(m);
  py::class_<Plan> plan = bind_plan(m);
  for (Binder binder : binders()) binder(m, plan);
}
