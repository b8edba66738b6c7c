// Python bindings of step specs, declared next to each step (one step family per file).
//
// A step family binds its spec class (typed fields, checked on the way in) and a `Plan.add`
// overload taking that spec; the step's constructor validates the spec once. Each file registers
// its binder with FD_BIND_STEPS, and module.cpp calls every registered binder, so adding a step
// family touches only its own file.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "exec/plan.h"

namespace fd {

namespace py = pybind11;

using Binder = void (*)(py::module_& m, py::class_<Plan>& plan);
int register_binder(Binder binder);
const std::vector<Binder>& binders();

// A std::vector<T> field as a NumPy array property: the setter takes a C-contiguous array of
// exactly dtype T (no silent casts: an int64 offset must never be truncated to int32 unseen),
// the getter returns a copy.
template <typename T, typename Spec>
void def_array(py::class_<Spec>& cls, const char* name, std::vector<T> Spec::*field) {
  cls.def_property(
      name,
      [field](const Spec& s) {
        const std::vector<T>& v = s.*field;
        return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
      },
      [field, name](Spec& s, const py::array& a) {
        if (!py::isinstance<py::array_t<T>>(a) || !(a.flags() & py::array::c_style))
          throw py::type_error(std::string(name) + ": expected a C-contiguous array of " +
                               std::string(py::str(py::dtype::of<T>())));
        const T* data = static_cast<const T*>(a.data());
        (s.*field).assign(data, data + a.size());
      });
}

// The plan takes ownership of a step built from `spec` with the plan's context. The spec's
// arrays move into the step (a model's packed weights are not held twice): afterwards the
// Python spec object keeps its scalar fields but its arrays are empty.
template <typename Step, typename Spec>
void add_step(Plan& plan, Spec& spec) {
  plan.add(StepPtr(new Step(std::move(spec), plan.context())));
}

}  // namespace fd

#define FD_BIND_CONCAT_(a, b) a##b
#define FD_BIND_CONCAT(a, b) FD_BIND_CONCAT_(a, b)
// FD_BIND_STEPS(m, plan) { ...bindings... }: registered at load, run by module.cpp.
#define FD_BIND_STEPS(m, plan)                                                            \
  static void FD_BIND_CONCAT(fd_bind_, __LINE__)(::fd::py::module_ & m,                   \
                                                 ::pybind11::class_<::fd::Plan> & plan);  \
  static const int FD_BIND_CONCAT(fd_bind_registered_, __LINE__) =                        \
      ::fd::register_binder(&FD_BIND_CONCAT(fd_bind_, __LINE__));                         \
  static void FD_BIND_CONCAT(fd_bind_, __LINE__)(::fd::py::module_ & m,                   \
                                                 ::pybind11::class_<::fd::Plan> & plan)
