// The executable plan: an ordered list of steps, run in one native call per inference.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common.h"

namespace fd {

// Per-call scratch: the activation arena (64-byte aligned, zero-initialised once so that padded
// borders start at zero; steps never write non-zero values into a border).
class Workspace {
 public:
  explicit Workspace(int64_t floats);
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
};

class Plan {
 public:
  Plan(int threads, int64_t arena_floats, std::vector<float> consts, int64_t input_floats,
       int64_t output_floats);
  void add(StepPtr step) { steps_.push_back(std::move(step)); }
  // Runs every step; safe to call from several threads at once (each call takes its own
  // workspace from a pool). The caller releases the GIL.
  void run(const float* input, float* output);
  // Runs a batch of `images` independent inputs through a plan built for one image: threads
  // take whole images (no barriers; each image's activations stay in its thread's cache), and
  // the last images % threads images are run one at a time by the whole team.
  void run_images(const float* input, float* output, int64_t images);
  int threads() const { return threads_; }
  int64_t input_floats() const { return input_floats_; }
  int64_t output_floats() const { return output_floats_; }
  int64_t arena_floats() const { return arena_floats_; }
  std::vector<const char*> step_names() const;
  // Development aid: min seconds per step over `reps` single-threaded runs (robust to noise).
  std::vector<double> profile(const float* input, float* output, int reps);

 private:
  std::unique_ptr<Workspace> acquire();
  void release(std::unique_ptr<Workspace> ws);
  void execute(const Buffers& buf, int tid, int nth) const;

  int threads_;
  int64_t arena_floats_;
  std::vector<float> consts_;
  int64_t input_floats_, output_floats_;
  std::vector<StepPtr> steps_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Workspace>> pool_;
};

}  // namespace fd
