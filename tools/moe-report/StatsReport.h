//===- StatsReport.h - moe-report stats: the load picture -------*- C++ -*-===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_MOE_REPORT_STATSREPORT_H
#define MOE_TOOLS_MOE_REPORT_STATSREPORT_H

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace moe::report {

/// One router of one layer in a moe-run --stats file.
struct StatsRow {
  int64_t layer = 0, router = 0;
  std::vector<int64_t> tokensPerExpert;
  double imbalance = 0;
};

/// The rows of a moe-run --stats file, or an error naming the file and the
/// field that is missing or malformed.
llvm::Expected<std::vector<StatsRow>> readStats(llvm::StringRef path);

/// The SVG: heat map (rows x experts) and imbalance bars.
std::string statsSvg(const std::vector<StatsRow> &rows, llvm::StringRef title);

} // namespace moe::report

#endif // MOE_TOOLS_MOE_REPORT_STATSREPORT_H
