// Where the channels of a batch-interleaved group should live: the engine's layout stores each
// channel as its own plane of positions (channel-major, a position's 16 images one vector), so a
// 256-channel 1x1 conv reads 256 streams; position-major stores a position's channels together
// (one contiguous run of C vectors). The same generated conv tiles (jit/jit_x86.h) run over both,
// with the same weights; only the tap offsets and the position steps differ.
//
// Usage: layout_probe REPS C K H W KERNEL STRIDE RESIDUAL DENSITY [...], H x W the output plane
// (the input is STRIDE times larger, padded by KERNEL / 2). Prints per conv:
// C K H W KERNEL STRIDE RESIDUAL channel_major_ms position_major_ms max_rel_diff
// (tab-separated; times are the fastest of REPS sweeps over all output positions). Exit 2 when
// this CPU or build cannot generate the tiles.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <vector>

#include "jit/jit_x86.h"

namespace {

constexpr int kLanes = 16;

struct ConvShape {
  int C, K, H, W, k, stride;
  bool residual;
  double density;
};

// Buffers on 2 MB pages, as the engine's arena: with 4 KB pages a channel-major sweep touches a
// page per channel at every position, and the TLB misses would dominate.
struct Buffer {
  explicit Buffer(size_t floats) {
    bytes = (floats * sizeof(float) + kHuge - 1) / kHuge * kHuge;
    data = static_cast<float*>(std::aligned_alloc(kHuge, bytes));
    if (!data) throw std::bad_alloc();
    madvise(data, bytes, MADV_HUGEPAGE);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  static constexpr size_t kHuge = 2u << 20;
  float* data = nullptr;
  size_t bytes = 0;
};

// Floats between channels, positions and rows of one layout (input padded by k / 2).
struct Strides {
  int64_t cs, ps, rs;
};

// Their values for one layout. A channel-major plane ends in a vector of slack, as the planner lays it out
// (runtime/planner/layout.py spatial_tensor). That slack matters: without it a 56x56 plane is
// 49 x 4 KB, every channel's vector at a position maps to the same L1 set, and a 256-channel
// 1x1 conv ran ~1.7x slower.
Strides strides(bool position_major, int channels, int rows, int cols) {
  if (position_major)
    return {kLanes, int64_t{channels} * kLanes, int64_t{channels} * kLanes * cols};
  return {(int64_t{rows} * cols + 1) * kLanes, kLanes, int64_t{cols} * kLanes};
}

struct Tap {
  int ic, y, x;
  float w;
};

// Output channel o's taps: every (input channel, kernel row, kernel column) kept with
// probability `density`, the same for both layouts.
std::vector<std::vector<Tap>> random_taps(const ConvShape& c, std::mt19937* g) {
  std::uniform_real_distribution<float> keep(0.0f, 1.0f);
  std::normal_distribution<float> weight(0.0f, 0.05f);
  std::vector<std::vector<Tap>> taps(c.K);
  for (int o = 0; o < c.K; ++o)
    for (int i = 0; i < c.C; ++i)
      for (int y = 0; y < c.k; ++y)
        for (int x = 0; x < c.k; ++x)
          if (keep(*g) < c.density) taps[o].push_back({i, y, x, weight(*g)});
  return taps;
}

struct Result {
  double ms;
  std::vector<float> out;  // channel-major order [K][H][W][lanes]
};

// One layout: fills the padded input from `image` ([C][H][W][lanes]), sweeps every output
// position with the conv's tiles `reps` times, returns the fastest sweep and the output.
bool run_layout(const ConvShape& c, bool position_major, const std::vector<std::vector<Tap>>& taps,
                const std::vector<float>& image, const std::vector<float>& residual, int reps,
                Result* result) {
  const int pad = c.k / 2, in_h = c.H * c.stride, in_w = c.W * c.stride;
  const int rows = in_h + 2 * pad, cols = in_w + 2 * pad;
  const Strides in = strides(position_major, c.C, rows, cols);
  const Strides out = strides(position_major, c.K, c.H, c.W);
  Buffer x(static_cast<size_t>(c.C) * (rows * cols + 1) * kLanes + kLanes);
  Buffer y(static_cast<size_t>(c.K) * (c.H * c.W + 1) * kLanes + kLanes);
  Buffer r(c.residual ? static_cast<size_t>(c.K) * (c.H * c.W + 1) * kLanes + kLanes : 1);
  std::fill(x.data, x.data + x.bytes / sizeof(float), 0.0f);
  std::fill(y.data, y.data + y.bytes / sizeof(float), 0.0f);
  for (int ch = 0; ch < c.C; ++ch)
    for (int h = 0; h < in_h; ++h)
      for (int w = 0; w < in_w; ++w)
        for (int l = 0; l < kLanes; ++l)
          x.data[ch * in.cs + (h + pad) * in.rs + (w + pad) * in.ps + l] =
              image[((static_cast<size_t>(ch) * in_h + h) * in_w + w) * kLanes + l];
  if (c.residual)
    for (int ch = 0; ch < c.K; ++ch)
      for (int h = 0; h < c.H; ++h)
        for (int w = 0; w < c.W; ++w)
          for (int l = 0; l < kLanes; ++l)
            r.data[ch * out.cs + h * out.rs + w * out.ps + l] =
                residual[((static_cast<size_t>(ch) * c.H + h) * c.W + w) * kLanes + l];
  std::vector<int32_t> ptr(c.K + 1, 0), off;
  std::vector<float> val;
  for (int o = 0; o < c.K; ++o) {
    std::vector<std::pair<int32_t, float>> row;
    for (const Tap& t : taps[o])
      row.push_back({static_cast<int32_t>(t.ic * in.cs + t.y * in.rs + t.x * in.ps), t.w});
    std::sort(row.begin(), row.end());  // the tiles want ascending offsets
    for (const auto& [o_off, w] : row) {
      off.push_back(o_off);
      val.push_back(w);
    }
    ptr[o + 1] = static_cast<int32_t>(off.size());
  }
  std::vector<float> bias(c.K, 0.01f);
  fd::JitConvSpec spec;
  spec.ptr = ptr.data();
  spec.off = off.data();
  spec.val = val.data();
  spec.bias = bias.data();
  spec.channels = c.K;
  spec.bounds = {0, c.K};
  spec.has_res = c.residual;
  spec.out_cs = out.cs;
  spec.res_cs = out.cs;
  spec.positions = c.W;
  spec.in_pos_bytes = c.stride * in.ps * 4;
  spec.pointwise = c.k == 1;
  spec.act.kind = fd::kActClip;
  spec.act.lo = 0.0f;
  spec.act.hi = INFINITY;
  std::unique_ptr<fd::JitConv> jit = fd::JitConv::build(spec);
  if (!jit) return false;
  const auto& tiles = jit->tiles();
  const float* table = jit->table();
  result->ms = INFINITY;
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    for (int h = 0; h < c.H; ++h)
      jit->for_each_run(0, c.K, [&](size_t b, size_t e) {
        for (int w = 0; w < c.W; ++w) {
          const float* src = x.data + c.stride * (h * in.rs + w * in.ps);
          float* dst = y.data + h * out.rs + w * out.ps;
          const float* res = c.residual ? r.data + h * out.rs + w * out.ps : nullptr;
          for (size_t t = b; t < e; ++t) tiles[t].fn(src, dst, table, res, nullptr);
        }
      });
    const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
    result->ms = std::min(result->ms, ms.count());
  }
  result->out.assign(static_cast<size_t>(c.K) * c.H * c.W * kLanes, 0.0f);
  for (int ch = 0; ch < c.K; ++ch)
    for (int h = 0; h < c.H; ++h)
      for (int w = 0; w < c.W; ++w)
        for (int l = 0; l < kLanes; ++l)
          result->out[((static_cast<size_t>(ch) * c.H + h) * c.W + w) * kLanes + l] =
              y.data[ch * out.cs + h * out.rs + w * out.ps + l];
  return true;
}

// Largest |a - b| over the largest |a|: the layouts sum a channel's taps in different orders.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(a[i])));
  }
  return diff / scale;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 10 || (argc - 2) % 8 != 0) {
    std::fprintf(stderr, "usage: layout_probe REPS C K H W KERNEL STRIDE RESIDUAL DENSITY [...]\n");
    return 2;
  }
  // The tiles are AVX-512 code; the engine asks for them only on such CPUs.
  if (!__builtin_cpu_supports("avx512f")) {
    std::fprintf(stderr, "layout_probe: this CPU has no AVX-512, which the generated tiles use\n");
    return 2;
  }
  const int reps = std::atoi(argv[1]);
  for (int a = 2; a + 8 <= argc; a += 8) {
    const ConvShape c{std::atoi(argv[a]),     std::atoi(argv[a + 1]),
                      std::atoi(argv[a + 2]), std::atoi(argv[a + 3]),
                      std::atoi(argv[a + 4]), std::atoi(argv[a + 5]),
                      std::atoi(argv[a + 6]) != 0, std::atof(argv[a + 7])};
    if (reps < 1 || c.C < 1 || c.K < 1 || c.H < 1 || c.W < 1 || c.k < 1 || c.k % 2 == 0 ||
        c.stride < 1 ||
        !(c.density > 0.0 && c.density <= 1.0)) {
      std::fprintf(stderr, "layout_probe: bad conv or reps at argument %d\n", a);
      return 2;
    }
    std::mt19937 g(12345);
    const auto taps = random_taps(c, &g);
    std::normal_distribution<float> nd;
    std::vector<float> image(static_cast<size_t>(c.C) * c.H * c.stride * c.W * c.stride * kLanes);
    std::vector<float> residual(c.residual ? static_cast<size_t>(c.K) * c.H * c.W * kLanes : 0);
    for (float& v : image) v = nd(g);
    for (float& v : residual) v = nd(g);
    Result channel_major, position_major;
    if (!run_layout(c, false, taps, image, residual, reps, &channel_major) ||
        !run_layout(c, true, taps, image, residual, reps, &position_major)) {
      std::fprintf(stderr, "layout_probe: no generated code for this conv on this CPU or build "
                           "(x86-64 Linux with AVX-512, and enough taps per channel)\n");
      return 2;
    }
    std::printf("%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.4f\t%.4f\t%.3g\n", c.C, c.K, c.H, c.W, c.k,
                c.stride, c.residual ? 1 : 0, channel_major.ms, position_major.ms,
                max_rel_diff(channel_major.out, position_major.out));
  }
  return 0;
}
