//===- RoutingReport.h - moe-report routing: who goes with whom -*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_MOE_REPORT_ROUTINGREPORT_H
#define MOE_TOOLS_MOE_REPORT_ROUTINGREPORT_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace moe::report {

/// The routing of one router of one layer, as drawn.
struct RoutingRow {
  int64_t layer = 0, router = 0;
  /// E, and the tokens the counts are over.
  int64_t experts = 0;
  int64_t tokens = 0;
  /// [E, E]: tokens that chose both i and j (a token counts once per pair,
  /// however many of its slots chose them); the diagonal: tokens that chose
  /// i.
  std::vector<int64_t> coactivation;
  /// Histogram of the routing weights of the routed slots (ids != -1):
  /// `bins` equal bins over [lo, hi] (numpy.histogram's binning: each bin
  /// half-open but the last); empty when there are no weights (a profile).
  std::vector<int64_t> histogram;
  double lo = 0, hi = 1;
  /// Where the row came from, for the picture's tooltips.
  std::string source;
};

/// The rows of moe-run --routing-out PREFIX: PREFIX.ids.npy (int32 [T, K],
/// -1 for an empty slot) with PREFIX.weights.npy (float32 [T, K]), and
/// PREFIX.r<N>.* for router N; with --all-layers PREFIX.L<l>.* and
/// PREFIX.L<l>.r<N>.*. `experts` <= 0: one more than the largest id of
/// each file. `layer` is the layer of PREFIX.ids.npy (its name has none).
/// Errors name the file, and the token and slot of a bad id or weight.
llvm::Expected<std::vector<RoutingRow>> readRoutingFiles(llvm::StringRef prefix,
                                                         int64_t experts,
                                                         int64_t layer,
                                                         int64_t bins);

/// The rows of a calibration profile (moe-run --record-profile): each
/// layer's `coactivation` tensor; no histograms (a profile keeps no
/// weights per slot).
llvm::Expected<std::vector<RoutingRow>> readProfileRows(llvm::StringRef path);

/// The SVG: per row, the co-activation matrix and the weight histogram.
std::string routingSvg(const std::vector<RoutingRow> &rows,
                       llvm::StringRef title);

} // namespace moe::report

#endif // MOE_TOOLS_MOE_REPORT_ROUTINGREPORT_H
