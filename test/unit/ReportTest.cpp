//===- ReportTest.cpp - moe-report compare's measurements ----------------===//
//
// Part of moe-opt. The expert maps are read by name from generic IR: the
// moe dialect is not loaded here, so `moe.remap_experts` is parsed as an
// unregistered op, as moe-report must read it without the merge pass's
// classes.
//
//===----------------------------------------------------------------------===//

#include "Compare.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "gtest/gtest.h"

using namespace moe;
using namespace moe::report;

namespace {

mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext &context,
                                        llvm::StringRef text) {
  context.allowUnregisteredDialects();
  context.loadDialect<mlir::func::FuncDialect>();
  return mlir::parseSourceString<mlir::ModuleOp>(text, &context);
}

mlir::Operation *firstFunction(mlir::ModuleOp module) {
  return (*module.getOps<mlir::func::FuncOp>().begin()).getOperation();
}

std::string errorOf(llvm::Error e) { return llvm::toString(std::move(e)); }

/// One router with `k` slots per token.
RoutingTrace trace(std::vector<std::vector<int32_t>> ids) {
  RoutingTrace t;
  RoutingTrace::Router &r = t.routers.emplace_back();
  int64_t k = ids.empty() ? 0 : static_cast<int64_t>(ids[0].size());
  r.ids = HostTensor::ints({static_cast<int64_t>(ids.size()), k});
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t s = 0; s < k; ++s)
      r.ids.i[i * k + s] = ids[i][s];
  r.hasIds = true;
  return t;
}

TEST(ReportTest, ReadsOriginAndMappingByName) {
  mlir::MLIRContext context;
  auto module = parse(context, R"(
    func.func @layer_0(%x: tensor<?x4xf32>) -> tensor<?x4xf32>
        attributes {moe.expert_origin = array<i64: 0, 2, 3>} {
      %r = "moe.remap_experts"(%x) {mapping = array<i64: 1, 0, 1>}
          : (tensor<?x4xf32>) -> tensor<?x4xf32>
      return %r : tensor<?x4xf32>
    })");
  ASSERT_TRUE(module);
  auto map = readExpertMap(firstFunction(*module));
  ASSERT_TRUE(static_cast<bool>(map)) << errorOf(map.takeError());
  EXPECT_EQ(map->origin, (std::vector<int64_t>{0, 2, 3}));
  EXPECT_EQ(map->mapping, (std::vector<int64_t>{1, 0, 1}));
}

TEST(ReportTest, RefusesBadAttributes) {
  struct Case {
    const char *ir;
    const char *message;
  } cases[] = {
      {R"(func.func @f() attributes {moe.expert_origin = [0, 1]} { return })",
       "function @f: 'moe.expert_origin' must be an array<i64> of expert "
       "indices, got [0, 1]"},
      {R"(func.func @f() attributes {moe.expert_origin = array<i64: 0, -1>} {
            return })",
       "function @f: 'moe.expert_origin' entry 1 is -1; expert indices are "
       "non-negative"},
      {R"(func.func @f() attributes {moe.expert_origin = array<i64: 3, 1, 3>} {
            return })",
       "function @f: 'moe.expert_origin' names original expert 3 twice "
       "(entries 0 and 2)"},
      {R"(func.func @f() { "moe.remap_experts"() : () -> () return })",
       "function @f: 'moe.remap_experts' has no 'mapping' attribute"},
      {R"(func.func @f() {
            "moe.remap_experts"() {mapping = array<i64: 0, 0>} : () -> ()
            "moe.remap_experts"() {mapping = array<i64: 0, 1>} : () -> ()
            return })",
       "function @f: 'moe.remap_experts' ops disagree on the mapping"},
      {R"(func.func @f() attributes {moe.expert_origin = array<i64: 0, 2>} {
            "moe.remap_experts"() {mapping = array<i64: 0, 0, 1>} : () -> ()
            return })",
       "function @f: 'moe.remap_experts' 'mapping' has 3 entries but "
       "'moe.expert_origin' names 2 experts; expected one entry per router "
       "slot"},
  };
  for (const Case &c : cases) {
    mlir::MLIRContext context;
    auto module = parse(context, c.ir);
    ASSERT_TRUE(module) << c.ir;
    auto map = readExpertMap(firstFunction(*module));
    ASSERT_FALSE(static_cast<bool>(map)) << c.ir;
    EXPECT_NE(errorOf(map.takeError()).find(c.message), std::string::npos)
        << c.message;
  }
}

TEST(ReportTest, AgreementOfIdenticalRoutingIsOne) {
  RoutingTrace t = trace({{0, 1}, {2, -1}, {-1, -1}, {3, 0}});
  auto a = expertAgreement(t, {}, t, {});
  ASSERT_TRUE(static_cast<bool>(a)) << errorOf(a.takeError());
  // The token with no expert is left out.
  EXPECT_EQ(a->tokens, 3);
  EXPECT_DOUBLE_EQ(*a->mean(), 1.0);
}

TEST(ReportTest, AgreementAfterPruningCountsDroppedExpertsAsMisses) {
  // Expert 1 of 4 pruned: remaining 0, 2, 3 are now 0, 1, 2.
  ExpertMap pruned;
  pruned.origin = std::vector<int64_t>{0, 2, 3};
  RoutingTrace before = trace({{0, 1}, {2, 3}, {1, 3}});
  RoutingTrace after = trace({{0, 2}, {1, 2}, {2, 0}});
  auto a = expertAgreement(before, {}, after, pruned);
  ASSERT_TRUE(static_cast<bool>(a)) << errorOf(a.takeError());
  // {0, 1} -> {0, miss} vs {0, 2}: 1/2; {2, 3} -> {1, 2}: 1;
  // {1, 3} -> {miss, 2} vs {2, 0}: 1/2.
  EXPECT_EQ(a->tokens, 3);
  EXPECT_DOUBLE_EQ(*a->mean(), 2.0 / 3.0);
}

TEST(ReportTest, AgreementAfterMergingComparesMergedSets) {
  // Four router slots on two merged experts.
  ExpertMap merged;
  merged.mapping = std::vector<int64_t>{0, 0, 1, 1};
  RoutingTrace before = trace({{0, 1}, {0, 2}, {3, 2}});
  // Slots of one merged expert run it once: the rewritten ids are merged.
  RoutingTrace after = trace({{0, -1}, {1, -1}, {1, -1}});
  auto a = expertAgreement(before, {}, after, merged);
  ASSERT_TRUE(static_cast<bool>(a)) << errorOf(a.takeError());
  // {0, 1} -> {0}: 1; {0, 2} -> {0, 1} vs {1}: 1/2; {3, 2} -> {1}: 1.
  EXPECT_DOUBLE_EQ(*a->mean(), 2.5 / 3.0);
}

TEST(ReportTest, AgreementComposesPruningOfAPrunedModelThenMerging) {
  // The original was pruned already (6 -> 4 experts); the rewritten model
  // pruned it further to 3 and merged those onto 2.
  ExpertMap original, rewritten;
  original.origin = std::vector<int64_t>{0, 2, 3, 5};
  rewritten.origin = std::vector<int64_t>{2, 3, 5};
  rewritten.mapping = std::vector<int64_t>{0, 1, 1};
  // Original ids 1, 3 are experts 2, 5: remaining 0, 2, merged 0, 1.
  // Original id 0 is expert 0: dropped.
  RoutingTrace before = trace({{1, 3}, {0, 2}});
  RoutingTrace after = trace({{0, 1}, {1, -1}});
  auto a = expertAgreement(before, original, after, rewritten);
  ASSERT_TRUE(static_cast<bool>(a)) << errorOf(a.takeError());
  // {2, 5} -> {0, 1}: 1; {0, 3} -> {miss, 1} vs {1}: 1/2.
  EXPECT_DOUBLE_EQ(*a->mean(), 0.75);
}

TEST(ReportTest, AgreementRefusesWhatItCannotCompare) {
  ExpertMap merged;
  merged.mapping = std::vector<int64_t>{0, 0};
  RoutingTrace t = trace({{0, 1}});
  auto a = expertAgreement(t, merged, t, {});
  ASSERT_FALSE(static_cast<bool>(a));
  EXPECT_NE(errorOf(a.takeError()).find("the original model is merged"),
            std::string::npos);

  RoutingTrace two = t;
  two.routers.push_back(t.routers[0]);
  auto b = expertAgreement(t, {}, two, {});
  ASSERT_FALSE(static_cast<bool>(b));
  EXPECT_NE(errorOf(b.takeError())
                .find("the original has 1 router(s) but the rewritten model 2"),
            std::string::npos);

  auto c = expertAgreement(trace({{0, 3}}), {}, t, merged);
  ASSERT_FALSE(static_cast<bool>(c));
  EXPECT_NE(errorOf(c.takeError())
                .find("router slot 3 is outside the 2 entries of "
                      "'moe.remap_experts' 'mapping'"),
            std::string::npos);
}

TEST(ReportTest, RelativeError) {
  HostTensor y = HostTensor::floats({1, 2});
  y.f = {3.0f, 4.0f};
  HostTensor z = y;
  EXPECT_EQ(*relativeError(y, z), 0.0);
  z.f = {3.0f, 4.5f};
  EXPECT_DOUBLE_EQ(*relativeError(y, z), 0.1);
  HostTensor zero = HostTensor::floats({1, 2});
  EXPECT_EQ(*relativeError(zero, zero), 0.0);
  EXPECT_TRUE(std::isinf(*relativeError(zero, y)));
  auto bad = relativeError(y, HostTensor::floats({2, 1}));
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(errorOf(bad.takeError())
                .find("the outputs differ in shape: [1, 2] (original) and "
                      "[2, 1] (rewritten)"),
            std::string::npos);
}

} // namespace
