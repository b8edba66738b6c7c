// Row wavefront: a group of consecutive convs (runtime/planner/wavefront.py) run in sweeps;
// each sweep lets every member, in plan order, compute its next step of output rows if what it
// reads is there: the input rows its taps reach (written by the member it reads from), the
// residual rows, and no earlier member still needing the rows this one overwrites. Members only
// wait on earlier ones and every wait ends when the awaited member is complete, so the first
// incomplete member always proceeds: every sweep computes at least one row.
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "common.h"

namespace fd {

namespace {

std::vector<const WaveInfo*> infos(const std::vector<const Step*>& members) {
  std::vector<const WaveInfo*> info(members.size());
  for (size_t i = 0; i < members.size(); ++i) info[i] = members[i]->wave();
  return info;
}

// Rows [done[i], result) of member i to compute now. Member m computes rows [done[m], end[m])
// (all its rows when serial, its band's in WaveBands); rows below done[m] are complete. A
// range [r0, r1) of member i writes rows up to r1 - 1 + overhang and reads for them, so every
// bound on the rows it may write is lowered by its overhang.
int64_t row_limit(const std::vector<const WaveInfo*>& info, const std::vector<int64_t>& done,
                  const std::vector<int64_t>& end, size_t i) {
  const WaveInfo& w = *info[i];
  const auto complete = [&](int m) { return done[m] == end[m]; };
  int64_t writable = end[i] + w.overhang;  // rows below writable may be written
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
  const int64_t want = end[i] - done[i] < 2 * w.step ? end[i] : done[i] + w.step;
  return writable - w.overhang >= want ? want : done[i];
}

// Sweeps until every member m has computed rows [done[m], end[m]).
void sweep(const std::vector<const Step*>& members, const std::vector<const WaveInfo*>& info,
           std::vector<int64_t> done, const std::vector<int64_t>& end, const Buffers& buf) {
  const size_t n = members.size();
  for (size_t left = n; left > 0;) {
    left = 0;
    bool progress = false;
    for (size_t i = 0; i < n; ++i) {
      const int64_t limit = row_limit(info, done, end, i);
      if (limit > done[i]) {
        members[i]->run_rows(buf, done[i], limit);
        done[i] = limit;
        progress = true;
      }
      if (done[i] < end[i]) ++left;
    }
    if (!progress && left > 0) throw std::logic_error("wavefront: no member can proceed");
  }
}

}  // namespace

void run_wavefront(const std::vector<const Step*>& members, const Buffers& buf) {
  const auto info = infos(members);
  std::vector<int64_t> rows(members.size());
  for (size_t i = 0; i < members.size(); ++i) rows[i] = info[i]->rows;
  sweep(members, info, std::vector<int64_t>(members.size(), 0), rows, buf);
}

// ---------------------------------------------------------------------------- row bands

namespace {

// Fewer output rows per band than this and a group runs layer by layer in parallel plans.
constexpr int64_t kMinBandRows = 4;
// A group whose fill (the rows between bands, a stage per member) exceeds this share of its
// rows runs layer by layer instead.
constexpr double kMaxFillShare = 0.25;

// Rows r of member i that band b may compute: inside its nominal band, every input row its
// taps reach and its residual row computed by the same band, and no row of the storage it
// overwrites still read by a row of a guarding member outside this band.
std::pair<int64_t, int64_t> band_rows(const std::vector<const WaveInfo*>& info,
                                      const std::vector<std::pair<int64_t, int64_t>>& earlier,
                                      size_t i, int band, int bands) {
  const WaveInfo& w = *info[i];
  int64_t lo, hi;
  split_range(w.rows, band, bands, &lo, &hi);
  const auto ok = [&](int64_t r) {
    if (w.in_from >= 0) {
      const auto [mlo, mhi] = earlier[w.in_from];
      const int64_t rows = info[w.in_from]->rows;
      const int64_t first = std::max<int64_t>(0, r * w.stride_h - w.pad_top);
      const int64_t last = std::min(rows - 1, r * w.stride_h - w.pad_top + w.reach_rows);
      if (first <= last && (first < mlo || last >= mhi)) return false;
    }
    if (w.res_from >= 0) {
      const auto [mlo, mhi] = earlier[w.res_from];
      if (r < mlo || r >= mhi) return false;
    }
    for (int k : w.guard_in) {  // k's rows outside [klo, khi) read storage rows up to / from
      const WaveInfo& g = *info[k];
      const auto [klo, khi] = earlier[k];
      if (klo > 0 && r <= (klo - 1) * g.stride_h - g.pad_top + g.reach_rows) return false;
      if (khi < g.rows && r >= khi * g.stride_h - g.pad_top) return false;
    }
    for (int k : w.guard_res) {
      const auto [klo, khi] = earlier[k];
      if (r < klo || r >= khi) return false;
    }
    return true;
  };
  int64_t first = lo;
  while (first < hi && !ok(first)) ++first;
  int64_t end = first;
  while (end < hi && ok(end)) ++end;
  return {first, end};
}

}  // namespace

std::unique_ptr<WaveBands> WaveBands::make(const std::vector<const Step*>& members, int bands) {
  if (members.size() < 2 || bands < 2) return nullptr;
  const auto info = infos(members);
  int64_t rows = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const WaveInfo* w = info[i];
    if (!w || !w->bands || w->overhang != 0 || members[i]->stages() != 1 ||
        w->rows < kMinBandRows * bands)
      return nullptr;
    rows += w->rows;
  }
  std::unique_ptr<WaveBands> wb(new WaveBands());
  wb->members_ = members;
  wb->info_ = info;
  int64_t banded = 0;
  for (int b = 0; b < bands; ++b) {
    std::vector<Rows> region;
    for (size_t i = 0; i < members.size(); ++i) {
      region.push_back(band_rows(info, region, i, b, bands));
      banded += region.back().second - region.back().first;
    }
    wb->region_.push_back(std::move(region));
  }
  if (static_cast<double>(rows - banded) > kMaxFillShare * static_cast<double>(rows))
    return nullptr;
  for (size_t i = 0; i < members.size(); ++i)
    wb->fill_.push_back(wb->rows_outside_bands(static_cast<int>(i)));
  return wb;
}

void WaveBands::run_band(int band, const Buffers& buf) const {
  const auto& region = region_[band];
  std::vector<int64_t> first(region.size()), end(region.size());
  for (size_t i = 0; i < region.size(); ++i) std::tie(first[i], end[i]) = region[i];
  sweep(members_, info_, std::move(first), end, buf);
}

// Rows of member m outside every band, as ranges [r0, r1).
std::vector<std::pair<int64_t, int64_t>> WaveBands::rows_outside_bands(int m) const {
  std::vector<Rows> out;
  int64_t row = 0;
  for (const auto& region : region_) {
    const auto [lo, hi] = region[m];
    if (lo == hi) continue;
    if (row < lo) out.emplace_back(row, lo);
    row = hi;
  }
  if (row < info_[m]->rows) out.emplace_back(row, info_[m]->rows);
  return out;
}

bool WaveBands::fills(int m) const { return !fill_[m].empty(); }

void WaveBands::run_fill(int m, int part, int parts, const Buffers& buf) const {
  for (const auto& [r0, r1] : fill_[m]) members_[m]->run_rows_part(buf, r0, r1, part, parts);
}

}  // namespace fd
