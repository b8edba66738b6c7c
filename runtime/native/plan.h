// The executable plan: an ordered list of steps, run in one native call per inference.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
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

struct Job;

class Plan {
 public:
  Plan(int threads, int64_t arena_floats, std::vector<float> consts, int64_t input_floats,
       int64_t output_floats);
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  // Appends a step; a wavefront member (Step::wave) must only refer to earlier members of its
  // group (std::invalid_argument otherwise).
  void add(StepPtr step);
  // Runs every step for one input; safe to call from several threads at once (each call takes
  // its own workspace from a pool). The caller releases the GIL.
  void run(const float* input, float* output);
  // Runs `images` independent inputs through a plan built for one image: every thread claims
  // whole images (no synchronisation between layers; each image stays in one core's cache).
  void run_images(const float* input, float* output, int64_t images);
  int threads() const { return threads_; }
  int64_t input_floats() const { return input_floats_; }
  int64_t output_floats() const { return output_floats_; }
  int64_t arena_floats() const { return arena_floats_; }
  std::vector<const char*> step_names() const;
  // Development aid: min seconds per step over `reps` single-threaded runs (robust to noise).
  std::vector<double> profile(const float* input, float* output, int reps);

 private:
  friend struct Job;
  struct Stage {
    const Step* step;
    int stage;
    int64_t units;
  };
  std::unique_ptr<Workspace> acquire();
  void release(std::unique_ptr<Workspace> ws);
  void execute_serial(const Buffers& buf) const;
  void run_stages_serial(const Buffers& buf, size_t begin, size_t end) const;
  void run_job(const std::shared_ptr<Job>& job);
  int64_t participate(Job& job);  // returns the units (or images) it completed
  void helper_loop();
  void start_helpers();
  const std::vector<Stage>& stage_list();

  int threads_;
  int64_t arena_floats_;
  std::vector<float> consts_;
  int64_t input_floats_, output_floats_;
  std::vector<StepPtr> steps_;
  // Serial order (execute_serial): one entry per step, or per wavefront group (its members,
  // plan order), built as steps are added.
  std::vector<std::vector<const Step*>> serial_;
  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Workspace>> pool_;
  // Flattened (step, stage, units) list, built at the first run.
  std::once_flag stages_once_;
  std::vector<Stage> stages_;
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
