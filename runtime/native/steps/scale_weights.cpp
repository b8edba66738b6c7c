// Gated weights: dst[i] = src[i] * gate[channel[i]], the stored weights of a conv scaled by a
// per-input-channel gate computed earlier in the same run (a squeeze-and-excitation gate folded
// into the conv that reads the gated tensor: conv(x * g) = conv with w[:, c] * g[c]). At 90%
// sparsity that is a few thousand multiplies instead of a pass over the gated tensor.
// References: runtime/passes/channel_gate.py, runtime/ops/conv.py.
#include <string>
#include <vector>

#include "steps/bind.h"

namespace fd {

namespace {

struct ScaleWeightsSpec {
  View gate;  // (1, C, 1, 1): the gate of input channel c at gate.origin + c * stride[1]
  View dst;   // the scaled weights in the arena: dim[3] == src.size(), stride 1
  std::vector<float> src;
  std::vector<int32_t> channel;  // input channel of each stored weight
};

class ScaleWeightsStep final : public Step {
 public:
  ScaleWeightsStep(ScaleWeightsSpec spec, const PlanContext&) : s_(std::move(spec)) {
    const int64_t n = static_cast<int64_t>(s_.src.size());
    require(static_cast<int64_t>(s_.channel.size()) == n, "scale weights: one channel per weight");
    require(s_.dst.numel() == n && s_.dst.stride[3] == 1 && s_.dst.dim[3] == n,
            "scale weights: the destination must be the weights' count, contiguous");
    const int64_t channels = s_.gate.dim[1];
    require(s_.gate.numel() == channels, "scale weights: the gate must be (1, C, 1, 1)");
    for (int32_t c : s_.channel)
      require(c >= 0 && c < channels, "scale weights: channel index out of range");
  }
  const char* name() const override { return "scale_weights"; }
  std::vector<View> views() const override { return {s_.gate, s_.dst}; }
  void run(int, const Buffers& buf, int tid, int nth) const override {
    int64_t i0, i1;
    split_range(static_cast<int64_t>(s_.src.size()), tid, nth, &i0, &i1);
    const float* gate = buf.at(s_.gate);
    const int64_t gs = s_.gate.stride[1];
    float* dst = buf.at(s_.dst);
    for (int64_t i = i0; i < i1; ++i) dst[i] = s_.src[i] * gate[s_.channel[i] * gs];
  }

 private:
  ScaleWeightsSpec s_;
};

}  // namespace

FD_BIND_STEPS(m, plan) {
  py::class_<ScaleWeightsSpec> spec(m, "ScaleWeightsSpec");
  spec.def(py::init<>())
      .def_readwrite("gate", &ScaleWeightsSpec::gate)
      .def_readwrite("dst", &ScaleWeightsSpec::dst);
  def_array(spec, "src", &ScaleWeightsSpec::src);
  def_array(spec, "channel", &ScaleWeightsSpec::channel);
  plan.def("add", &add_step<ScaleWeightsStep, ScaleWeightsSpec>);
}

}  // namespace fd
