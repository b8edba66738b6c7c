// Row wavefront: a group of consecutive convs (runtime/planner/wavefront.py) run in sweeps;
// each sweep lets every member, in plan order, compute its next step of output rows if what it
// reads is there: the input rows its taps reach (written by the member it reads from), the
// residual rows, and no earlier member still needing the rows this one overwrites. Members only
// wait on earlier ones and every wait ends when the awaited member is complete, so the first
// incomplete member always proceeds: every sweep computes at least one row.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "common.h"

namespace fd {

namespace {

// Rows [done, result) of member i to compute now (done[m]: rows < done[m] of member m are
// complete). A range [r0, r1) of member i writes rows up to r1 - 1 + overhang and reads for
// them, so every bound on the rows it may write is lowered by its overhang.
int64_t row_limit(const std::vector<const WaveInfo*>& info, const std::vector<int64_t>& done,
                  size_t i) {
  const WaveInfo& w = *info[i];
  const auto complete = [&](int m) { return done[m] == info[m]->rows; };
  int64_t writable = w.rows + w.overhang;  // rows [0, writable) may be written
  if (w.in_from >= 0 && !complete(w.in_from)) {
    // Output row r reads input rows up to r * stride_h - pad_top + reach_rows.
    const int64_t last = done[w.in_from] - 1 + w.pad_top - w.reach_rows;
    writable = std::min(writable, last < 0 ? 0 : last / w.stride_h + 1);
  }
  if (w.res_from >= 0 && !complete(w.res_from)) writable = std::min(writable, done[w.res_from]);
  for (int k : w.guard_in) {  // k's next range reads its input from row done * s - pad on
    if (!complete(k)) writable = std::min(writable, std::max<int64_t>(
        0, done[k] * info[k]->stride_h - info[k]->pad_top));
  }
  for (int k : w.guard_res) {
    if (!complete(k)) writable = std::min(writable, done[k]);
  }
  // Whole steps only (the last takes the remainder), so every range is as big as planned.
  const int64_t want = w.rows - done[i] < 2 * w.step ? w.rows : done[i] + w.step;
  return writable - w.overhang >= want ? want : done[i];
}

}  // namespace

void run_wavefront(const std::vector<const Step*>& members, const Buffers& buf) {
  const size_t n = members.size();
  std::vector<const WaveInfo*> info(n);
  for (size_t i = 0; i < n; ++i) info[i] = members[i]->wave();
  std::vector<int64_t> done(n, 0);
  for (size_t left = n; left > 0;) {
    left = 0;
    bool progress = false;
    for (size_t i = 0; i < n; ++i) {
      const int64_t limit = row_limit(info, done, i);
      if (limit > done[i]) {
        members[i]->run_rows(buf, done[i], limit);
        done[i] = limit;
        progress = true;
      }
      if (done[i] < info[i]->rows) ++left;
    }
    if (!progress && left > 0) throw std::logic_error("wavefront: no member can proceed");
  }
}

}  // namespace fd
