// The executable plan: an ordered list of steps, run in one native call per inference.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common.h"
#include "kernels/conv_kernels.h"

namespace fd {

// What the Python side decides for a whole plan (runtime/options.py EngineOptions).
struct PlanOptions {
  int threads = 1;
  std::string isa = "auto";  // kernel variant: auto | generic | avx2 | avx512
  bool jit = true;           // machine code generated per conv where it pays (jit/jit_x86.h)
  // Debug aid: new workspaces start as NaN instead of zeros, so any read of arena memory that no
  // step of the run wrote (a border the planner failed to zero) shows in the outputs.
  bool poison_arena = false;
};

// What every step of a plan is built with: the chosen kernel variant and switches.
struct PlanContext {
  KernelTable kernels;
  bool jit = true;
  int threads = 1;
};

// Per-call scratch: the activation arena (64-byte aligned, zero-initialised once, or NaN with
// PlanOptions::poison_arena). Borders the planner cannot prove still zero are zeroed by "zero"
// steps (steps/zero.cpp); steps never write non-zero values into a border.
class Workspace {
 public:
  Workspace(int64_t floats, bool poison);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
};

struct Job;

// One table of a plan's constants (views of space kConst name it by slot): `floats` floats at
// `data`, which the plan reads but never copies; `owner` keeps them alive (a NumPy array shared
// by every plan of the model holding the same constant, runtime/const_tables.py).
struct ConstSlot {
  const float* data = nullptr;
  int64_t floats = 0;
  std::shared_ptr<const void> owner;
};

class Plan {
 public:
  // Sizes in floats of the arena, of every input and of every output (per call; per image for
  // run_images); the constant tables (slot k = consts[k]).
  Plan(const PlanOptions& options, int64_t arena_floats, std::vector<ConstSlot> consts,
       std::vector<int64_t> input_floats, std::vector<int64_t> output_floats);
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  const PlanContext& context() const { return context_; }
  // Appends a step. Every view must lie inside its space, and a wavefront member (Step::wave)
  // must only refer to earlier members of its group (std::invalid_argument otherwise).
  void add(StepPtr step);
  // Runs every step for one set of inputs; safe to call from several threads at once (each call
  // takes its own workspace from a pool). The caller releases the GIL. `serial`: on the calling
  // thread alone, as a one-thread plan runs (what one thread would cost, without building a
  // second plan).
  void run(const std::vector<const float*>& inputs, const std::vector<float*>& outputs,
           bool serial = false);
  // Runs `images` independent input sets through a plan built for one image (input k of image i
  // at inputs[k] + i * input_floats[k]): every thread claims whole images (no synchronisation
  // between layers; each image stays in one core's cache).
  void run_images(const std::vector<const float*>& inputs, const std::vector<float*>& outputs,
                  int64_t images);
  int threads() const { return context_.threads; }
  const std::vector<int64_t>& input_floats() const { return input_floats_; }
  const std::vector<int64_t>& output_floats() const { return output_floats_; }
  int64_t arena_floats() const { return arena_floats_; }
  const std::vector<ConstSlot>& consts() const { return consts_; }
  const std::vector<StepPtr>& steps() const { return steps_; }
  // Wavefront groups that serial runs (one thread, or each thread on its own images) compute
  // as row wavefronts while serial_wavefronts() holds, else member by member: the same steps
  // and buffers, bit-identical results (the engine times both where it tunes).
  int64_t serial_wave_groups() const;
  bool serial_wavefronts() const { return serial_wavefronts_.load(std::memory_order_relaxed); }
  void set_serial_wavefronts(bool on) { serial_wavefronts_.store(on, std::memory_order_relaxed); }
  // Wavefront groups that parallel runs cut into row bands (WaveBands); builds the stages.
  int64_t banded_groups() {
    stage_list();
    return static_cast<int64_t>(bands_.size());
  }
  // Development aid: min seconds per step over `reps` single-threaded runs (robust to noise).
  std::vector<double> profile(const std::vector<const float*>& inputs,
                              const std::vector<float*>& outputs, int reps);
  // Steps [first, last] of a real run and the wall time between the previous span's end and
  // theirs: a stage of a parallel run (a step's stage, a wavefront group's row bands, or one
  // member's fill), or an entry of a serial one (a step, or a wavefront group).
  struct Span {
    int64_t first, last;
    double seconds;
  };
  // Development aid: the spans of `reps` real runs (threads, row wavefronts and bands as run()
  // does them), each span's fastest.
  std::vector<Span> timeline(const std::vector<const float*>& inputs,
                             const std::vector<float*>& outputs, int reps);

 private:
  friend struct Job;
  struct Stage {
    const Step* step;
    int stage;
    int64_t units;
    int bands = -1;     // >= 0: a wavefront group in row bands (bands_[bands]), not the step
    bool fill = false;  // the fill of one member (`member`) rather than the bands
    int member = -1;
  };
  std::unique_ptr<Workspace> acquire();
  // The buffers of one call on workspace `ws` (checks the numbers of inputs and outputs).
  Buffers buffers(const Workspace& ws, const std::vector<const float*>& inputs,
                  const std::vector<float*>& outputs) const;
  // Whether run() executes the plan on the calling thread alone (after stage_list()).
  bool runs_serially() const { return threads() == 1 || parallel_begin_ == parallel_end_; }
  // Whether this entry of serial_ is a wavefront group (more than one member).
  static bool is_wave_group(const std::vector<const Step*>& entry) {
    return entry.size() > 1 && entry.front()->wave();
  }
  // Whether a serial run computes this entry of serial_ as one row wavefront.
  bool as_wavefront(const std::vector<const Step*>& entry) const {
    return is_wave_group(entry) && serial_wavefronts();
  }
  void release(std::unique_ptr<Workspace> ws);
  void check_view(const View& v, const char* step) const;
  // `marks`, when given, receives the time each serial entry / stage ends.
  void execute_serial(const Buffers& buf, std::vector<double>* marks = nullptr) const;
  void run_stages_serial(const Buffers& buf, size_t begin, size_t end,
                         std::vector<double>* marks = nullptr) const;
  void run_parallel(const Buffers& buf, std::vector<double>* marks);
  std::vector<Span> spans_of(bool serial) const;
  void run_job(const std::shared_ptr<Job>& job);
  int64_t participate(Job& job);  // returns the units (or images) it completed
  void helper_loop();
  void start_helpers();
  const std::vector<Stage>& stage_list();

  PlanContext context_;
  int64_t arena_floats_;
  bool poison_arena_ = false;
  std::vector<ConstSlot> consts_;
  std::vector<const float*> const_tables_;  // consts_[k].data: Buffers::consts
  std::vector<int64_t> input_floats_, output_floats_;
  std::vector<StepPtr> steps_;
  // Serial order (execute_serial): one entry per step, or per wavefront group (its members,
  // plan order), built as steps are added.
  std::vector<std::vector<const Step*>> serial_;
  std::atomic<bool> serial_wavefronts_{true};
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Workspace>> pool_;
  // Flattened (step, stage, units) list, built at the first run.
  std::once_flag stages_once_;
  std::vector<Stage> stages_;
  std::vector<std::unique_ptr<WaveBands>> bands_;
  size_t parallel_begin_ = 0, parallel_end_ = 0;  // stages outside run on the caller alone
  // Helper threads (threads - 1), started at the first multi-threaded run. They only assist:
  // the calling thread can always finish a job alone, so a descheduled helper never stalls it.
  std::once_flag helpers_once_;
  std::vector<std::thread> helpers_;
  std::mutex job_mutex_;
  std::condition_variable job_cv_;
  std::shared_ptr<Job> current_job_;
  std::atomic<uint64_t> job_generation_{0};
  std::atomic<bool> stopping_{false};

 public:
  // Work units (or images) completed by helper threads since construction (tests, tuning).
  std::atomic<int64_t> helper_units{0};
};

}  // namespace fd
