// Shared vocabulary of the plan executor: tensor views, buffer spaces, steps.
//
// Every tensor the plan touches is addressed through a View: a 4-D strided window
// (dims d0..d3, strides in floats) whose element (i0, i1, i2, i3) lives at
//     base(space, slot) + origin + i0*s0 + i1*s1 + i2*s2 + i3*s3.
// Rank-4 activations are stored as padded NCHW planes (origin skips the zero border), lower ranks
// are compact with leading unit dims, broadcast operands use stride 0. The Python planner
// (runtime/planner/) computes every origin and stride; native code never guesses a layout.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "activation.h"

namespace fd {

// Where a view's floats live: the per-call workspace arena, the plan's constants, or one of the
// caller's input / output arrays (`slot` says which).
enum Space : int { kArena = 0, kConst = 1, kInput = 2, kOutput = 3 };

struct View {
  int space = kArena;
  int slot = 0;
  int64_t origin = 0;
  int64_t dim[4] = {1, 1, 1, 1};
  int64_t stride[4] = {0, 0, 0, 0};
  int64_t rows() const { return dim[0] * dim[1] * dim[2]; }
  int64_t numel() const { return dim[0] * dim[1] * dim[2] * dim[3]; }
  // Offsets of the first and one past the last float the view reaches (strides may be 0).
  int64_t first() const {
    int64_t lo = origin;
    for (int i = 0; i < 4; ++i)
      if (stride[i] < 0) lo += (dim[i] - 1) * stride[i];
    return lo;
  }
  int64_t end() const {
    int64_t hi = origin;
    for (int i = 0; i < 4; ++i)
      if (stride[i] > 0) hi += (dim[i] - 1) * stride[i];
    return hi + 1;
  }
};

// Base pointers of the spaces for one call.
struct Buffers {
  float* arena = nullptr;
  const float* const* consts = nullptr;  // one table per View::slot (Plan's ConstSlot)
  const float* const* inputs = nullptr;
  float* const* outputs = nullptr;
  float* base(const View& v) const {
    switch (v.space) {
      case kArena: return arena;
      case kConst: return const_cast<float*>(consts[v.slot]);
      case kInput: return const_cast<float*>(inputs[v.slot]);
      default: return outputs[v.slot];
    }
  }
  float* at(const View& v) const { return base(v) + v.origin; }
};

// Row wavefront (Plan::execute_serial, exec/wavefront.cpp): consecutive steps of one group run
// row by row, each as far as the rows it reads allow, so a row is read again soon after it was
// written. Indices are positions within the group (runtime/planner/wavefront.py).
struct WaveInfo {
  int64_t group = -1;      // < 0: not part of a wavefront
  int in_from = -1;        // the member whose output this step reads (-1: written before)
  int res_from = -1;       // the member whose output is this step's residual (-1: none / before)
  // Earlier members reading, as input / as residual, what this step's output overwrites: the
  // step writes a row only once they have read past it.
  std::vector<int> guard_in, guard_res;
  int64_t rows = 0;        // output rows
  // Output row r reads input rows [r * stride_h - pad_top, r * stride_h - pad_top + reach_rows].
  int64_t stride_h = 1, pad_top = 0, reach_rows = 0;
  int64_t step = 1;        // rows per sweep
  // Rows past the end of a computed range that the range may also write (and read for): 1 for
  // planar members, whose ranges are cut at whole vectors (the last one runs into the next row).
  int64_t overhang = 0;
  // The group may run in row bands on several threads (WaveBands): every member computes exact
  // rows and no member's output shares storage with an earlier member's output.
  bool bands = false;
};

// One plan step. A step runs in one or more stages; a stage is cut into `units(stage, hint)`
// independent work units (hint = what the plan suggests, about 2 per thread), which threads
// claim dynamically; a stage starts only when every unit of the previous one has completed.
// run(stage, buf, u, n) does unit u of n.
class Step {
 public:
  virtual ~Step() = default;
  virtual int stages() const { return 1; }
  virtual int64_t units(int /*stage*/, int64_t hint) const { return hint; }
  virtual void run(int stage, const Buffers& buf, int tid, int nth) const = 0;
  // The whole stage on the calling thread (a plan run serially, or one image of run_images).
  // Steps whose units are fixed slices (conv channel ranges balanced for the plan's threads)
  // override it to run as one range: slices would reread the input window once per slice.
  virtual void run_serial(int stage, const Buffers& buf) const {
    const int64_t n = units(stage, 1);
    for (int64_t u = 0; u < n; ++u) run(stage, buf, static_cast<int>(u), static_cast<int>(n));
  }
  virtual const char* name() const = 0;
  // What runs, for Engine.describe(): e.g. the kernel's layout and thread split.
  virtual std::string detail() const { return ""; }
  // Light steps (copies, pooling, the classifier) at the start or end of a plan are run by the
  // calling thread alone: splitting them would cost more in synchronisation than it saves.
  virtual bool light() const { return true; }
  // Wavefront members describe their rows and compute any range of them (serial runs, and
  // row bands of parallel ones).
  virtual const WaveInfo* wave() const { return nullptr; }
  virtual void run_rows(const Buffers& /*buf*/, int64_t /*r0*/, int64_t /*r1*/) const {}
  // Part `part` of `parts` of run_rows(r0, r1), parts computing disjoint outputs: the rows
  // between a group's row bands (WaveBands fills), which one thread would compute alone.
  // Steps that cannot divide a row range compute it in part 0.
  virtual void run_rows_part(const Buffers& buf, int64_t r0, int64_t r1, int part,
                             int /*parts*/) const {
    if (part == 0) run_rows(buf, r0, r1);
  }
  // Every view the step reads or writes (Plan::add checks them against the spaces' sizes).
  virtual std::vector<View> views() const = 0;
};

// Runs one wavefront group's members (in plan order) on the calling thread.
void run_wavefront(const std::vector<const Step*>& members, const Buffers& buf);

// One wavefront group of a parallel plan, cut into row bands, one per thread. Band b runs the
// group's row wavefront over the rows of each member that it can compute from its own rows of
// the earlier members (a member's band shrinks by the rows its taps reach into the neighbouring
// bands), and that no other band or the fill still reads where the member overwrites storage.
// So bands never wait on each other. The fill then computes the rows left between the bands,
// member by member in plan order, on one thread. Each output row sums the same taps in the same
// order as layer by layer, so results are bit-identical.
class WaveBands {
 public:
  // Null when the group cannot run in `bands` bands: a member without WaveInfo::bands, rows
  // per band below kMinBandRows, or more than kMaxFillShare of the rows left to the fill.
  static std::unique_ptr<WaveBands> make(const std::vector<const Step*>& members, int bands);
  int bands() const { return static_cast<int>(region_.size()); }
  void run_band(int band, const Buffers& buf) const;
  int members() const { return static_cast<int>(members_.size()); }
  // Whether member m has rows no band computes, and part `part` of `parts` of them. The fill
  // of member m runs once every band and the fills of members before m are complete: what it
  // reads is then there, and no earlier member still reads what it overwrites.
  bool fills(int m) const;
  void run_fill(int m, int part, int parts, const Buffers& buf) const;

 private:
  using Rows = std::pair<int64_t, int64_t>;  // [first, end)
  std::vector<Rows> rows_outside_bands(int m) const;
  std::vector<const Step*> members_;
  std::vector<const WaveInfo*> info_;
  std::vector<std::vector<Rows>> region_;     // [band][member]
  std::vector<std::vector<Rows>> fill_;       // [member]: rows no band computes
};

// Contiguous share [begin, end) of `total` items for unit `tid` of `nth`.
inline void split_range(int64_t total, int tid, int nth, int64_t* begin, int64_t* end) {
  *begin = total * tid / nth;
  *end = total * (tid + 1) / nth;
}

// A spec that fails validation: the step constructors throw this (Python sees ValueError).
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

using StepPtr = std::unique_ptr<Step>;

}  // namespace fd
