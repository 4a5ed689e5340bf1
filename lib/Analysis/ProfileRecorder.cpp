//===- ProfileRecorder.cpp - Accumulates calibration profiles -------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Analysis/ProfileRecorder.h"

#include "llvm/ADT/Twine.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace moe {

namespace {

Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// The distinct experts of each token's slots, sorted (a token naming an
/// expert twice selects it once).
std::vector<std::vector<int32_t>> expertSets(ArrayRef<int32_t> ids,
                                             int64_t tokens, int64_t slots) {
  std::vector<std::vector<int32_t>> sets(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    std::vector<int32_t> &s = sets[t];
    for (int64_t k = 0; k < slots; ++k)
      if (ids[t * slots + k] >= 0)
        s.push_back(ids[t * slots + k]);
    std::sort(s.begin(), s.end());
    s.erase(std::unique(s.begin(), s.end()), s.end());
  }
  return sets;
}

} // namespace

ProfileRecorder::ProfileRecorder(std::string model, Options options)
    : model(std::move(model)), options(options) {}

Error ProfileRecorder::add(const LayerObservation &o) {
  auto bad = [&](const Twine &what) {
    return makeError("profile of layer " + Twine(o.layer) + ": " + what);
  };
  int64_t T = o.tokens, E = o.experts, K = o.slots, H = o.hidden;
  if (T < 1 || E < 1 || K < 1)
    return bad("needs tokens, experts and slots (got T=" + Twine(T) +
               ", E=" + Twine(E) + ", K=" + Twine(K) + ")");
  if (currentTokens >= 0 && currentTokens != T)
    return bad("saw " + Twine(T) + " tokens but the input's other layers " +
               Twine(currentTokens));
  if (llvm::is_contained(current, o.layer))
    return bad("recorded twice on one input");
  if (previous && *previous >= o.layer)
    return bad("layers must be added in model order");
  auto sized = [&](size_t got, int64_t want, StringRef what) -> Error {
    if (static_cast<int64_t>(got) != want)
      return bad(what + " has " + Twine(got) + " values, not " + Twine(want));
    return Error::success();
  };
  if (Error e = sized(o.ids.size(), T * K, "the routing's ids"))
    return e;
  if (Error e = sized(o.weights.size(), T * K, "the routing's weights"))
    return e;
  if (o.merged) {
    // Merged experts have no logit columns of their own: nothing to check.
  } else if (o.logits.empty())
    return bad("no router logits (no moe.router_linear feeds the scores of "
               "the router that dispatches the experts), so logit_gram and "
               "logit_sum cannot be recorded");
  else if (o.logitWidth < E)
    return bad("the router logits have " + Twine(o.logitWidth) +
               " columns, fewer than the " + Twine(E) + " experts");
  else if (Error e =
               sized(o.logits.size(), T * o.logitWidth, "the router logits"))
    return e;
  if (o.slotOutputNorm.empty())
    return bad("no expert output norms (no moe.expert_ffn reads the "
               "router's moe.permute), so output_norm_mass cannot be "
               "recorded");
  if (Error e = sized(o.normIds.size(), T * o.normSlots, "the norms' ids"))
    return e;
  if (Error e =
          sized(o.normWeights.size(), T * o.normSlots, "the norms' weights"))
    return e;
  if (Error e = sized(o.slotOutputNorm.size(), T * o.normSlots,
                      "the expert output norms"))
    return e;
  bool needHidden = options.expertOutputs || options.inputGram;
  if (needHidden && H < 1)
    return bad("the hidden width is unknown");
  if (options.expertOutputs)
    if (Error e =
            sized(o.expertOutputSum.size(), E * H, "the dense expert outputs"))
      return e;
  if (options.inputGram)
    if (Error e = sized(o.input.size(), T * H, "the layer input"))
      return e;
  for (size_t i = 0; i < o.ids.size(); ++i)
    if (o.ids[i] >= E)
      return bad("slot " + Twine(i) + " names expert " + Twine(o.ids[i]) +
                 " of " + Twine(E));
  for (size_t i = 0; i < o.normIds.size(); ++i)
    if (o.normIds[i] >= E)
      return bad("norm slot " + Twine(i) + " names expert " +
                 Twine(o.normIds[i]) + " of " + Twine(E));

  auto [it, fresh] = layers.try_emplace(o.layer);
  Layer &layer = it->second;
  LayerProfile &s = layer.stats;
  if (fresh) {
    s.experts = E;
    s.hidden = needHidden ? H : 0;
    s.expertCount.assign(E, 0.0);
    s.gateMass.assign(E, 0.0);
    s.coactivation.assign(E * E, 0.0);
    if (!o.merged) {
      s.logitGram.assign(E * E, 0.0);
      s.logitSum.assign(E, 0.0);
    }
    s.outputNormMass.assign(E, 0.0);
    if (options.expertOutputs)
      layer.outputSum.assign(E * H, 0.0);
    if (options.inputGram)
      s.inputGram.assign(H * H, 0.0);
  } else if (s.experts != E || (needHidden && s.hidden != H)) {
    return bad("its sizes changed between inputs");
  } else if (s.logitGram.empty() != o.merged) {
    return bad("its experts were merged on one input and not on another");
  }

  // Routing: slots, gate mass, and the experts each token selects.
  for (int64_t i = 0; i < T * K; ++i)
    if (int32_t e = o.ids[i]; e >= 0) {
      s.expertCount[e] += 1.0;
      s.gateMass[e] += o.weights[i];
    }
  std::vector<std::vector<int32_t>> sets = expertSets(o.ids, T, K);
  for (const std::vector<int32_t> &set : sets)
    for (int32_t i : set)
      for (int32_t j : set)
        s.coactivation[i * E + j] += 1.0;

  // Router logits: the E real experts' columns.
  for (int64_t t = 0; !o.merged && t < T; ++t) {
    const float *l = &o.logits[t * o.logitWidth];
    for (int64_t i = 0; i < E; ++i) {
      s.logitSum[i] += l[i];
      for (int64_t j = 0; j < E; ++j)
        s.logitGram[i * E + j] += static_cast<double>(l[i]) * l[j];
    }
  }

  // REAP: gate * ||expert output|| over routed slots.
  for (int64_t i = 0; i < T * o.normSlots; ++i)
    if (int32_t e = o.normIds[i]; e >= 0)
      s.outputNormMass[e] += o.normWeights[i] * o.slotOutputNorm[i];

  if (options.expertOutputs)
    for (int64_t i = 0; i < E * H; ++i)
      layer.outputSum[i] += o.expertOutputSum[i];
  if (options.inputGram)
    for (int64_t t = 0; t < T; ++t) {
      const float *x = &o.input[t * H];
      for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < H; ++j)
          s.inputGram[i * H + j] += static_cast<double>(x[i]) * x[j];
    }

  // The previous layer's transition into this one.
  if (options.transition && previous) {
    LayerProfile &p = layers[*previous].stats;
    if (p.transition.empty()) {
      p.nextExperts = E;
      p.transition.assign(p.experts * E, 0.0);
    } else if (p.nextExperts != E) {
      return bad("the layer before it changed its next layer between inputs");
    }
    for (int64_t t = 0; t < T; ++t)
      for (int32_t i : previousSets[t])
        for (int32_t j : sets[t])
          p.transition[i * E + j] += 1.0;
  }
  previous = o.layer;
  previousSets = std::move(sets);
  current.push_back(o.layer);
  currentTokens = T;
  return Error::success();
}

Error ProfileRecorder::endInput(int64_t inputTokens) {
  if (current.empty())
    return makeError("profile: no layer was recorded on this input");
  if (currentTokens != inputTokens)
    return makeError("profile: the layers saw " + Twine(currentTokens) +
                     " tokens, not " + Twine(inputTokens));
  if (tokens > 0 && current.size() != layers.size())
    return makeError("profile: this input recorded " + Twine(current.size()) +
                     " layers, earlier ones " + Twine(layers.size()));
  tokens += inputTokens;
  previous.reset();
  previousSets.clear();
  current.clear();
  currentTokens = -1;
  return Error::success();
}

Profile ProfileRecorder::profile() const {
  Profile p;
  p.model = model;
  p.tokens = tokens;
  for (const auto &[index, layer] : layers) {
    LayerProfile s = layer.stats;
    if (options.expertOutputs) {
      s.expertOutputMean.resize(layer.outputSum.size());
      for (size_t i = 0; i < layer.outputSum.size(); ++i)
        s.expertOutputMean[i] = tokens ? layer.outputSum[i] / tokens : 0.0;
    }
    p.layers[index] = std::move(s);
  }
  return p;
}

} // namespace moe
