//===- Compare.h - What moe-report compare measures -------------*- C++ -*-===//
//
// Part of moe-opt. The measurements of `moe-report compare` on one MoE
// layer of an original and a rewritten (pruned, merged, compressed) model:
// the weights a layer holds, how many experts it routes to, the relative
// error of its output and the agreement of the expert sets its router
// picks. Kept apart from the command line so that unit tests reach them.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_MOE_REPORT_COMPARE_H
#define MOE_TOOLS_MOE_REPORT_COMPARE_H

#include "moe/lib/Reference/Interpreter.h"

#include "mlir/IR/Operation.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace moe::report {

/// The function attribute the prune pass leaves: for each remaining expert,
/// its index in the model before pruning.
inline constexpr llvm::StringLiteral kExpertOriginAttrName =
    "moe.expert_origin";
/// The op the merge pass inserts before dispatch, and its attribute: for
/// each router slot, the merged expert it runs.
inline constexpr llvm::StringLiteral kRemapOpName = "moe.remap_experts";
inline constexpr llvm::StringLiteral kRemapMappingAttrName = "mapping";

/// Parameters and bytes of the `moe.weight` tensors of a function, each
/// distinct weight (same names, files and stacking) counted once.
struct WeightTotals {
  int64_t params = 0;
  int64_t bytes = 0;
};
WeightTotals weightTotals(mlir::Operation *fn);

/// The number of experts the function routes to: the largest `num_experts`
/// of its `moe.dispatch` and `moe.fused_route` ops; none without them.
std::optional<int64_t> routedExperts(mlir::Operation *fn);

/// How the experts of a rewritten layer relate to the original's, read by
/// name from the function `fn` (generic attribute access: the ops and
/// attributes belong to passes this tool does not link).
struct ExpertMap {
  /// moe.expert_origin: remaining expert -> index before pruning.
  std::optional<std::vector<int64_t>> origin;
  /// mapping of moe.remap_experts: router slot -> merged expert.
  std::optional<std::vector<int64_t>> mapping;
};
/// Fails, naming the function and the attribute, when an attribute is not
/// an array<i64> of non-negative indices, when origin repeats an index,
/// when remap ops of one function disagree, or when the mapping does not
/// have one entry per remaining expert.
llvm::Expected<ExpertMap> readExpertMap(mlir::Operation *fn);

/// Mean over tokens of |S ∩ S'| / |S|, where S is the set of experts the
/// original router picked, taken to the rewritten model's expert ids
/// (through the original's own origin, then the rewritten origin's inverse
/// (a dropped expert is a miss) and then the rewritten mapping: slots that
/// land on one merged expert count once), and S' is the set the rewritten
/// model dispatched to. Routers are paired in order. Tokens whose original
/// set is empty are left out.
struct Agreement {
  double sum = 0.0;   ///< Sum of the per-token fractions.
  int64_t tokens = 0; ///< (router, token) pairs counted.
  std::optional<double> mean() const {
    if (tokens == 0)
      return std::nullopt;
    return sum / static_cast<double>(tokens);
  }
};
llvm::Expected<Agreement> expertAgreement(const RoutingTrace &original,
                                          const ExpertMap &originalMap,
                                          const RoutingTrace &rewritten,
                                          const ExpertMap &rewrittenMap);

/// ||y' - y|| / ||y|| in f64; 0 when both are zero, +inf when only y is.
/// Shapes must match.
llvm::Expected<double> relativeError(const HostTensor &y,
                                     const HostTensor &yRewritten);

} // namespace moe::report

#endif // MOE_TOOLS_MOE_REPORT_COMPARE_H
