// Plan executor: a persistent helper pool with dynamically claimed work units.
//
//   run(x):   job = {buffers, per-stage counters}; publish job to the helpers
//             every participant (caller + helpers), for each stage s in order:
//               while (u = next[s]++) < units[s]:  run unit u;  done[s]++
//               wait until done[s] == units[s]     (spin, then yield)
//   run_images(x, N): every participant claims whole images and runs all steps serially on its
//             own workspace.
// There is no barrier that needs every thread to arrive: a stage completes when its units are
// done, whoever did them. On a shared, oversubscribed machine a descheduled helper therefore
// costs at most the unit it holds, never a whole time slice per layer.
#include "exec/plan.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FD_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FD_PAUSE() asm volatile("yield")
#else
#define FD_PAUSE() ((void)0)
#endif

namespace fd {

namespace {
constexpr int kSpinsBeforeYield = 2000;
constexpr int kMaxThreads = 1024;
constexpr auto kHelperSpin = std::chrono::microseconds(300);  // idle spin before sleeping
}  // namespace

struct Counter {
  alignas(64) std::atomic<int64_t> next{0};
  alignas(64) std::atomic<int64_t> done{0};
};

struct Job {
  Buffers buf;
  bool images_mode = false;
  int64_t images = 0;
  std::unique_ptr<Counter[]> counters;  // one per stage (step mode) or one (images mode)
  std::atomic<size_t> stage{0};         // first stage not yet complete (step mode)
  std::atomic<bool> finished{false};
  // Plan::timeline: when each stage's last unit completed (each unit raises it before it
  // counts as done, so whoever sees a stage done sees its end).
  std::atomic<double>* stage_ends = nullptr;
};

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void raise_to(std::atomic<double>& value, double at_least) {
  double seen = value.load(std::memory_order_relaxed);
  while (seen < at_least && !value.compare_exchange_weak(seen, at_least, std::memory_order_relaxed)) {
  }
}
}  // namespace

// Arenas of at least one 2 MB page are backed by 2 MB pages where the OS offers them on request
// (Linux transparent huge pages in "madvise" mode, this machine's default): one chunk of a
// batch-interleaved conv reads every input plane of its layer, ~100 distinct 4 KB pages, more
// than the first-level TLB holds. Paired in-process A/B, ResNet-20x2 90% batch 32, one thread:
// 2.0% faster (two threads: unchanged).
constexpr size_t kHugePage = size_t(2) << 20;

static float* allocate_arena(size_t bytes) {
  if (bytes < kHugePage) return static_cast<float*>(std::aligned_alloc(64, bytes));
  const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* data = std::aligned_alloc(kHugePage, rounded);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (data) madvise(data, rounded, MADV_HUGEPAGE);  // a hint: failure leaves 4 KB pages
#endif
  return static_cast<float*>(data);
}

Workspace::Workspace(int64_t floats, bool poison) {
  const size_t bytes = ((static_cast<size_t>(floats > 0 ? floats : 1) * sizeof(float) + 63) / 64) * 64;
  data_ = allocate_arena(bytes);
  if (!data_) throw std::bad_alloc();
  if (poison) {
    std::fill(data_, data_ + bytes / sizeof(float), std::numeric_limits<float>::quiet_NaN());
  } else {
    std::memset(data_, 0, bytes);
  }
}

Workspace::~Workspace() { std::free(data_); }

Plan::Plan(const PlanOptions& options, int64_t arena_floats, std::vector<ConstSlot> consts,
           std::vector<int64_t> input_floats, std::vector<int64_t> output_floats)
    : arena_floats_(arena_floats),
      poison_arena_(options.poison_arena),
      consts_(std::move(consts)),
      input_floats_(std::move(input_floats)),
      output_floats_(std::move(output_floats)) {
  require(options.threads >= 1 && options.threads <= kMaxThreads,
          "plan: threads must be in [1, " + std::to_string(kMaxThreads) + "]");
  require(arena_floats_ >= 0, "plan: negative arena size");
  require(!consts_.empty(), "plan: no constant table");
  for (const ConstSlot& c : consts_) {
    require(c.data != nullptr && c.floats >= 1, "plan: empty constant table");
    const_tables_.push_back(c.data);
  }
  for (int64_t n : input_floats_) require(n >= 0, "plan: negative input size");
  for (int64_t n : output_floats_) require(n >= 0, "plan: negative output size");
  context_.kernels = kernels_for(options.isa);
  context_.jit = options.jit;
  context_.threads = options.threads;
}

Plan::~Plan() {
  stopping_.store(true);
  {
    std::lock_guard<std::mutex> lock(job_mutex_);
    job_generation_.fetch_add(1);
  }
  job_cv_.notify_all();
  for (auto& t : helpers_) t.join();
}

std::unique_ptr<Workspace> Plan::acquire() {
  {
    std::lock_guard<std::mutex> lock(pool_mutex_);
    if (!pool_.empty()) {
      auto ws = std::move(pool_.back());
      pool_.pop_back();
      return ws;
    }
  }
  return std::make_unique<Workspace>(arena_floats_, poison_arena_);
}

void Plan::release(std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(pool_mutex_);
  pool_.push_back(std::move(ws));
}

const std::vector<Plan::Stage>& Plan::stage_list() {
  std::call_once(stages_once_, [this] {
    const int64_t hint = threads() > 1 ? 4 * threads() : 1;
    for (const auto& entry : serial_) {
      auto bands = threads() > 1 ? WaveBands::make(entry, threads()) : nullptr;
      if (bands) {
        const int index = static_cast<int>(bands_.size());
        stages_.push_back({entry.front(), 0, bands->bands(), index, false});
        for (int m = 0; m < bands->members(); ++m) {  // each member's fill split by channels
          if (bands->fills(m)) stages_.push_back({entry.front(), 0, threads(), index, true, m});
        }
        bands_.push_back(std::move(bands));
        continue;
      }
      for (const Step* step : entry) {
        for (int s = 0; s < step->stages(); ++s) {
          const int64_t units = step->units(s, hint);
          stages_.push_back({step, s, units > 0 ? units : 1});
        }
      }
    }
    parallel_begin_ = 0;
    while (parallel_begin_ < stages_.size() && stages_[parallel_begin_].step->light()) ++parallel_begin_;
    parallel_end_ = stages_.size();
    while (parallel_end_ > parallel_begin_ && stages_[parallel_end_ - 1].step->light()) --parallel_end_;
  });
  return stages_;
}

void Plan::check_view(const View& v, const char* step) const {
  int64_t size = 0;
  switch (v.space) {
    case kArena: size = arena_floats_; break;
    case kConst:
      require(v.slot >= 0 && v.slot < static_cast<int>(consts_.size()),
              std::string(step) + ": constant table out of range");
      size = consts_[v.slot].floats;
      break;
    case kInput:
      require(v.slot >= 0 && v.slot < static_cast<int>(input_floats_.size()),
              std::string(step) + ": input slot out of range");
      size = input_floats_[v.slot];
      break;
    case kOutput:
      require(v.slot >= 0 && v.slot < static_cast<int>(output_floats_.size()),
              std::string(step) + ": output slot out of range");
      size = output_floats_[v.slot];
      break;
    default: require(false, std::string(step) + ": unknown buffer space");
  }
  for (int i = 0; i < 4; ++i) require(v.dim[i] >= 1, std::string(step) + ": empty view");
  require(v.first() >= 0 && v.end() <= size, std::string(step) + ": view outside its buffer");
}

void Plan::add(StepPtr step) {
  for (const View& v : step->views()) check_view(v, step->name());
  const WaveInfo* w = step->wave();
  // Extends the previous serial entry when it is this step's wavefront group.
  const bool joins = w && !serial_.empty() && serial_.back().front()->wave() &&
                     serial_.back().front()->wave()->group == w->group;
  if (w) {
    const int64_t position = joins ? static_cast<int64_t>(serial_.back().size()) : 0;
    const auto earlier = [&](int m) { return m >= 0 && m < position; };
    bool ok = (w->in_from < 0 || earlier(w->in_from)) && (w->res_from < 0 || earlier(w->res_from));
    for (int k : w->guard_in) ok = ok && earlier(k);
    for (int k : w->guard_res) ok = ok && earlier(k);
    if (!ok) throw std::invalid_argument("wavefront member refers to a member not before it");
  }
  if (joins) {
    serial_.back().push_back(step.get());
  } else {
    serial_.push_back({step.get()});
  }
  steps_.push_back(std::move(step));
}

int64_t Plan::serial_wave_groups() const {
  return std::count_if(serial_.begin(), serial_.end(), is_wave_group);
}

void Plan::execute_serial(const Buffers& buf, std::vector<double>* marks) const {
  for (const auto& entry : serial_) {
    if (as_wavefront(entry)) {
      run_wavefront(entry, buf);
      if (marks) marks->push_back(now_seconds());
      continue;
    }
    for (const Step* step : entry) {  // (a group's members in plan order: layer by layer)
      for (int stage = 0; stage < step->stages(); ++stage) step->run_serial(stage, buf);
      if (marks) marks->push_back(now_seconds());
    }
  }
}

void Plan::run_stages_serial(const Buffers& buf, size_t begin, size_t end,
                             std::vector<double>* marks) const {
  for (size_t s = begin; s < end; ++s) {
    stages_[s].step->run_serial(stages_[s].stage, buf);
    if (marks) marks->push_back(now_seconds());
  }
}

void Plan::run_parallel(const Buffers& buf, std::vector<double>* marks) {
  run_stages_serial(buf, 0, parallel_begin_, marks);
  auto job = std::make_shared<Job>();
  job->buf = buf;
  job->counters.reset(new Counter[stages_.size()]);
  job->stage.store(parallel_begin_);
  std::unique_ptr<std::atomic<double>[]> ends(marks ? new std::atomic<double>[stages_.size()]
                                                   : nullptr);
  for (size_t s = 0; marks && s < stages_.size(); ++s) ends[s].store(0.0);
  job->stage_ends = ends.get();
  run_job(job);
  for (size_t s = parallel_begin_; marks && s < parallel_end_; ++s) marks->push_back(ends[s].load());
  run_stages_serial(buf, parallel_end_, stages_.size(), marks);
}

int64_t Plan::participate(Job& job) {
  int64_t completed = 0;
  if (job.images_mode) {
    Counter& c = job.counters[0];
    int64_t i = c.next.fetch_add(1);
    if (i >= job.images) return 0;
    auto ws = acquire();
    Buffers buf = job.buf;
    buf.arena = ws->data();
    std::vector<const float*> inputs(input_floats_.size());
    std::vector<float*> outputs(output_floats_.size());
    buf.inputs = inputs.data();
    buf.outputs = outputs.data();
    for (; i < job.images; i = c.next.fetch_add(1)) {
      for (size_t k = 0; k < inputs.size(); ++k) inputs[k] = job.buf.inputs[k] + i * input_floats_[k];
      for (size_t k = 0; k < outputs.size(); ++k) outputs[k] = job.buf.outputs[k] + i * output_floats_[k];
      execute_serial(buf);
      c.done.fetch_add(1, std::memory_order_release);
      ++completed;
    }
    release(std::move(ws));
    return completed;
  }
  const auto& stages = stages_;
  size_t s = job.stage.load(std::memory_order_acquire);
  while (s < parallel_end_) {
    const Stage& st = stages[s];
    Counter& c = job.counters[s];
    for (int64_t u = c.next.fetch_add(1); u < st.units; u = c.next.fetch_add(1)) {
      if (st.bands < 0) {
        st.step->run(st.stage, job.buf, static_cast<int>(u), static_cast<int>(st.units));
      } else if (st.fill) {
        bands_[st.bands]->run_fill(st.member, static_cast<int>(u), static_cast<int>(st.units),
                                   job.buf);
      } else {
        bands_[st.bands]->run_band(static_cast<int>(u), job.buf);
      }
      if (job.stage_ends) raise_to(job.stage_ends[s], now_seconds());
      c.done.fetch_add(1, std::memory_order_acq_rel);
      ++completed;
    }
    // Wait for units other threads still hold, then open the next stage.
    int spins = 0;
    while (c.done.load(std::memory_order_acquire) < st.units) {
      if (job.stage.load(std::memory_order_acquire) > s) break;
      if (++spins < kSpinsBeforeYield) {
        FD_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
    size_t expected = s;
    job.stage.compare_exchange_strong(expected, s + 1, std::memory_order_acq_rel);
    s = job.stage.load(std::memory_order_acquire);
  }
  return completed;
}

void Plan::helper_loop() {
  uint64_t seen = 0;
  while (!stopping_.load()) {
    std::shared_ptr<Job> job;
    {
      std::lock_guard<std::mutex> lock(job_mutex_);
      job = current_job_;
      seen = job_generation_.load();
    }
    if (job && !job->finished.load(std::memory_order_acquire)) {
      helper_units.fetch_add(participate(*job));
    }
    job.reset();
    // Idle: spin briefly for the next job (low wake-up latency), then sleep.
    const auto until = std::chrono::steady_clock::now() + kHelperSpin;
    while (job_generation_.load() == seen && !stopping_.load() &&
           std::chrono::steady_clock::now() < until) {
      FD_PAUSE();
    }
    std::unique_lock<std::mutex> lock(job_mutex_);
    job_cv_.wait(lock, [&] { return job_generation_.load() != seen || stopping_.load(); });
  }
}

void Plan::start_helpers() {
  std::call_once(helpers_once_, [this] {
    for (int i = 1; i < threads(); ++i) helpers_.emplace_back([this] { helper_loop(); });
  });
}

void Plan::run_job(const std::shared_ptr<Job>& job) {
  start_helpers();
  {
    std::lock_guard<std::mutex> lock(job_mutex_);
    current_job_ = job;
    job_generation_.fetch_add(1);
  }
  job_cv_.notify_all();
  participate(*job);
  if (job->images_mode) {  // wait for images other threads still hold
    int spins = 0;
    while (job->counters[0].done.load(std::memory_order_acquire) < job->images) {
      if (++spins < kSpinsBeforeYield) {
        FD_PAUSE();
      } else {
        std::this_thread::yield();
      }
    }
  }
  job->finished.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lock(job_mutex_);
  if (current_job_ == job) current_job_.reset();
}

void Plan::run(const std::vector<const float*>& inputs, const std::vector<float*>& outputs,
               bool serial) {
  stage_list();
  auto ws = acquire();
  const Buffers buf = buffers(*ws, inputs, outputs);
  if (serial || runs_serially()) {
    execute_serial(buf);
  } else {
    run_parallel(buf, nullptr);
  }
  release(std::move(ws));
}

void Plan::run_images(const std::vector<const float*>& inputs, const std::vector<float*>& outputs,
                      int64_t images) {
  require(inputs.size() == input_floats_.size() && outputs.size() == output_floats_.size(),
          "plan: wrong number of inputs or outputs");
  stage_list();
  if (threads() == 1 || images == 1) {
    std::vector<const float*> in(inputs);
    std::vector<float*> out(outputs);
    for (int64_t i = 0; i < images; ++i) {
      for (size_t k = 0; k < in.size(); ++k) in[k] = inputs[k] + i * input_floats_[k];
      for (size_t k = 0; k < out.size(); ++k) out[k] = outputs[k] + i * output_floats_[k];
      run(in, out);
    }
    return;
  }
  auto job = std::make_shared<Job>();
  job->buf.consts = const_tables_.data();
  job->buf.inputs = inputs.data();
  job->buf.outputs = outputs.data();
  job->images_mode = true;
  job->images = images;
  job->counters.reset(new Counter[1]);
  run_job(job);
}

Buffers Plan::buffers(const Workspace& ws, const std::vector<const float*>& inputs,
                      const std::vector<float*>& outputs) const {
  require(inputs.size() == input_floats_.size() && outputs.size() == output_floats_.size(),
          "plan: wrong number of inputs or outputs");
  Buffers buf;
  buf.arena = ws.data();
  buf.consts = const_tables_.data();
  buf.inputs = inputs.data();
  buf.outputs = outputs.data();
  return buf;
}

std::vector<double> Plan::profile(const std::vector<const float*>& inputs,
                                  const std::vector<float*>& outputs, int reps) {
  auto ws = acquire();
  const Buffers buf = buffers(*ws, inputs, outputs);
  std::vector<double> seconds(steps_.size(), 1e30);
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < steps_.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int stage = 0; stage < steps_[i]->stages(); ++stage) steps_[i]->run_serial(stage, buf);
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (dt < seconds[i]) seconds[i] = dt;
    }
  }
  release(std::move(ws));
  return seconds;
}

std::vector<Plan::Span> Plan::spans_of(bool serial) const {
  std::vector<Span> spans;
  const auto index = [this](const Step* step) {
    for (size_t i = 0; i < steps_.size(); ++i)
      if (steps_[i].get() == step) return static_cast<int64_t>(i);
    return int64_t{-1};
  };
  if (serial) {
    for (const auto& entry : serial_) {
      if (as_wavefront(entry)) {
        spans.push_back({index(entry.front()), index(entry.back()), 0});
      } else {
        for (const Step* step : entry) spans.push_back({index(step), index(step), 0});
      }
    }
    return spans;
  }
  for (const Stage& st : stages_) {
    const int64_t first = index(st.step);
    if (st.bands < 0) {
      spans.push_back({first, first, 0});
    } else if (st.fill) {
      spans.push_back({first + st.member, first + st.member, 0});
    } else {
      spans.push_back({first, first + bands_[st.bands]->members() - 1, 0});
    }
  }
  return spans;
}

std::vector<Plan::Span> Plan::timeline(const std::vector<const float*>& inputs,
                                       const std::vector<float*>& outputs, int reps) {
  require(reps >= 1, "plan: reps must be >= 1");
  stage_list();
  const bool serial = runs_serially();
  std::vector<Span> spans = spans_of(serial);
  for (Span& s : spans) s.seconds = 1e30;
  auto ws = acquire();
  const Buffers buf = buffers(*ws, inputs, outputs);
  std::vector<double> marks;
  for (int r = 0; r < reps; ++r) {
    marks.clear();
    const double start = now_seconds();
    if (serial) {
      execute_serial(buf, &marks);
    } else {
      run_parallel(buf, &marks);
    }
    for (size_t i = 0; i < spans.size() && i < marks.size(); ++i)
      spans[i].seconds = std::min(spans[i].seconds, marks[i] - (i ? marks[i - 1] : start));
  }
  release(std::move(ws));
  return spans;
}

}  // namespace fd
