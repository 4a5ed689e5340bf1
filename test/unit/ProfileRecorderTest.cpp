//===- ProfileRecorderTest.cpp - Tests of the profile accumulation --------===//
//
// Part of the moe-opt project. ProfileRecorder on hand-computed routings:
// every statistic's definition, the transition between layers, the checks
// of its inputs, and appending through the file format.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Analysis/ProfileRecorder.h"
#include "moe/lib/Analysis/Profile.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include "gtest/gtest.h"

#include <vector>

using namespace llvm;
using namespace moe;

namespace {

/// One layer's data: T = 3 tokens, E = 3 experts, K = 2 slots.
struct Data {
  std::vector<int32_t> ids;
  std::vector<float> weights, logits, input;
  std::vector<double> norms, outputSum;

  LayerObservation observe(int64_t layer) const {
    LayerObservation o;
    o.layer = layer;
    o.tokens = 3;
    o.experts = 3;
    o.slots = 2;
    o.ids = ids;
    o.weights = weights;
    o.logitWidth = static_cast<int64_t>(logits.size()) / 3;
    o.logits = logits;
    o.normSlots = 2;
    o.normIds = ids;
    o.normWeights = weights;
    o.slotOutputNorm = norms;
    o.hidden = 2;
    o.expertOutputSum = outputSum;
    o.input = input;
    return o;
  }
};

Data layerA() {
  Data d;
  // Token 1 names expert 2 twice (one selection, two slots); token 2 has an
  // empty slot.
  d.ids = {0, 1, 2, 2, 1, -1};
  d.weights = {0.75f, 0.25f, 0.5f, 0.5f, 1.0f, 0.0f};
  // Four logit columns: the fourth (a null expert) is not recorded.
  d.logits = {1, 2, 3, 9, 0, -1, 2, 9, 4, 0, 1, 9};
  d.norms = {2, 4, 1, 3, 10, 0};
  d.outputSum = {1, 2, 3, 4, 5, 6};
  d.input = {1, 0, 0, 2, 1, 1};
  return d;
}

Data layerB() {
  Data d;
  d.ids = {1, 2, 0, -1, 0, 1};
  d.weights = {0.5f, 0.5f, 1.0f, 0.0f, 0.5f, 0.5f};
  d.logits = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  d.norms = {1, 1, 1, 0, 1, 1};
  d.outputSum = {0, 0, 0, 0, 0, 0};
  d.input = {0, 0, 1, 1, 2, 2};
  return d;
}

ProfileRecorder::Options allOptions() {
  ProfileRecorder::Options o;
  o.expertOutputs = o.inputGram = o.transition = true;
  return o;
}

std::string errorOf(Error e) { return toString(std::move(e)); }

TEST(ProfileRecorder, Definitions) {
  ProfileRecorder r("m", allOptions());
  ASSERT_FALSE(errorOf(r.add(layerA().observe(0))).size());
  ASSERT_FALSE(errorOf(r.add(layerB().observe(3))).size());
  ASSERT_FALSE(errorOf(r.endInput(3)).size());
  Profile p = r.profile();
  EXPECT_EQ(p.model, "m");
  EXPECT_EQ(p.tokens, 3);
  ASSERT_EQ(p.layers.size(), 2u);
  const LayerProfile &a = p.layers.at(0);
  EXPECT_EQ(a.expertCount, (std::vector<double>{1, 2, 2}));
  EXPECT_EQ(a.gateMass, (std::vector<double>{0.75, 1.25, 1.0}));
  // Sets {0, 1}, {2}, {1}.
  EXPECT_EQ(a.coactivation, (std::vector<double>{1, 1, 0, 1, 2, 0, 0, 0, 1}));
  // Logit rows (1, 2, 3), (0, -1, 2), (4, 0, 1).
  EXPECT_EQ(a.logitSum, (std::vector<double>{5, 1, 6}));
  EXPECT_EQ(a.logitGram, (std::vector<double>{17, 2, 7, 2, 5, 4, 7, 4, 14}));
  // 0.75*2, 0.25*4 + 1*10, 0.5*1 + 0.5*3.
  EXPECT_EQ(a.outputNormMass, (std::vector<double>{1.5, 11.0, 2.0}));
  EXPECT_EQ(a.expertOutputMean,
            (std::vector<double>{1.0 / 3, 2.0 / 3, 1, 4.0 / 3, 5.0 / 3, 2}));
  // Inputs (1, 0), (0, 2), (1, 1).
  EXPECT_EQ(a.inputGram, (std::vector<double>{2, 1, 1, 5}));
  // Layer 0 sets {0, 1}, {2}, {1}; layer 3 sets {1, 2}, {0}, {0, 1}.
  EXPECT_EQ(a.nextExperts, 3);
  EXPECT_EQ(a.transition, (std::vector<double>{0, 1, 1, 1, 2, 1, 1, 0, 0}));
  const LayerProfile &b = p.layers.at(3);
  EXPECT_TRUE(b.transition.empty()); // the last layer
  EXPECT_EQ(b.nextExperts, 0);
}

TEST(ProfileRecorder, AppendingThroughTheFileEqualsOneRun) {
  ProfileRecorder once("m", allOptions());
  ProfileRecorder first("m", allOptions()), second("m", allOptions());
  for (ProfileRecorder *r : {&once, &first}) {
    ASSERT_FALSE(errorOf(r->add(layerA().observe(0))).size());
    ASSERT_FALSE(errorOf(r->add(layerB().observe(1))).size());
    ASSERT_FALSE(errorOf(r->endInput(3)).size());
  }
  for (ProfileRecorder *r : {&once, &second}) {
    ASSERT_FALSE(errorOf(r->add(layerB().observe(0))).size());
    ASSERT_FALSE(errorOf(r->add(layerA().observe(1))).size());
    ASSERT_FALSE(errorOf(r->endInput(3)).size());
  }
  SmallString<128> path;
  ASSERT_FALSE(sys::fs::createTemporaryFile("profile", "safetensors", path));
  ASSERT_FALSE(errorOf(writeProfile(first.profile(), path)).size());
  Expected<Profile> read = readProfile(path);
  ASSERT_TRUE(bool(read)) << toString(read.takeError());
  Profile merged = second.profile();
  ASSERT_FALSE(errorOf(mergeProfiles(merged, *read, path)).size());
  sys::fs::remove(path);
  Profile whole = once.profile();
  EXPECT_EQ(merged.tokens, 6);
  for (const auto &[index, l] : whole.layers) {
    const LayerProfile &m = merged.layers.at(index);
    EXPECT_EQ(m.expertCount, l.expertCount);
    EXPECT_EQ(m.coactivation, l.coactivation);
    EXPECT_EQ(m.transition, l.transition);
    EXPECT_EQ(m.logitGram, l.logitGram);
    EXPECT_EQ(m.inputGram, l.inputGram);
    ASSERT_EQ(m.expertOutputMean.size(), l.expertOutputMean.size());
    for (size_t i = 0; i < l.expertOutputMean.size(); ++i)
      EXPECT_NEAR(m.expertOutputMean[i], l.expertOutputMean[i], 1e-12);
  }
}

// A layer whose experts were merged: the logits (here eight router slots
// for three merged experts) are not read, no logit statistics are kept, the
// file round-trips without them, and the layer must stay merged.
TEST(ProfileRecorder, MergedLayerHasNoLogitStatistics) {
  ProfileRecorder r("m", allOptions());
  Data d = layerA();
  d.logits.assign(3 * 8, 1.0f);
  LayerObservation o = d.observe(0);
  o.merged = true;
  ASSERT_FALSE(errorOf(r.add(o)).size());
  ASSERT_FALSE(errorOf(r.add(layerB().observe(1))).size());
  ASSERT_FALSE(errorOf(r.endInput(3)).size());
  Profile p = r.profile();
  const LayerProfile &a = p.layers.at(0);
  EXPECT_TRUE(a.logitGram.empty());
  EXPECT_TRUE(a.logitSum.empty());
  EXPECT_EQ(a.expertCount, (std::vector<double>{1, 2, 2}));
  EXPECT_EQ(a.transition.size(), 9u);
  EXPECT_EQ(p.layers.at(1).logitGram.size(), 9u);

  SmallString<128> path;
  ASSERT_FALSE(sys::fs::createTemporaryFile("profile", "safetensors", path));
  ASSERT_FALSE(errorOf(writeProfile(p, path)).size());
  Expected<Profile> read = readProfile(path);
  sys::fs::remove(path);
  ASSERT_TRUE(bool(read)) << toString(read.takeError());
  EXPECT_TRUE(read->layers.at(0).logitGram.empty());
  EXPECT_EQ(read->layers.at(0).expertCount, a.expertCount);

  // The same layer unmerged on the next input: refused.
  std::string e = errorOf(r.add(layerA().observe(0)));
  EXPECT_NE(e.find("merged on one input and not on another"), std::string::npos)
      << e;
}

TEST(ProfileRecorder, RefusesBadObservations) {
  ProfileRecorder::Options none;
  {
    ProfileRecorder r("m", none);
    Data d = layerA();
    d.ids[3] = 3; // expert 3 of 3
    std::string e = errorOf(r.add(d.observe(7)));
    EXPECT_NE(e.find("layer 7"), std::string::npos) << e;
    EXPECT_NE(e.find("names expert 3 of 3"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    Data d = layerA();
    d.logits.clear();
    std::string e = errorOf(r.add(d.observe(0)));
    EXPECT_NE(e.find("no router logits"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    Data d = layerA();
    d.norms.clear();
    std::string e = errorOf(r.add(d.observe(0)));
    EXPECT_NE(e.find("no expert output norms"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    Data d = layerA();
    d.logits.resize(6); // two columns for three experts
    std::string e = errorOf(r.add(d.observe(0)));
    EXPECT_NE(e.find("fewer than the 3 experts"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    Data d = layerA();
    d.weights.pop_back();
    std::string e = errorOf(r.add(d.observe(0)));
    EXPECT_NE(e.find("the routing's weights has 5 values, not 6"),
              std::string::npos)
        << e;
  }
  {
    ProfileRecorder r("m", allOptions());
    Data d = layerA();
    d.outputSum.clear();
    std::string e = errorOf(r.add(d.observe(0)));
    EXPECT_NE(e.find("dense expert outputs"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    ASSERT_FALSE(errorOf(r.add(layerA().observe(2))).size());
    std::string e = errorOf(r.add(layerA().observe(1)));
    EXPECT_NE(e.find("model order"), std::string::npos) << e;
    e = errorOf(r.endInput(4));
    EXPECT_NE(e.find("saw 3 tokens, not 4"), std::string::npos) << e;
  }
  {
    ProfileRecorder r("m", none);
    EXPECT_NE(errorOf(r.endInput(3)).find("no layer was recorded"),
              std::string::npos);
  }
}

} // namespace
