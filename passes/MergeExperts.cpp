//===- MergeExperts.cpp - Merges similar routed experts -------------------===//
//
// Part of moe-opt. MC-SMoE (dominant experts as centres) and HC-SMoE
// (average-linkage clustering) over a calibration profile; the router is
// kept and a moe.remap_experts maps its slots to the merged experts.
//
//===----------------------------------------------------------------------===//

#include "ExpertLayer.h"

#include "moe/lib/Reference/Interpreter.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <limits>
#include <numeric>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEMERGEEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

using namespace experts;

/// The cosine similarity of n vectors from their Gram matrix `g` ([n, n]);
/// a zero vector is similar to itself only.
std::vector<double> cosineOfGram(const std::vector<double> &g, int64_t n) {
  std::vector<double> s(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double d = std::sqrt(g[i * n + i] * g[j * n + j]);
      s[i * n + j] = d > 0.0 ? g[i * n + j] / d : (i == j ? 1.0 : 0.0);
    }
  return s;
}

/// The Gram matrix of the rows of `m` ([n, d]).
std::vector<double> rowGram(const std::vector<double> &m, int64_t n,
                            int64_t d) {
  std::vector<double> g(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < d; ++k)
        g[i * n + j] += m[i * d + k] * m[j * d + k];
  return g;
}

/// MC-SMoE: the `groups` most routed experts are centres (ties: lower
/// index); every other expert joins its most similar centre. Returns the
/// centre index of every expert.
std::vector<int64_t> clusterDominant(const std::vector<double> &sim,
                                     const std::vector<double> &count,
                                     int64_t n, int64_t groups) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return count[a] > count[b]; });
  std::vector<bool> centre(n, false);
  for (int64_t i = 0; i < groups; ++i)
    centre[order[i]] = true;
  std::vector<int64_t> label(n);
  for (int64_t e = 0; e < n; ++e) {
    if (centre[e]) {
      label[e] = e;
      continue;
    }
    int64_t best = -1;
    for (int64_t c = 0; c < n; ++c)
      if (centre[c] && (best < 0 || sim[e * n + c] > sim[e * n + best]))
        best = c;
    label[e] = best;
  }
  return label;
}

/// HC-SMoE: average-linkage agglomerative clustering down to `groups`
/// clusters (the pair of largest mean pairwise similarity merges first;
/// ties: lower indices). Returns a cluster representative per expert.
std::vector<int64_t> clusterHierarchical(const std::vector<double> &sim,
                                         int64_t n, int64_t groups) {
  std::vector<std::vector<int64_t>> clusters(n);
  for (int64_t e = 0; e < n; ++e)
    clusters[e] = {e};
  auto linkage = [&](const std::vector<int64_t> &a,
                     const std::vector<int64_t> &b) {
    double s = 0.0;
    for (int64_t i : a)
      for (int64_t j : b)
        s += sim[i * n + j];
    return s / double(a.size() * b.size());
  };
  while (int64_t(clusters.size()) > groups) {
    size_t bi = 0, bj = 1;
    double best = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < clusters.size(); ++i)
      for (size_t j = i + 1; j < clusters.size(); ++j) {
        double l = linkage(clusters[i], clusters[j]);
        if (l > best) {
          best = l;
          bi = i;
          bj = j;
        }
      }
    clusters[bi].insert(clusters[bi].end(), clusters[bj].begin(),
                        clusters[bj].end());
    clusters.erase(clusters.begin() + bj);
  }
  std::vector<int64_t> label(n);
  for (const std::vector<int64_t> &c : clusters)
    for (int64_t e : c)
      label[e] = c.front();
  return label;
}

/// An optimal assignment (Hungarian method, O(n^3)) maximising
/// sum_i score[i][perm[i]] over permutations: perm[i] is the column of row i.
std::vector<int64_t> bestAssignment(const std::vector<double> &score,
                                    int64_t n) {
  // Minimise cost = -score with potentials (1-based arrays).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0);
  std::vector<int64_t> p(n + 1, 0), way(n + 1, 0);
  for (int64_t i = 1; i <= n; ++i) {
    p[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(n + 1, inf);
    std::vector<bool> used(n + 1, false);
    do {
      used[j0] = true;
      int64_t i0 = p[j0], j1 = 0;
      double delta = inf;
      for (int64_t j = 1; j <= n; ++j) {
        if (used[j])
          continue;
        double cur = -score[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  std::vector<int64_t> perm(n);
  for (int64_t j = 1; j <= n; ++j)
    perm[p[j] - 1] = j - 1;
  return perm;
}

struct MergeExpertsPass : public impl::MoEMergeExpertsBase<MergeExpertsPass> {
  using MoEMergeExpertsBase::MoEMergeExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (similarity != "router-logits" && similarity != "expert-output") {
      module.emitError() << "moe-merge-experts: similarity must be "
                            "router-logits or expert-output, got '"
                         << similarity << "'";
      return signalPassFailure();
    }
    if (cluster != "dominant" && cluster != "hierarchical") {
      module.emitError() << "moe-merge-experts: cluster must be dominant or "
                            "hierarchical, got '"
                         << cluster << "'";
      return signalPassFailure();
    }
    if (weighting != "frequency" && weighting != "uniform") {
      module.emitError() << "moe-merge-experts: weighting must be frequency "
                            "or uniform, got '"
                         << weighting << "'";
      return signalPassFailure();
    }
    if (align != "none" && align != "weight") {
      module.emitError() << "moe-merge-experts: align must be none or weight, "
                            "got '"
                         << align << "'";
      return signalPassFailure();
    }
    if (groups < 0 || ratio < 0.0 || ratio > 1.0 ||
        (groups == 0 && ratio == 0.0)) {
      module.emitError() << "moe-merge-experts: give groups=N (N >= 1) or "
                            "ratio=R (0 < R <= 1)";
      return signalPassFailure();
    }
    auto rewrite = [&](ExpertLayer &layer, const ::moe::Profile &prof,
                       ::moe::WeightLoader &loader, NewWeights &newWeights,
                       std::string &why) {
      return mergeLayer(layer, prof, loader, newWeights, why);
    };
    if (failed(rewriteLayersFromProfile(module, "moe-merge-experts", "merged",
                                        "merge", profile, weightsOut, rewrite,
                                        weightError)))
      return signalPassFailure();
  }

  LogicalResult mergeLayer(ExpertLayer &layer, const ::moe::Profile &prof,
                           ::moe::WeightLoader &loader, NewWeights &newWeights,
                           std::string &why) {
    FailureOr<const ::moe::LayerProfile *> lpOr =
        layerProfile(prof, profile, layer, why);
    if (failed(lpOr))
      return failure();
    const ::moe::LayerProfile &lp = **lpOr;
    int64_t E = layer.experts;
    int64_t N = groups > 0 ? int64_t(groups)
                           : std::max<int64_t>(1, std::llround(ratio * E));
    if (N > E) {
      why = llvm::formatv("groups={0} is more than the {1} experts", N, E);
      return failure();
    }
    if (layer.permute.getWeights() != layer.combine.getWeights()) {
      why = "moe.permute and moe.combine read different routing weights";
      return failure();
    }
    if (layer.ffn.getWidths()) {
      why = "the experts have unequal widths (moe.expert_ffn 'widths'): a "
            "merged expert would mix intermediate units that exist in one "
            "member and are padding in another";
      return failure();
    }
    if (align == "weight" && layer.ffn.getNonGated()) {
      why = "align=weight matches neurons by their gate, up and down rows "
            "(this layer's moe.expert_ffn is non_gated: no gate)";
      return failure();
    }
    if (align == "weight" && layer.ffn.getGateUp()) {
      why = "align=weight needs separate gate and up projections (this "
            "layer has a fused gate_up)";
      return failure();
    }

    // Similarity of experts.
    std::vector<double> sim;
    std::string simNote;
    if (similarity == "router-logits") {
      if (lp.logitGram.empty()) {
        why = llvm::formatv(
            "profile '{0}' has no layer.{1}.logit_gram (a profile of a layer "
            "whose experts were already merged records none: the router's "
            "logit columns are not the merged experts; use "
            "similarity=expert-output with a profile recorded with "
            "--profile-expert-outputs)",
            profile, layer.index);
        return failure();
      }
      if (lp.logitGram.size() != size_t(E * E)) {
        why = llvm::formatv("profile '{0}': layer.{1}.logit_gram is not "
                            "[{2}, {2}] (a router with null experts is not "
                            "supported)",
                            profile, layer.index, E);
        return failure();
      }
      std::vector<double> g = lp.logitGram;
      bool centred = centreLogits && !lp.logitSum.empty() && prof.tokens > 0;
      if (centred) {
        double t = double(prof.tokens);
        for (int64_t i = 0; i < E; ++i)
          for (int64_t j = 0; j < E; ++j)
            g[i * E + j] =
                g[i * E + j] / t - lp.logitSum[i] * lp.logitSum[j] / (t * t);
      }
      sim = cosineOfGram(g, E);
      simNote = centred ? "cosine of centred router-logit columns "
                          "(logit_gram, logit_sum)"
                        : "cosine of uncentred router-logit columns "
                          "(logit_gram)";
    } else {
      if (lp.expertOutputMean.empty()) {
        why = llvm::formatv(
            "profile '{0}' has no layer.{1}.expert_output_mean (record it "
            "with moe-run --record-profile --profile-expert-outputs)",
            profile, layer.index);
        return failure();
      }
      sim = cosineOfGram(rowGram(lp.expertOutputMean, E, lp.hidden), E);
      simNote = "cosine of mean expert outputs (expert_output_mean)";
    }
    std::vector<double> count = lp.expertCount;
    if (count.size() != size_t(E)) {
      why = llvm::formatv("profile '{0}' has no layer.{1}.expert_count",
                          profile, layer.index);
      return failure();
    }
    std::vector<int64_t> label = cluster == "dominant"
                                     ? clusterDominant(sim, count, E, N)
                                     : clusterHierarchical(sim, E, N);

    // Merged experts numbered by their smallest member.
    std::vector<int64_t> mapping(E, -1);
    std::vector<std::vector<int64_t>> members;
    for (int64_t e = 0; e < E; ++e) {
      int64_t rep = label[e];
      int64_t g = -1;
      for (int64_t k = 0; k < int64_t(members.size()); ++k)
        if (label[members[k].front()] == rep)
          g = k;
      if (g < 0) {
        g = members.size();
        members.emplace_back();
      }
      members[g].push_back(e);
      mapping[e] = g;
    }

    // Member weights; a group never routed falls back to uniform.
    std::vector<double> weight(E, 1.0);
    std::string weightNote = "uniform";
    if (weighting == "frequency") {
      weightNote = "expert_count";
      for (const std::vector<int64_t> &m : members) {
        double total = 0.0;
        for (int64_t e : m)
          total += count[e];
        for (int64_t e : m)
          weight[e] = total > 0.0 ? count[e] : 1.0;
      }
    }

    // Neuron permutations (align=weight): each member's neurons matched to
    // those of the group's member of largest weight.
    auto ffnType = [&](Value v) { return cast<RankedTensorType>(v.getType()); };
    std::vector<std::vector<int64_t>> perm(E);
    bool inOut = layer.ffn.getWeightLayout() == WeightLayout::in_out;
    int64_t I = 0;
    if (align == "weight") {
      RankedTensorType gt = ffnType(layer.ffn.getGate());
      I = inOut ? gt.getDimSize(2) : gt.getDimSize(1);
      int64_t H = layer.hidden;
      std::vector<std::vector<float>> w;
      for (Value v :
           {layer.ffn.getGate(), layer.ffn.getUp(), layer.ffn.getDown()}) {
        FailureOr<std::vector<float>> vals = weightValues(v, loader, why);
        if (failed(vals))
          return failure();
        w.push_back(std::move(*vals));
      }
      // Element (expert e, neuron j, k-th input or output) of each matrix.
      auto gateUp = [&](const std::vector<float> &m, int64_t e, int64_t j,
                        int64_t k) {
        return inOut ? m[(e * H + k) * I + j] : m[(e * I + j) * H + k];
      };
      auto down = [&](int64_t e, int64_t j, int64_t k) {
        return inOut ? w[2][(e * I + j) * H + k] : w[2][(e * H + k) * I + j];
      };
      for (const std::vector<int64_t> &m : members) {
        int64_t centre = m.front();
        for (int64_t e : m)
          if (weight[e] > weight[centre])
            centre = e;
        for (int64_t e : m) {
          if (e == centre) {
            perm[e].resize(I);
            std::iota(perm[e].begin(), perm[e].end(), 0);
            continue;
          }
          // score[a][b]: neuron a of the centre against neuron b of e.
          std::vector<double> score(I * I, 0.0);
          for (int64_t a = 0; a < I; ++a)
            for (int64_t b = 0; b < I; ++b) {
              double s = 0.0;
              for (int64_t k = 0; k < H; ++k)
                s +=
                    double(gateUp(w[0], centre, a, k)) * gateUp(w[0], e, b, k) +
                    double(gateUp(w[1], centre, a, k)) * gateUp(w[1], e, b, k) +
                    double(down(centre, a, k)) * down(e, b, k);
              score[a * I + b] = s;
            }
          perm[e] = bestAssignment(score, I); // centre neuron a <- e's perm[a]
        }
      }
    }

    Size before = routedExpertSize(layer.ffn);
    auto make = [&](OpBuilder &b, Location loc, StringRef name,
                    RankedTensorType type,
                    ArrayRef<float> values) -> FailureOr<Value> {
      FailureOr<WeightOp> w = newWeights.add(b, loc, name, type, values);
      if (failed(w)) {
        weightError = true; // the layer may be half rewritten
        return failure();
      }
      return w->getResult();
    };
    // The element of member e's slice that lands at `k` of the merged slice.
    auto source = [&](StringRef operand, int64_t e, int64_t rest,
                      int64_t k) -> int64_t {
      if (perm[e].empty() || operand == "down_bias")
        return k;
      int64_t H = layer.hidden;
      bool neuronsFirst = // gate/up out_in [I, H]; down in_out [I, H]
          ((operand == "gate" || operand == "up") && !inOut) ||
          (operand == "down" && inOut);
      if (operand == "gate_bias" || operand == "up_bias")
        return perm[e][k];
      if (neuronsFirst)
        return perm[e][k / H] * H + k % H;
      return (k / I) * I + perm[e][k % I];
    };
    std::string prefix = llvm::formatv("layer.{0}.merged", layer.index);
    if (failed(rebuildExpertWeights(
            layer, loader, make, prefix, N,
            [&](StringRef operand, ArrayRef<float> old, int64_t rest, int64_t g,
                float *out) {
              double total = 0.0;
              for (int64_t e : members[g])
                total += weight[e];
              for (int64_t k = 0; k < rest; ++k) {
                double s = 0.0;
                for (int64_t e : members[g])
                  s += weight[e] * old[e * rest + source(operand, e, rest, k)];
                out[k] = static_cast<float>(s / total);
              }
            },
            why)))
      return failure();

    // The remap before the dispatch; permute and combine read its weights.
    // A layer merged before keeps its one remap, composed with the new
    // mapping (slot -> old merged expert -> new one: the same ids and summed
    // gates as a second remap).
    Value ids = layer.dispatch.getIds();
    Value w = layer.permute.getWeights();
    if (auto old = ids.getDefiningOp<RemapExpertsOp>();
        old && w == old.getResultWeights()) {
      SmallVector<int64_t> composed;
      for (int64_t e : old.getMapping())
        composed.push_back(e < 0 ? -1 : mapping[e]); // -1: a rank's drop
      old.setMapping(composed);
    } else {
      insertRemap(layer, mapping);
    }
    setDispatchExperts(layer.dispatch, N);
    int64_t expertsBefore = E;
    layer.experts = N;
    eraseDeadWeights(layer.fn);

    std::string groupText;
    llvm::raw_string_ostream gs(groupText);
    for (auto [g, m] : llvm::enumerate(members)) {
      gs << (g ? " " : "") << "{";
      llvm::interleave(m, gs, ",");
      gs << "}";
    }
    layer.fn.emitRemark() << llvm::formatv(
        "moe-merge-experts: layer {0}: {1} clustering on {2}; groups {3}; "
        "weights averaged by {4}{5}",
        layer.index, cluster, simNote, groupText, weightNote,
        align == "weight" ? ", neurons aligned" : "");
    layer.fn.emitRemark() << sizeReport("moe-merge-experts", layer,
                                        expertsBefore, before,
                                        routedExpertSize(layer.ffn));
    return success();
  }

  bool weightError = false;

  /// Inserts the remap before the dispatch, once ids and weights are
  /// defined; the dispatch, permute and combine read its results.
  static void insertRemap(ExpertLayer &layer, ArrayRef<int64_t> mapping) {
    Value ids = layer.dispatch.getIds();
    Value w = layer.permute.getWeights();
    Operation *later = ids.getDefiningOp();
    Operation *wDef = w.getDefiningOp();
    if (!later || (wDef && later->isBeforeInBlock(wDef)))
      later = wDef;
    OpBuilder b(layer.fn.getContext());
    if (later)
      b.setInsertionPointAfter(later);
    else
      b.setInsertionPointToStart(&layer.fn.getBody().front());
    auto remap = RemapExpertsOp::create(
        b, layer.dispatch.getLoc(), ids.getType(), w.getType(), ids, w,
        b.getDenseI64ArrayAttr(mapping), DenseI64ArrayAttr(),
        DenseI64ArrayAttr());
    layer.dispatch.getIdsMutable().assign(remap.getResultIds());
    layer.permute.getWeightsMutable().assign(remap.getResultWeights());
    layer.combine.getWeightsMutable().assign(remap.getResultWeights());
  }

  static void eraseDeadWeights(func::FuncOp fn) {
    SmallVector<Operation *> dead;
    fn.walk([&](Operation *op) {
      if (isa<WeightOp, arith::ConstantOp>(op) && op->use_empty())
        dead.push_back(op);
    });
    for (Operation *op : dead)
      op->erase();
  }
};

} // namespace
} // namespace mlir::moe
