//===- MoEOps.cpp - Verifiers and folds of the moe ops --------------------===//
//
// Part of moe-opt. Every verifier message names the operand or attribute that
// is wrong and says what was expected.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/dialects/MoE/FusedExperts.h"
#include "moe/dialects/MoE/Routing.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/STLExtras.h"

#include <cmath>
#include <optional>

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

/// A dimension the way MLIR writes it in a type: `?` when dynamic.
static std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? std::string("?") : std::to_string(d);
}

static bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Checks that `v` has rank `rank`; `what` says what the dimensions mean.
static LogicalResult expectRank(Operation *op, Value v, StringRef name,
                                int64_t rank, StringRef what) {
  int64_t got = tensorType(v).getRank();
  if (got == rank)
    return success();
  return op->emitOpError() << "'" << name << "' must have rank " << rank
                           << " (" << what << "), got rank " << got;
}

/// Checks dimension `idx` of `v` against `expected` (skipped when either is
/// dynamic).
static LogicalResult expectDim(Operation *op, Value v, StringRef name,
                               unsigned idx, int64_t expected,
                               StringRef meaning) {
  int64_t got = tensorType(v).getDimSize(idx);
  if (compatible(got, expected))
    return success();
  return op->emitOpError() << "'" << name << "' dimension " << idx << " ("
                           << meaning << ") must be " << dimStr(expected)
                           << ", got " << dimStr(got);
}

/// The number of slots K of a `[T, K]` routing, or of experts of `[T, E]`
/// scores.
static int64_t columns(Value v) { return tensorType(v).getDimSize(1); }
static int64_t rows(Value v) { return tensorType(v).getDimSize(0); }

/// Checks that `v` (named `name`) is `[T, K]` like the routing `ids`.
static LogicalResult expectRoutingShape(Operation *op, Value v, StringRef name,
                                        Value ids) {
  if (failed(expectDim(op, v, name, 0, rows(ids), "tokens of 'ids'")))
    return failure();
  return expectDim(op, v, name, 1, columns(ids), "slots of 'ids'");
}

/// Checks a selection's results: `[T, k]` ids and values for `[T, N]`
/// scores.
/// The op whose result `scores` is when that result is in slot order (a
/// selection's values or moe.gather_scores, possibly through row-wise router
/// ops that keep the width): a selection over it would return slot numbers
/// as expert ids. Null when the scores are (as far as visible) per expert.
static Operation *slotOrderedSource(Value scores) {
  Value v = scores;
  for (int depth = 0; depth < 64; ++depth) {
    Operation *def = v.getDefiningOp();
    if (!def)
      return nullptr;
    if (auto selection = dyn_cast<SelectionOpInterface>(def))
      return selection.getSelectedValues() == v &&
                     !selection.slotsAreCandidates()
                 ? def
                 : nullptr;
    if (isa<GatherScoresOp>(def))
      return def;
    if (!isa<RouterOpInterface>(def) || def->getNumOperands() < 1 ||
        def->getNumResults() != 1 || def->getOperand(0).getType() != v.getType())
      return nullptr;
    v = def->getOperand(0);
  }
  return nullptr;
}

static LogicalResult verifySelectionResults(Operation *op, Value input,
                                            Value ids, Value values,
                                            int64_t k, StringRef kName) {
  if (Operation *source = slotOrderedSource(input)) {
    InFlightDiagnostic diag = op->emitOpError();
    diag << "selects from the slot-ordered output of '" << source->getName()
         << "' (column s is a token's s-th chosen expert, not expert s), so "
            "its ids would be slot numbers: select from the per-expert "
            "scores, or post-process the selected values with moe.normalize, "
            "moe.scale or moe.softmax";
    diag.attachNote(source->getLoc()) << "the slot-ordered values come from here";
    return diag;
  }
  if (failed(expectDim(op, ids, "ids", 0, rows(input), "tokens")) ||
      failed(expectDim(op, values, "values", 0, rows(input), "tokens")) ||
      failed(expectDim(op, ids, "ids", 1, k, kName)) ||
      failed(expectDim(op, values, "values", 1, k, kName)))
    return failure();
  return success();
}

/// Checks that the ids a consumer reads stay below `bound` (its number of
/// experts, adapters or score columns, named by `what`) when the producer
/// of the ids is visible.
static LogicalResult verifyIdRange(Operation *op, Value ids, StringRef name,
                                   int64_t bound, const Twine &what) {
  std::optional<IdRange> range = getIdRange(ids);
  if (!range || ShapedType::isDynamic(bound) || range->bound <= bound)
    return success();
  InFlightDiagnostic diag = op->emitOpError();
  diag << "'" << name << "' holds ids in [0, " << range->bound << ") (from '"
       << range->source->getName() << "') but " << what << " is " << bound
       << ": every id must be in [0, " << bound << ") or -1";
  diag.attachNote(range->source->getLoc()) << "the ids are produced here";
  return diag;
}

//===----------------------------------------------------------------------===//
// WeightOp
//===----------------------------------------------------------------------===//

LogicalResult WeightOp::verify() {
  ArrayAttr names = getNames();
  ArrayAttr files = getFiles();
  if (names.empty())
    return emitOpError("'names' must list at least one tensor name");
  if (files.size() != 1 && files.size() != names.size())
    return emitOpError() << "'files' must hold one file for all names or one "
                            "file per name ("
                         << names.size() << "), got " << files.size();
  for (auto [i, name] : llvm::enumerate(names.getAsValueRange<StringAttr>()))
    if (name.empty())
      return emitOpError() << "'names'[" << i << "] is empty";
  for (auto [i, file] : llvm::enumerate(files.getAsValueRange<StringAttr>()))
    if (file.empty())
      return emitOpError() << "'files'[" << i << "] is empty";
  RankedTensorType type = getResult().getType();
  if (!type.hasStaticShape())
    return emitOpError() << "result must have a static shape (weights have "
                            "fixed sizes), got "
                         << type;
  if (isStack() &&
      (type.getRank() < 1 ||
       type.getDimSize(0) != static_cast<int64_t>(names.size())))
    return emitOpError() << "stacking " << names.size()
                         << " tensors needs a result whose dimension 0 is "
                         << names.size() << ", got " << type;
  return success();
}

//===----------------------------------------------------------------------===//
// Router scoring
//===----------------------------------------------------------------------===//

LogicalResult RouterLinearOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getInput(), "input", 2, "[T, H]")) ||
      failed(expectRank(op, getWeight(), "weight", 2, "[E, H]")))
    return failure();
  int64_t hidden = columns(getInput());
  int64_t experts = rows(getWeight());
  if (failed(expectDim(op, getWeight(), "weight", 1, hidden,
                       "hidden size of 'input'")))
    return failure();
  if (Value bias = getBias()) {
    if (failed(expectRank(op, bias, "bias", 1, "[E]")) ||
        failed(expectDim(op, bias, "bias", 0, experts,
                         "experts, from 'weight'")))
      return failure();
  }
  if (failed(expectDim(op, getResult(), "result", 0, rows(getInput()),
                       "tokens of 'input'")) ||
      failed(expectDim(op, getResult(), "result", 1, experts,
                       "experts, from 'weight'")))
    return failure();
  // Cosine routers: the norm floor must be positive (a zero row would
  // divide by zero) and the scale a finite inverse temperature.
  float eps = getEpsilon().convertToFloat();
  if (!(eps > 0.0f) || !std::isfinite(eps))
    return emitOpError() << "'epsilon' must be > 0 and finite, got " << eps;
  float scale = getScale().convertToFloat();
  if (!(scale > 0.0f) || !std::isfinite(scale))
    return emitOpError() << "'scale' must be > 0 and finite, got " << scale;
  if (getNormalize() == RouterNormalize::none && scale != 1.0f)
    return emitOpError() << "'scale' (" << scale
                         << ") applies to a cosine router only; set "
                            "'normalize' to input, weight or both";
  return success();
}

LogicalResult AddSequenceScoresOp::verify() {
  Operation *op = getOperation();
  int64_t experts = columns(getInput());
  if (failed(expectDim(op, getSequenceScores(), "sequence_scores", 1, experts,
                       "experts, the columns of 'input'")))
    return failure();
  int64_t tokens = rows(getInput());
  int64_t mapped =
      cast<RankedTensorType>(getSequenceMap().getType()).getDimSize(0);
  if (!ShapedType::isDynamic(tokens) && !ShapedType::isDynamic(mapped) &&
      mapped != tokens)
    return emitOpError() << "'sequence_map' has " << mapped
                         << " entries: the sequence map is "
                         << (mapped > tokens ? "longer" : "shorter")
                         << " than T = " << tokens
                         << " (the tokens of 'input'); it needs one entry "
                            "per token";
  float factor = getFactor().convertToFloat();
  if (!std::isfinite(factor))
    return emitOpError() << "'factor' must be finite, got " << factor;
  return success();
}

LogicalResult RmsNormOp::verify() {
  if (getEpsilon().isNegative())
    return emitOpError() << "'epsilon' must be >= 0, got "
                         << getEpsilon().convertToFloat();
  if (Value w = getWeight())
    return expectDim(getOperation(), w, "weight", 0, columns(getInput()),
                     "columns of 'input'");
  return success();
}

LogicalResult BiasAddOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getBias(), "bias", 1, "[E]")) ||
      failed(expectDim(op, getBias(), "bias", 0, columns(getInput()),
                       "experts of 'input'")))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Selection
//===----------------------------------------------------------------------===//

LogicalResult GroupLimitOp::verify() {
  int64_t experts = columns(getInput());
  int64_t groups = getNumGroups();
  int64_t keep = getKeepGroups();
  if (groups < 1)
    return emitOpError() << "'num_groups' must be >= 1, got " << groups;
  if (keep < 1 || keep > groups)
    return emitOpError() << "'keep_groups' must be in [1, num_groups = "
                         << groups << "], got " << keep;
  if (ShapedType::isDynamic(experts))
    return emitOpError("the number of experts (dimension 1 of 'input') must "
                       "be static to form groups");
  if (experts % groups != 0)
    return emitOpError() << "experts (" << experts
                         << ") are not divisible into 'num_groups' = "
                         << groups << " groups";
  if (getGroupScore() == GroupScore::top2_sum && experts / groups < 2)
    return emitOpError() << "'group_score' top2_sum needs at least 2 experts "
                            "per group, got "
                         << experts / groups;
  return success();
}

LogicalResult TopKOp::verify() {
  int64_t experts = columns(getInput());
  int64_t k = getK();
  if (k < 1)
    return emitOpError() << "'k' must be >= 1, got " << k;
  if (!ShapedType::isDynamic(experts) && k > experts)
    return emitOpError() << "'k' = " << k
                         << " exceeds the number of experts (including null "
                            "experts) of 'input', "
                         << experts;
  return verifySelectionResults(*this, getInput(), getIds(), getValues(), k,
                                "'k'");
}

LogicalResult TopPOp::verify() {
  float p = getP().convertToFloat();
  if (!(p > 0.0f && p <= 1.0f))
    return emitOpError() << "'p' must be in (0, 1], got " << p;
  int64_t experts = columns(getInput());
  int64_t maxK = getMaxK();
  if (maxK < 1 || (!ShapedType::isDynamic(experts) && maxK > experts))
    return emitOpError() << "'max_k' must be in [1, " << dimStr(experts)
                         << "] (the number of experts), got " << maxK;
  int64_t minK = getMinK();
  if (minK < 1 || minK > maxK)
    return emitOpError() << "'min_k' must be in [1, max_k = " << maxK
                         << "], got " << minK;
  return verifySelectionResults(*this, getInput(), getIds(), getValues(),
                                maxK, "'max_k'");
}

LogicalResult EntropyFallbackOp::verify() {
  Operation *op = getOperation();
  float q = getQ().convertToFloat();
  if (!std::isfinite(q) || q <= 0.0f || q == 1.0f)
    return emitOpError() << "'q' (the entropic index) must be finite, > 0 "
                            "and != 1 (q = 1 is the Shannon limit, which "
                            "the Tsallis formula divides by zero at), got "
                         << q;
  float threshold = getThreshold().convertToFloat();
  if (!std::isfinite(threshold) || threshold < 0.0f)
    return emitOpError() << "'threshold' must be finite and >= 0 (an "
                            "entropy), got "
                         << threshold;
  float eps = getEpsilon().convertToFloat();
  if (!std::isfinite(eps) || eps < 0.0f)
    return emitOpError() << "'epsilon' must be finite and >= 0, got " << eps;
  int64_t experts = columns(getProbs());
  if (ShapedType::isDynamic(experts))
    return emitOpError("the number of experts (dimension 1 of 'probs') must "
                       "be static: the result has one slot per expert");
  if (failed(expectDim(op, getSparseIds(), "sparse_ids", 0,
                       rows(getProbs()), "tokens of 'probs'")) ||
      failed(expectDim(op, getSparseValues(), "sparse_values", 0,
                       rows(getSparseIds()), "tokens of 'sparse_ids'")) ||
      failed(expectDim(op, getSparseValues(), "sparse_values", 1,
                       columns(getSparseIds()), "slots of 'sparse_ids'")))
    return failure();
  // Normalising divides by the entropy of the uniform row, 0 for N = 1.
  if (getNormalized() && experts < 2)
    return emitOpError() << "'normalized' needs at least 2 experts in "
                            "'probs' (the largest entropy of 1 candidate is "
                            "0), got "
                         << experts;
  int64_t slots = columns(getSparseIds());
  if (!ShapedType::isDynamic(slots) && slots > experts)
    return emitOpError() << "'sparse_ids' has " << slots
                         << " slots, more than the " << experts
                         << " experts of 'probs' (the result has one slot "
                            "per expert)";
  if (failed(verifyIdRange(op, getSparseIds(), "sparse_ids", experts,
                           "the number of experts of 'probs'")))
    return failure();
  return verifySelectionResults(op, getProbs(), getIds(), getValues(),
                                experts, "one slot per expert of 'probs'");
}

LogicalResult ThresholdOp::verify() {
  int64_t experts = columns(getInput());
  int64_t maxK = getMaxK();
  if (maxK < 1 || (!ShapedType::isDynamic(experts) && maxK > experts))
    return emitOpError() << "'max_k' must be in [1, " << dimStr(experts)
                         << "] (the number of experts), got " << maxK;
  if (!getThreshold().isFinite())
    return emitOpError("'threshold' must be finite");
  return verifySelectionResults(*this, getInput(), getIds(), getValues(),
                                maxK, "'max_k'");
}

bool ExpertChoiceOp::slotsAreCandidates() { return true; }

LogicalResult ExpertChoiceOp::verify() {
  int64_t capacity = getCapacity();
  if (capacity <= 0)
    return emitOpError() << "'capacity' must be > 0 tokens per expert, got "
                         << capacity;
  return verifySelectionResults(*this, getInput(), getIds(), getValues(),
                                columns(getInput()),
                                "one slot per expert of 'input'");
}

int64_t CapacityOp::getExpertCapacity(int64_t tokens, int64_t slots) {
  // The same double expression as the routing kernel's (moe_route.cuh).
  double c = static_cast<double>(getCapacityFactor().convertToFloat()) *
             static_cast<double>(tokens) * static_cast<double>(slots) /
             static_cast<double>(getNumExperts());
  return static_cast<int64_t>(std::ceil(c));
}

Value CapacityOp::getSelectionScores() { return getWeights(); }

int64_t CapacityOp::getCandidateCount() { return getNumExperts(); }

LogicalResult CapacityOp::verify() {
  float factor = getCapacityFactor().convertToFloat();
  if (!std::isfinite(factor) || factor <= 0.0f)
    return emitOpError() << "'capacity_factor' must be finite and > 0 (each "
                            "expert takes ceil(capacity_factor * T * K / "
                            "num_experts) slots), got "
                         << factor;
  int64_t experts = getNumExperts();
  if (experts < 1)
    return emitOpError() << "'num_experts' must be >= 1, got " << experts;
  Operation *op = getOperation();
  if (failed(expectRoutingShape(op, getWeights(), "weights", getIds())))
    return failure();
  return verifyIdRange(op, getIds(), "ids", experts, "'num_experts'");
}

LogicalResult SinkhornOp::verify() {
  int64_t iterations = getIterations();
  if (iterations < 1)
    return emitOpError() << "'iterations' (Sinkhorn normalisation rounds) "
                            "must be >= 1, got "
                         << iterations;
  float eps = getEpsilon().convertToFloat();
  if (!std::isfinite(eps) || eps <= 0.0f)
    return emitOpError() << "'epsilon' (the temperature: exp((s - max) / "
                            "epsilon)) must be finite and > 0, got "
                         << eps;
  return success();
}

LogicalResult SimilarityMixOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getInput(), "input", 2,
                        "[T, H]: the token vectors")) ||
      failed(expectDim(op, getProbs(), "probs", 0, rows(getInput()),
                       "tokens of 'input'")))
    return failure();
  float tau = getTemperature().convertToFloat();
  if (!std::isfinite(tau) || tau <= 0.0f)
    return emitOpError() << "'temperature' (the similarity softmax: "
                            "x_t . x_j / temperature) must be finite and > 0, "
                            "got "
                         << tau;
  if (Operation *source = slotOrderedSource(getProbs()))
    return emitOpError() << "'probs' is the slot-ordered output of '"
                         << source->getName()
                         << "' (column s is a token's s-th chosen expert): "
                            "mixing needs rows over experts, e.g. the "
                            "moe.softmax of the router logits";
  return success();
}

/// Mixing reads the other tokens of the batch.
bool SimilarityMixOp::readsOtherTokens() { return true; }

LogicalResult GruCellOp::verify() {
  Operation *op = getOperation();
  if (static_cast<bool>(getBiasIh()) != static_cast<bool>(getBiasHh()))
    return emitOpError() << "takes both 'bias_ih' and 'bias_hh' or neither";
  if (failed(expectRank(op, getInput(), "input", 2, "[T, I]")) ||
      failed(expectRank(op, getWeightIh(), "weight_ih", 2,
                        "[3S, I]: the r, z, n rows")) ||
      failed(expectRank(op, getWeightHh(), "weight_hh", 2,
                        "[3S, S]: the r, z, n rows")))
    return failure();
  int64_t rows3 = rows(getWeightHh());
  if (!ShapedType::isDynamic(rows3) && rows3 % 3 != 0)
    return emitOpError() << "'weight_hh' has " << rows3
                         << " rows; expected 3S (the r, z and n gates' rows "
                            "of a state of width S)";
  int64_t S = ShapedType::isDynamic(rows3) ? ShapedType::kDynamic : rows3 / 3;
  if (failed(expectDim(op, getState(), "state", 1, S,
                       "the state width S, weight_hh's rows / 3")) ||
      failed(expectDim(op, getWeightHh(), "weight_hh", 1, S,
                       "the state width S, weight_hh's rows / 3")) ||
      failed(expectDim(op, getWeightIh(), "weight_ih", 0, rows3,
                       "3S, the rows of 'weight_hh'")) ||
      failed(expectDim(op, getWeightIh(), "weight_ih", 1, columns(getInput()),
                       "the columns of 'input'")) ||
      failed(expectDim(op, getState(), "state", 0, rows(getInput()),
                       "tokens of 'input'")))
    return failure();
  for (auto [b, name] :
       {std::pair(getBiasIh(), "bias_ih"), std::pair(getBiasHh(), "bias_hh")}) {
    if (!b)
      continue;
    if (failed(expectRank(op, b, name, 1, "[3S]")) ||
        failed(expectDim(op, b, name, 0, rows3,
                         "3S, the rows of "
                         "'weight_hh'")))
      return failure();
  }
  return success();
}

LogicalResult GatherScoresOp::verify() {
  Operation *op = getOperation();
  if (failed(expectDim(op, getIds(), "ids", 0, rows(getScores()),
                       "tokens of 'scores'")) ||
      failed(expectRoutingShape(op, getResult(), "result", getIds())))
    return failure();
  return verifyIdRange(op, getIds(), "ids", columns(getScores()),
                       "the number of columns of 'scores'");
}

LogicalResult DropNullExpertsOp::verify() {
  if (getNumExperts() < 1)
    return emitOpError() << "'num_experts' (real experts) must be >= 1, got "
                         << getNumExperts();
  Operation *op = getOperation();
  if (failed(expectRoutingShape(op, getWeights(), "weights", getIds())))
    return failure();
  if (getResultIds().getType() != getIds().getType() ||
      getResultWeights().getType() != getWeights().getType())
    return emitOpError("results must have the types of 'ids' and 'weights'");
  return success();
}

int64_t RemapExpertsOp::getMergedCount() {
  int64_t n = 0;
  for (int64_t m : getMapping())
    n = std::max(n, m + 1);
  return n;
}

bool RemapExpertsOp::keepsSlot(int64_t t, int64_t e) {
  if (getMapping()[e] < 0)
    return false;
  std::optional<ArrayRef<int64_t>> count = getReplicaCount();
  return !count || t % (*count)[e] == (*getReplicaIndex())[e];
}

Value RemapExpertsOp::getSelectionScores() { return getWeights(); }

int64_t RemapExpertsOp::getCandidateCount() { return getMergedCount(); }

LogicalResult RemapExpertsOp::verify() {
  ArrayRef<int64_t> mapping = getMapping();
  if (mapping.empty())
    return emitOpError("'mapping' must have one entry per router expert, got "
                       "none");
  int64_t n = getMergedCount();
  llvm::SmallVector<bool> used(std::max<int64_t>(n, 0), false);
  for (auto [e, m] : llvm::enumerate(mapping)) {
    if (m < -1 || m >= int64_t(mapping.size()))
      return emitOpError() << "'mapping'[" << e << "] = " << m
                           << " is neither -1 (dropped) nor a merged expert "
                              "in [0, "
                           << mapping.size()
                           << ") (at most one per router expert)";
    if (m >= 0)
      used[m] = true;
  }
  if (n == 0)
    return emitOpError("'mapping' drops every router expert (all -1): at "
                       "least one must remain");
  std::optional<ArrayRef<int64_t>> count = getReplicaCount(),
                                   index = getReplicaIndex();
  if (count.has_value() != index.has_value())
    return emitOpError("'replica_count' and 'replica_index' go together: "
                       "give both or neither");
  if (count) {
    if (count->size() != mapping.size() || index->size() != mapping.size())
      return emitOpError() << "'replica_count' and 'replica_index' must have "
                              "one entry per router expert ("
                           << mapping.size() << "), got " << count->size()
                           << " and " << index->size();
    for (int64_t e = 0, E = mapping.size(); e < E; ++e) {
      if ((*count)[e] < 1)
        return emitOpError() << "'replica_count'[" << e << "] = "
                             << (*count)[e] << " must be at least 1";
      if ((*index)[e] < 0 || (*index)[e] >= (*count)[e])
        return emitOpError() << "'replica_index'[" << e << "] = "
                             << (*index)[e] << " is not in [0, "
                             << (*count)[e] << ") (replica_count[" << e
                             << "])";
    }
  }
  for (int64_t m = 0; m < n; ++m)
    if (!used[m])
      return emitOpError() << "'mapping' skips merged expert " << m
                           << ": the merged experts must be [0, " << n
                           << ") with every one used";
  Operation *op = getOperation();
  if (failed(expectRoutingShape(op, getWeights(), "weights", getIds())))
    return failure();
  return verifyIdRange(op, getIds(), "ids", mapping.size(),
                       "the number of entries of 'mapping'");
}

LogicalResult
DropNullExpertsOp::fold(FoldAdaptor, SmallVectorImpl<OpFoldResult> &results) {
  // A selection over no more candidates than real experts picks no null
  // expert: the op is the identity.
  std::optional<IdRange> range = getIdRange(getIds());
  if (!range || range->bound > static_cast<int64_t>(getNumExperts()))
    return failure();
  results.push_back(getIds());
  results.push_back(getWeights());
  return success();
}

//===----------------------------------------------------------------------===//
// Weight post-processing
//===----------------------------------------------------------------------===//

LogicalResult NormalizeOp::verify() {
  if (getEpsilon().isNegative() || !getEpsilon().isFinite())
    return emitOpError() << "'epsilon' must be finite and >= 0, got "
                         << getEpsilon().convertToFloat();
  return success();
}

LogicalResult ScaleOp::verify() {
  float factor = getFactor().convertToFloat();
  if (!std::isfinite(factor))
    return emitOpError() << "'factor' must be a finite f32, got " << factor;
  return success();
}

OpFoldResult ScaleOp::fold(FoldAdaptor) {
  if (getFactor().isExactlyValue(1.0))
    return getInput();
  return {};
}

namespace {
/// scale(scale(w, a), b) -> scale(w, a * b).
struct MergeScales : OpRewritePattern<ScaleOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ScaleOp op,
                                PatternRewriter &rewriter) const override {
    auto inner = op.getInput().getDefiningOp<ScaleOp>();
    if (!inner)
      return failure();
    float factor = inner.getFactor().convertToFloat() *
                   op.getFactor().convertToFloat();
    // Two finite factors whose product overflows f32 stay two ops.
    if (!std::isfinite(factor))
      return failure();
    rewriter.replaceOpWithNewOp<ScaleOp>(op, inner.getInput(),
                                         rewriter.getF32FloatAttr(factor));
    return success();
  }
};
} // namespace

void ScaleOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                          MLIRContext *context) {
  results.add<MergeScales>(context);
}

//===----------------------------------------------------------------------===//
// Dispatch and combine
//===----------------------------------------------------------------------===//

/// The dispatch plan of `experts` experts: counts [E] and offsets [E + 1]
/// (moe.dispatch and moe.fused_route).
static LogicalResult verifyDispatchPlan(Operation *op, int64_t experts,
                                        Value counts, Value offsets) {
  if (experts < 1)
    return op->emitOpError() << "'num_experts' must be >= 1, got "
                             << experts;
  if (failed(expectDim(op, counts, "counts", 0, experts, "'num_experts'")) ||
      failed(expectDim(op, offsets, "offsets", 0, experts + 1,
                       "'num_experts' + 1")))
    return failure();
  return success();
}

LogicalResult DispatchOp::verify() {
  if (failed(verifyDispatchPlan(*this, getNumExperts(), getCounts(),
                                getOffsets())))
    return failure();
  return verifyIdRange(*this, getIds(), "ids", getNumExperts(),
                       "'num_experts'");
}

/// The number of experts of the dispatch plan `offsets` comes from, and the
/// op that planned it, when visible.
static std::optional<std::pair<int64_t, Operation *>>
plannedExperts(Value offsets) {
  if (auto arg = dyn_cast<BlockArgument>(offsets)) {
    // The offsets argument of a moe.fused_experts body is its operand.
    auto fused = dyn_cast<FusedExpertsOp>(arg.getOwner()->getParentOp());
    if (fused && arg.getArgNumber() == 4)
      return plannedExperts(fused.getOffsets());
    return std::nullopt;
  }
  Operation *def = offsets.getDefiningOp();
  if (auto d = dyn_cast<DispatchOp>(def); d && offsets == d.getOffsets())
    return std::make_pair(static_cast<int64_t>(d.getNumExperts()), def);
  if (auto r = dyn_cast<FusedRouteOp>(def); r && offsets == r.getOffsets())
    return std::make_pair(static_cast<int64_t>(r.getNumExperts()), def);
  return std::nullopt;
}

/// Checks the `[T, H]` input, `[R]` rows and `[T, K]` weights shared by
/// permute and combine.
static LogicalResult verifyRowMovement(Operation *op, Value tokens,
                                       StringRef tokensName, Value rowsValue,
                                       Value weights, Value grouped,
                                       StringRef groupedName) {
  if (failed(expectRank(op, tokens, tokensName, 2, "[T, H]")) ||
      failed(expectRank(op, grouped, groupedName, 2, "[R, H]")))
    return failure();
  if (failed(expectDim(op, tokens, tokensName, 0, rows(weights),
                       "tokens of 'weights'")) ||
      failed(expectDim(op, grouped, groupedName, 0, rows(rowsValue),
                       "routed rows of 'rows'")) ||
      failed(expectDim(op, grouped, groupedName, 1, columns(tokens),
                       "hidden size")))
    return failure();
  if (tensorType(tokens).getElementType() !=
      tensorType(grouped).getElementType())
    return op->emitOpError()
           << "'" << groupedName << "' element type "
           << tensorType(grouped).getElementType() << " must match '"
           << tokensName << "' element type "
           << tensorType(tokens).getElementType();
  return success();
}

LogicalResult PermuteOp::verify() {
  return verifyRowMovement(*this, getInput(), "input", getRows(),
                           getWeights(), getResult(), "result");
}

LogicalResult CombineOp::verify() {
  return verifyRowMovement(*this, getResult(), "result", getRows(),
                           getWeights(), getInput(), "input");
}

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

namespace {
/// Reads `[E?, out, in]` or `[E?, in, out]` of one projection.
struct Projection {
  int64_t experts = ShapedType::kDynamic;
  int64_t out = ShapedType::kDynamic;
  int64_t in = ShapedType::kDynamic;
};
} // namespace

/// Verifies one projection matrix and returns its sizes.
static FailureOr<Projection> readProjection(Operation *op, Value w,
                                            StringRef name, bool perExpert,
                                            WeightLayout layout) {
  int64_t rank = perExpert ? 3 : 2;
  StringRef what;
  if (layout == WeightLayout::out_in)
    what = perExpert ? "[E, out, in] with weight_layout out_in"
                     : "[out, in] with weight_layout out_in";
  else
    what = perExpert ? "[E, in, out] with weight_layout in_out"
                     : "[in, out] with weight_layout in_out";
  if (failed(expectRank(op, w, name, rank, what)))
    return failure();
  ArrayRef<int64_t> shape = tensorType(w).getShape();
  Projection p;
  if (perExpert)
    p.experts = shape[0];
  int64_t a = shape[rank - 2], b = shape[rank - 1];
  p.out = layout == WeightLayout::out_in ? a : b;
  p.in = layout == WeightLayout::out_in ? b : a;
  return p;
}

/// Checks that `size` agrees with a size fixed earlier (`known`, or dynamic
/// when not yet fixed) and records it.
static LogicalResult agree(Operation *op, int64_t &known, int64_t size,
                           StringRef name, StringRef meaning,
                           StringRef source) {
  if (compatible(known, size)) {
    if (ShapedType::isDynamic(known))
      known = size;
    return success();
  }
  return op->emitOpError() << "'" << name << "' has " << meaning << " = "
                           << dimStr(size) << " but " << source << " has "
                           << dimStr(known);
}

static LogicalResult verifyBias(Operation *op, Value bias, StringRef name,
                                bool perExpert, int64_t experts,
                                int64_t size, StringRef meaning) {
  if (!bias)
    return success();
  if (failed(expectRank(op, bias, name, perExpert ? 2 : 1,
                        perExpert ? "[E, out]" : "[out]")))
    return failure();
  if (perExpert &&
      failed(expectDim(op, bias, name, 0, experts, "experts")))
    return failure();
  return expectDim(op, bias, name, perExpert ? 1 : 0, size, meaning);
}

/// Block-scaled projections: every quantized projection has its scale,
/// no scale without a quantized projection, one `quant_block`, scales of
/// the format's type covering the weight block by block.
template <typename OpT>
static LogicalResult verifyQuantization(OpT op, bool perExpert) {
  struct Pair {
    Value weight, scale;
    StringRef name, scaleName;
  };
  Pair pairs[] = {{op.getGate(), op.getGateScale(), "gate", "gate_scale"},
                  {op.getUp(), op.getUpScale(), "up", "up_scale"},
                  {op.getGateUp(), op.getGateUpScale(), "gate_up",
                   "gate_up_scale"},
                  {op.getDown(), op.getDownScale(), "down", "down_scale"}};
  std::optional<ArrayRef<int64_t>> block = op.getQuantBlock();
  bool anyQuantized = false;
  for (const Pair &p : pairs) {
    if (p.scale && !p.weight)
      return op.emitOpError() << "'" << p.scaleName << "' given without a '"
                              << p.name << "' projection";
    if (!p.weight)
      continue;
    Type elem = tensorType(p.weight).getElementType();
    bool quantized = isa<Float8E4M3FNType, Float4E2M1FNType>(elem);
    anyQuantized |= quantized;
    if (quantized && !p.scale)
      return op.emitOpError() << "'" << p.name << "' is quantized (" << elem
                              << ") but has no '" << p.scaleName
                              << "' (its block scales)";
    if (!quantized && p.scale)
      return op.emitOpError() << "'" << p.scaleName << "' given but '"
                              << p.name << "' is not quantized (element type "
                              << elem
                              << "; scales apply to f8E4M3FN or f4E2M1FN)";
  }
  if (!anyQuantized) {
    if (block)
      return op.emitOpError("'quant_block' given but no projection is "
                            "quantized (f8E4M3FN or f4E2M1FN)");
    return success();
  }
  if (!block)
    return op.emitOpError("quantized projections need 'quant_block' (the "
                          "rows x columns of the weight block one scale "
                          "covers)");
  if (block->size() != 2 || (*block)[0] < 1 || (*block)[1] < 1)
    return op.emitOpError() << "'quant_block' must be two sizes >= 1 (rows, "
                               "columns of the weight as stored), got "
                            << block->size() << " entries";
  bool outIn = op.getWeightLayout() == WeightLayout::out_in;
  int64_t rank = perExpert ? 3 : 2;
  for (const Pair &p : pairs) {
    if (!p.weight)
      continue;
    RankedTensorType w = tensorType(p.weight);
    RankedTensorType s = tensorType(p.scale);
    Type elem = w.getElementType();
    bool fp4 = isa<Float4E2M1FNType>(elem);
    Type want = fp4 ? Type(Float8E8M0FNUType::get(op.getContext()))
                    : Type(Float32Type::get(op.getContext()));
    if (s.getElementType() != want)
      return op.emitOpError()
             << "'" << p.scaleName << "' of " << elem << " weights must have "
             << "element type " << want << ", got " << s.getElementType();
    if (fp4) {
      // MX: 32 consecutive values of the reduction (input) dimension share
      // one E8M0 exponent, and no group is partial.
      int64_t inDim = outIn ? rank - 1 : rank - 2;
      int64_t wantRows = outIn ? 1 : 32, wantCols = outIn ? 32 : 1;
      if ((*block)[0] != wantRows || (*block)[1] != wantCols)
        return op.emitOpError()
               << "f4E2M1FN (MXFP4) weights need 'quant_block' = ["
               << wantRows << ", " << wantCols << "] (32 values along the "
               << "input dimension with weight_layout "
               << (outIn ? "out_in" : "in_out") << "), got [" << (*block)[0]
               << ", " << (*block)[1] << "]";
      int64_t in = w.getDimSize(inDim);
      if (!ShapedType::isDynamic(in) && in % 32 != 0)
        return op.emitOpError()
               << "'" << p.name << "' is f4E2M1FN (MXFP4) with input size "
               << in << ", not a multiple of its 32-value block";
    }
    if (failed(expectRank(op, p.scale, p.scaleName, rank,
                          perExpert ? "[E, blocks, blocks]"
                                    : "[blocks, blocks]")))
      return failure();
    if (perExpert && failed(expectDim(op, p.scale, p.scaleName, 0,
                                      w.getDimSize(0), "experts")))
      return failure();
    for (int64_t i = 0; i < 2; ++i) {
      int64_t d = w.getDimSize(rank - 2 + i);
      int64_t b = (*block)[i];
      int64_t blocks = ShapedType::isDynamic(d) ? d : (d + b - 1) / b;
      int64_t got = s.getDimSize(rank - 2 + i);
      if (!compatible(got, blocks))
        return op.emitOpError()
               << "'" << p.scaleName << "' dimension " << rank - 2 + i
               << " must be ceil(" << dimStr(d) << " / " << b
               << ") = " << dimStr(blocks) << " (blocks of '" << p.name
               << "' dimension " << rank - 2 + i << "), got " << dimStr(got);
    }
  }
  return success();
}

/// Shared verifier of `moe.expert_ffn` (perExpert) and `moe.ffn`.
template <typename OpT>
static LogicalResult verifyGatedFFN(OpT op, bool perExpert,
                                    int64_t *expertsOut) {
  Operation *o = op.getOperation();
  WeightLayout layout = op.getWeightLayout();
  if (failed(expectRank(o, op.getInput(), "input", 2,
                        perExpert ? "[R, H]" : "[T, H]")))
    return failure();
  int64_t hidden = columns(op.getInput());
  bool nonGated = op.getNonGated();
  if (nonGated) {
    // down(act(up x + up_bias)): nothing of a gate may be given.
    for (auto [v, name] : {std::pair<Value, StringRef>{op.getGate(), "gate"},
                           {op.getGateUp(), "gate_up"},
                           {op.getGateBias(), "gate_bias"},
                           {op.getGateUpBias(), "gate_up_bias"}})
      if (v)
        return op.emitOpError()
               << "'" << name << "' given with 'non_gated' (a non-gated FFN "
               << "computes down(act(up x + up_bias)) and has no gate); drop "
               << "'" << name << "' or 'non_gated'";
    if (!op.getUp())
      return op.emitOpError("'non_gated' needs an 'up' projection (the input "
                            "of the activation)");
    if (op.getActivation() == Activation::swiglu_clamped)
      return op.emitOpError("activation 'swiglu_clamped' needs a gate; "
                            "'non_gated' takes silu, gelu, gelu_tanh or relu");
    if (op.getGateUpLayout() == GateUpLayout::interleaved)
      return op.emitOpError("'gate_up_layout' interleaved needs a fused "
                            "'gate_up' projection ('non_gated' has none)");
  }
  bool separate = op.getGate() || op.getUp();
  if (!nonGated && separate && op.getGateUp())
    return op.emitOpError("give either 'gate' and 'up' or a fused 'gate_up', "
                          "not both");
  if (!nonGated && separate && !(op.getGate() && op.getUp()))
    return op.emitOpError() << "'" << (op.getGate() ? "gate" : "up")
                            << "' needs its partner '"
                            << (op.getGate() ? "up" : "gate") << "'"
                            << (op.getGate() ? ""
                                             : " (or 'non_gated' for "
                                               "down(act(up x)))");
  if (!separate && !op.getGateUp())
    return op.emitOpError("needs 'gate' and 'up' projections, or a fused "
                          "'gate_up' projection");
  if (op.getGateBias() && !op.getGate())
    return op.emitOpError("'gate_bias' needs a separate 'gate' projection");
  if (op.getUpBias() && !op.getUp())
    return op.emitOpError("'up_bias' needs a separate 'up' projection");
  if (op.getGateUpBias() && !op.getGateUp())
    return op.emitOpError("'gate_up_bias' needs a fused 'gate_up' projection");

  int64_t experts = ShapedType::kDynamic;
  int64_t inter = ShapedType::kDynamic;
  Type weightElem;
  auto check = [&](Value w, StringRef name, bool fused,
                   bool isDown) -> LogicalResult {
    FailureOr<Projection> p = readProjection(o, w, name, perExpert, layout);
    if (failed(p))
      return failure();
    if (perExpert &&
        failed(agree(o, experts, p->experts, name, "E (dimension 0)",
                     "an earlier projection")))
      return failure();
    Type elem = tensorType(w).getElementType();
    if (weightElem && elem != weightElem)
      return op.emitOpError() << "'" << name << "' element type " << elem
                              << " differs from the other projections' "
                              << weightElem;
    weightElem = elem;
    if (isDown) {
      if (!compatible(p->out, hidden))
        return op.emitOpError() << "'down' output size must be the hidden "
                                   "size of 'input' ("
                                << dimStr(hidden) << "), got " << dimStr(p->out);
      return agree(o, inter, p->in, name, "intermediate size (input side)",
                   "the gate/up projection");
    }
    if (!compatible(p->in, hidden))
      return op.emitOpError() << "'" << name
                              << "' input size must be the hidden size of "
                                 "'input' ("
                              << dimStr(hidden) << "), got " << dimStr(p->in);
    int64_t out = p->out;
    if (fused) {
      if (!ShapedType::isDynamic(out) && out % 2 != 0)
        return op.emitOpError() << "'gate_up' output size must be even "
                                   "(gate and up halves), got "
                                << out;
      out = ShapedType::isDynamic(out) ? out : out / 2;
    }
    return agree(o, inter, out, name, "intermediate size",
                 "an earlier projection");
  };
  if (op.getGateUp()) {
    if (failed(check(op.getGateUp(), "gate_up", /*fused=*/true, false)))
      return failure();
  } else if ((!nonGated && failed(check(op.getGate(), "gate", false, false))) ||
             failed(check(op.getUp(), "up", false, false))) {
    return failure();
  }
  if (failed(check(op.getDown(), "down", false, /*isDown=*/true)))
    return failure();

  int64_t fusedInter =
      ShapedType::isDynamic(inter) ? inter : 2 * inter;
  if (failed(verifyBias(o, op.getGateBias(), "gate_bias", perExpert, experts,
                        inter, "intermediate size")) ||
      failed(verifyBias(o, op.getUpBias(), "up_bias", perExpert, experts,
                        inter, "intermediate size")) ||
      failed(verifyBias(o, op.getGateUpBias(), "gate_up_bias", perExpert,
                        experts, fusedInter, "2 x intermediate size")) ||
      failed(verifyBias(o, op.getDownBias(), "down_bias", perExpert, experts,
                        hidden, "hidden size")))
    return failure();

  if (op.getGateUpLayout() == GateUpLayout::interleaved && !op.getGateUp())
    return op.emitOpError("'gate_up_layout' interleaved needs a fused "
                          "'gate_up' projection");
  float alpha = op.getAlpha().convertToFloat();
  float limit = op.getLimit().convertToFloat();
  if (!(alpha > 0.0f) || !std::isfinite(alpha))
    return op.emitOpError() << "'alpha' must be finite and > 0, got "
                            << alpha;
  if (!(limit > 0.0f))
    return op.emitOpError() << "'limit' must be > 0, got " << limit;
  if (op.getResult().getType() != op.getInput().getType())
    return op.emitOpError() << "result type " << op.getResult().getType()
                            << " must equal the type of 'input' "
                            << op.getInput().getType();
  if (failed(verifyQuantization(op, perExpert)))
    return failure();
  if (expertsOut)
    *expertsOut = experts;
  return success();
}

LogicalResult ExpertFFNOp::verify() {
  int64_t experts = ShapedType::kDynamic;
  if (failed(verifyGatedFFN(*this, /*perExpert=*/true, &experts)))
    return failure();
  if (failed(verifyWidths(experts)))
    return failure();
  if (ShapedType::isDynamic(experts))
    return success();
  if (failed(expectDim(*this, getOffsets(), "offsets", 0, experts + 1,
                       "number of experts + 1")))
    return failure();
  // A dynamic 'offsets' type hides the plan's expert count: ask its op.
  if (auto planned = plannedExperts(getOffsets());
      planned && planned->first != experts) {
    InFlightDiagnostic diag = emitOpError();
    diag << "'offsets' is the dispatch plan of " << planned->first
         << " experts (from '" << planned->second->getName()
         << "') but the projections hold E = " << experts << " experts";
    diag.attachNote(planned->second->getLoc()) << "the plan is made here";
    return diag;
  }
  return success();
}

/// `widths`: one intermediate size per expert, each in [1, I] of the
/// stacked weights (the down projection's intermediate side).
LogicalResult ExpertFFNOp::verifyWidths(int64_t experts) {
  std::optional<ArrayRef<int64_t>> widths = getWidths();
  if (!widths)
    return success();
  auto down = cast<RankedTensorType>(getDown().getType());
  int64_t inter = getWeightLayout() == WeightLayout::out_in
                      ? down.getDimSize(2)
                      : down.getDimSize(1);
  int64_t n = widths->size();
  if (!ShapedType::isDynamic(experts) && n != experts)
    return emitOpError() << "'widths' has " << n
                         << " entries but the projections hold E = "
                         << experts << " experts (one width per expert)";
  for (auto [e, w] : llvm::enumerate(*widths)) {
    if (w < 1)
      return emitOpError() << "'widths' entry " << e << " is " << w
                           << "; an expert's intermediate size must be >= 1 "
                              "(skip tokens with a null expert, "
                              "moe.drop_null_experts)";
    if (!ShapedType::isDynamic(inter) && w > inter)
      return emitOpError() << "'widths' entry " << e << " is " << w
                           << ", more than the stacked intermediate size "
                           << inter << " of the projections";
  }
  return success();
}

LogicalResult FFNOp::verify() {
  return verifyGatedFFN(*this, /*perExpert=*/false, nullptr);
}

LogicalResult LowRankOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getA(), "a", 3, "[E, out, r]")) ||
      failed(expectRank(op, getB(), "b", 3, "[E, r, in]")) ||
      failed(expectRank(op, getResult(), "result", 3, "[E, out, in]")))
    return failure();
  Type element = getResult().getType().getElementType();
  if (getA().getType().getElementType() != element ||
      getB().getType().getElementType() != element)
    return emitOpError() << "'a' (" << getA().getType().getElementType()
                         << "), 'b' (" << getB().getType().getElementType()
                         << ") and the result (" << element
                         << ") must have one element type";
  int64_t rank = getRank();
  if (!ShapedType::isDynamic(rank) && rank < 1)
    return emitOpError() << "'a' dimension 2 (the rank r) must be at least "
                            "1, got "
                         << rank;
  ArrayRef<int64_t> result = getResult().getType().getShape();
  if (failed(expectDim(op, getA(), "a", 0, result[0],
                       "experts E of the result")) ||
      failed(expectDim(op, getB(), "b", 0, result[0],
                       "experts E of the result")) ||
      failed(expectDim(op, getA(), "a", 1, result[1],
                       "output size of the result")) ||
      failed(expectDim(op, getB(), "b", 1, rank, "the rank r of 'a'")) ||
      failed(
          expectDim(op, getB(), "b", 2, result[2], "input size of the result")))
    return failure();
  return success();
}

LogicalResult RowScaleOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getInput(), "input", 2, "[T, H]")) ||
      failed(expectDim(op, getFactor(), "factor", 0, rows(getInput()),
                       "tokens of 'input'")) ||
      failed(expectDim(op, getFactor(), "factor", 1, 1, "one factor per "
                                                         "token")))
    return failure();
  if (getResult().getType() != getInput().getType())
    return emitOpError() << "result type " << getResult().getType()
                         << " must equal the type of 'input' "
                         << getInput().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// LoRA
//===----------------------------------------------------------------------===//

LogicalResult LoraMixtureOp::verify() {
  Operation *op = getOperation();
  if (failed(expectRank(op, getInput(), "input", 2, "[T, in]")) ||
      failed(expectRank(op, getBase(), "base", 2, "[out, in]")) ||
      failed(expectRank(op, getLoraA(), "lora_a", 3, "[E, r, in]")) ||
      failed(expectRank(op, getLoraB(), "lora_b", 3, "[E, out, r]")) ||
      failed(expectRank(op, getResult(), "result", 2, "[T, out]")))
    return failure();
  int64_t in = columns(getInput());
  int64_t out = rows(getBase());
  ArrayRef<int64_t> a = getLoraA().getType().getShape();
  ArrayRef<int64_t> b = getLoraB().getType().getShape();
  if (failed(expectDim(op, getBase(), "base", 1, in, "input size of "
                                                     "'input'")))
    return failure();
  if (Value bias = getBaseBias())
    if (failed(expectRank(op, bias, "base_bias", 1, "[out]")) ||
        failed(expectDim(op, bias, "base_bias", 0, out, "output size of "
                                                        "'base'")))
      return failure();
  if (!compatible(a[0], b[0]))
    return emitOpError() << "'lora_a' has " << dimStr(a[0])
                         << " experts but 'lora_b' has " << dimStr(b[0]);
  if (!compatible(a[1], b[2]))
    return emitOpError() << "LoRA rank mismatch: 'lora_a' has rank r = "
                         << dimStr(a[1]) << " (dimension 1) but 'lora_b' has r = "
                         << dimStr(b[2]) << " (dimension 2)";
  if (failed(expectDim(op, getLoraA(), "lora_a", 2, in,
                       "input size of 'input'")) ||
      failed(expectDim(op, getLoraB(), "lora_b", 1, out,
                       "output size of 'base'")))
    return failure();
  int64_t experts = a[0];
  if (!ShapedType::isDynamic(experts) &&
      static_cast<int64_t>(getScales().size()) != experts)
    return emitOpError() << "'scales' must hold one factor per LoRA expert ("
                         << experts << "), got " << getScales().size();
  if (static_cast<bool>(getIds()) != static_cast<bool>(getWeights()))
    return emitOpError("'routing' needs both ids and weights");
  if (Value ids = getIds()) {
    if (failed(expectDim(op, ids, "ids", 0, rows(getInput()),
                         "tokens of 'input'")) ||
        failed(expectDim(op, getWeights(), "weights", 0, rows(getInput()),
                         "tokens of 'input'")) ||
        failed(expectDim(op, getWeights(), "weights", 1, columns(ids),
                         "slots of 'ids'")))
      return failure();
    if (failed(verifyIdRange(op, ids, "ids", experts,
                             "the number of adapters of 'lora_a'")))
      return failure();
  }
  if (failed(expectDim(op, getResult(), "result", 0, rows(getInput()),
                       "tokens of 'input'")) ||
      failed(expectDim(op, getResult(), "result", 1, out,
                       "output size of 'base'")))
    return failure();
  if (getResult().getType().getElementType() !=
      getInput().getType().getElementType())
    return emitOpError() << "result element type "
                         << getResult().getType().getElementType()
                         << " must match 'input' element type "
                         << getInput().getType().getElementType();
  return success();
}

//===----------------------------------------------------------------------===//
// Fused operations
//===----------------------------------------------------------------------===//

/// Checks that a fused op's body takes `args` and yields values of `yields`.
static LogicalResult verifyFusedBody(Operation *op, Region &body,
                                     TypeRange args, TypeRange yields) {
  Block &block = body.front();
  if (block.getArgumentTypes() != args)
    return op->emitOpError() << "body must take " << args.size()
                             << " argument(s) of the operand types, got "
                             << block.getNumArguments();
  auto yield = dyn_cast<YieldOp>(block.getTerminator());
  if (!yield)
    return op->emitOpError("body must end with 'moe.yield'");
  if (yield.getValues().getTypes() != yields)
    return op->emitOpError() << "body must yield " << yields.size()
                             << " value(s) of types " << yields << ", got "
                             << yield.getValues().getTypes();
  return success();
}

LogicalResult FusedRouteOp::verify() {
  Operation *op = getOperation();
  if (failed(verifyDispatchPlan(op, getNumExperts(), getCounts(),
                                getOffsets())) ||
      failed(expectDim(op, getIds(), "ids", 0, rows(getInput()),
                       "tokens of 'input'")))
    return failure();
  Value givenIds = getGivenIds(), givenWeights = getGivenWeights();
  if (!givenIds != !givenWeights)
    return emitOpError() << "'given_ids' and 'given_weights' must be given "
                            "together (a given routing), got only '"
                         << (givenIds ? "given_ids" : "given_weights") << "'";
  if (givenIds &&
      (failed(expectDim(op, givenIds, "given_ids", 0, rows(getInput()),
                        "tokens of 'input'")) ||
       failed(expectDim(op, givenWeights, "given_weights", 0, rows(givenIds),
                        "tokens of 'given_ids'")) ||
       failed(expectDim(op, givenWeights, "given_weights", 1,
                        columns(givenIds), "slots of 'given_ids'"))))
    return failure();
  if (failed(verifyFusedBody(
          op, getBody(), getOperandTypes(),
          TypeRange({getIds().getType(), getWeights().getType()}))))
    return failure();
  if (std::optional<RouteMismatch> m = matchRouteBody(getBody().front())) {
    InFlightDiagnostic diag = emitOpError();
    diag << "body cannot be generated as one routing kernel: '"
         << m->op->getName() << "' " << m->reason;
    if (m->op != op)
      diag.attachNote(m->op->getLoc()) << "the op is here";
    return diag;
  }
  return verifyIdRange(op, getIds(), "ids", getNumExperts(), "'num_experts'");
}

LogicalResult FusedExpertsOp::verify() {
  Operation *op = getOperation();
  if (failed(expectDim(op, getIds(), "ids", 0, rows(getInput()),
                       "tokens of 'input'")) ||
      failed(expectDim(op, getWeights(), "weights", 1, columns(getIds()),
                       "slots of 'ids'")))
    return failure();
  return verifyFusedBody(op, getBody(), getOperandTypes(),
                         TypeRange(getResult().getType()));
}

// After the body's ops are verified: the matcher reads their operands.
LogicalResult FusedExpertsOp::verifyRegions() {
  FusedExpertsRefusal refusal;
  if (succeeded(matchFusedExpertsBody(getBody().front(), refusal)))
    return success();
  InFlightDiagnostic diag = emitOpError();
  if (refusal.op == getOperation()) {
    diag << "body cannot be generated: " << refusal.reason;
    return diag;
  }
  diag << "body cannot be generated: '" << refusal.op->getName() << "' "
       << refusal.reason;
  diag.attachNote(refusal.op->getLoc()) << "this op";
  return diag;
}

#include "moe/dialects/MoE/MoERouterInterfaces.cpp.inc"

#define GET_OP_CLASSES
#include "moe/dialects/MoE/MoEOps.cpp.inc"
