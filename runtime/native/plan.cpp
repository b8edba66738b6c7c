// Plan executor: one OpenMP parallel region per inference; every step stage is followed by a
// barrier, so the team of threads stays alive across all layers (no per-layer fork/join).
//
//   parallel (T threads):
//     for step in plan:
//       for stage in step.stages():
//         step.run(stage, buffers, tid, T)    (each step splits its own work by tid)
//         barrier
#include "plan.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fd {

Workspace::Workspace(int64_t floats) {
  const size_t bytes = ((static_cast<size_t>(floats > 0 ? floats : 1) * sizeof(float) + 63) / 64) * 64;
  data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!data_) throw std::bad_alloc();
  std::memset(data_, 0, bytes);
}

Workspace::~Workspace() { std::free(data_); }

Plan::Plan(int threads, int64_t arena_floats, std::vector<float> consts, int64_t input_floats,
           int64_t output_floats)
    : threads_(threads < 1 ? 1 : threads),
      arena_floats_(arena_floats),
      consts_(std::move(consts)),
      input_floats_(input_floats),
      output_floats_(output_floats) {}

std::unique_ptr<Workspace> Plan::acquire() {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  return std::make_unique<Workspace>(arena_floats_);
}

void Plan::release(std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(ws));
}

void Plan::execute(const Buffers& buf, int tid, int nth) const {
  for (const auto& step : steps_) {
    const int stages = step->stages();
    for (int stage = 0; stage < stages; ++stage) {
      step->run(stage, buf, tid, nth);
#ifdef _OPENMP
      if (nth > 1) {
#pragma omp barrier
      }
#endif
    }
  }
}

// (#ifndef _OPENMP, run_images degrades to image-by-image calls of run.)
void Plan::run(const float* input, float* output) {
  auto ws = acquire();
  Buffers buf;
  buf.arena = ws->data();
  buf.consts = consts_.data();
  buf.input = input;
  buf.output = output;
#ifdef _OPENMP
  if (threads_ > 1) {
#pragma omp parallel num_threads(threads_)
    execute(buf, omp_get_thread_num(), omp_get_num_threads());
  } else {
    execute(buf, 0, 1);
  }
#else
  execute(buf, 0, 1);
#endif
  release(std::move(ws));
}

void Plan::run_images(const float* input, float* output, int64_t images) {
  const int64_t whole = threads_ > 1 ? images - images % threads_ : 0;
#ifdef _OPENMP
  if (whole > 0) {
#pragma omp parallel num_threads(threads_)
    {
      auto ws = acquire();
      Buffers buf;
      buf.arena = ws->data();
      buf.consts = consts_.data();
      for (int64_t i = omp_get_thread_num(); i < whole; i += omp_get_num_threads()) {
        buf.input = input + i * input_floats_;
        buf.output = output + i * output_floats_;
        execute(buf, 0, 1);
      }
      release(std::move(ws));
    }
  }
#endif
  const int64_t first_single = whole > 0 ? whole : 0;
  for (int64_t i = first_single; i < images; ++i) {
    run(input + i * input_floats_, output + i * output_floats_);
  }
}

std::vector<double> Plan::profile(const float* input, float* output, int reps) {
  auto ws = acquire();
  Buffers buf;
  buf.arena = ws->data();
  buf.consts = consts_.data();
  buf.input = input;
  buf.output = output;
  std::vector<double> seconds(steps_.size(), 1e30);
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < steps_.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int stage = 0; stage < steps_[i]->stages(); ++stage) steps_[i]->run(stage, buf, 0, 1);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (dt < seconds[i]) seconds[i] = dt;
    }
  }
  release(std::move(ws));
  return seconds;
}

std::vector<const char*> Plan::step_names() const {
  std::vector<const char*> names;
  for (const auto& s : steps_) names.push_back(s->name());
  return names;
}

}  // namespace fd
