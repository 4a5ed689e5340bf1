//===- GivenRoutingTest.cpp - Layers whose routing the caller gives ------===//
//
// Part of moe-opt. One small layer (4 experts, top-2) placed on 6 physical
// slots over 2 ranks (experts 1 and 2 replicated), written three ways: the
// full layer, its router alone (moe.role = "router") and each rank's share
// with a given routing of physical slot ids (the form --moe-shard-experts
// routing=given writes). The reference interpreter's entry points for the
// three forms must agree: the sum over ranks of the given-form outputs, fed
// the router's routing turned into physical slots, is the full layer, before
// and after --moe-optimize; and the code generator's plans carry the given
// values and the router role.
//
//===----------------------------------------------------------------------===//

#include "moe/codegen/CudaEmitter.h"
#include "moe/dialects/MoE/MoEDialect.h"
#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/passes/Passes.h"
#include "moe/runtime/KernelABI.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/FormatVariadic.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

using namespace mlir;
using namespace mlir::moe;

namespace {

constexpr int64_t H = 8, I = 6, E = 4, K = 2;
/// Physical slots: GPU 0 holds experts 0, 1, 2; GPU 1 holds 3, 1, 2.
const int64_t kSlotExpert[] = {0, 1, 2, 3, 1, 2};
const int64_t kSlotGpu[] = {0, 0, 0, 1, 1, 1};
constexpr int64_t S = 6;

float value(int64_t i, int salt) {
  return 0.5f * std::sin(0.37f * static_cast<float>(i) + 1.3f * salt);
}

/// A dense f32 constant of `shape` whose element at flat index i of expert
/// `experts[e]` is value(experts[e] * perExpert + i, salt).
std::string constant(const std::vector<int64_t> &shape, int salt,
                     const std::vector<int64_t> &experts = {}) {
  int64_t per = 1;
  for (size_t d = experts.empty() ? 0 : 1; d < shape.size(); ++d)
    per *= shape[d];
  int64_t n = experts.empty() ? per : per * experts.size();
  // Nested brackets, one level per dimension.
  std::string text = "arith.constant dense<";
  for (int64_t i = 0; i < n; ++i) {
    int64_t inner = n;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (i % inner == 0)
        text += "[";
      inner /= shape[d];
    }
    int64_t flat = experts.empty() ? i : experts[i / per] * per + i % per;
    text += llvm::formatv("{0:e}", value(flat, salt)).str();
    inner = 1;
    for (size_t d = shape.size(); d-- > 0;) {
      inner *= shape[d];
      if ((i + 1) % inner == 0)
        text += "]";
    }
    if (i + 1 < n)
      text += ", ";
  }
  std::string type;
  for (int64_t d : shape)
    type += std::to_string(d) + "x";
  return text + "> : tensor<" + type + "f32>";
}

std::string tensorOf(std::vector<int64_t> shape) {
  std::string t = "tensor<";
  for (int64_t d : shape)
    t += std::to_string(d) + "x";
  return t + "f32>";
}

/// The router: softmax top-2 with renormalised weights.
std::string routerOps() {
  return llvm::formatv(
      "  %wr = {0}\n"
      "  %l = moe.router_linear %x, %wr : (tensor<?x{1}xf32>, "
      "tensor<{2}x{1}xf32>) -> tensor<?x{2}xf32>\n"
      "  %p = moe.softmax %l : tensor<?x{2}xf32>\n"
      "  %ids, %v = moe.topk %p {{k = 2 : i64} : tensor<?x{2}xf32> -> "
      "tensor<?x2xi32>, tensor<?x2xf32>\n"
      "  %w = moe.normalize %v : tensor<?x2xf32>\n",
      constant({E, H}, 0), H, E);
}

/// Dispatch, experts (those of `experts`) and combine of %ids, %w.
std::string expertOps(const std::vector<int64_t> &experts) {
  int64_t n = experts.size();
  return llvm::formatv(
      "  %c, %off, %rows = moe.dispatch %ids {{num_experts = {0} : i64} : "
      "tensor<?x2xi32> -> tensor<{0}xi32>, tensor<{1}xi32>, tensor<?xi32>\n"
      "  %xs = moe.permute %x, %rows, %w : (tensor<?x{2}xf32>, tensor<?xi32>, "
      "tensor<?x2xf32>) -> tensor<?x{2}xf32>\n"
      "  %g = {3}\n  %u = {4}\n  %d = {5}\n"
      "  %ys = moe.expert_ffn %xs, %off gate(%g) up(%u) down(%d) "
      "{{activation = #moe.activation<silu>} : (tensor<?x{2}xf32>, "
      "tensor<{1}xi32>, {6}, {6}, {7}) -> tensor<?x{2}xf32>\n"
      "  %y = moe.combine %ys, %rows, %w : (tensor<?x{2}xf32>, tensor<?xi32>, "
      "tensor<?x2xf32>) -> tensor<?x{2}xf32>\n"
      "  return %y : tensor<?x{2}xf32>\n",
      n, n + 1, H, constant({n, I, H}, 1, experts),
      constant({n, I, H}, 2, experts), constant({n, H, I}, 3, experts),
      tensorOf({n, I, H}), tensorOf({n, H, I}));
}

/// The module: @full, @router and @rank0, @rank1 (given routing).
std::string module() {
  std::string m = "module {\n";
  m += llvm::formatv("func.func @full(%x: tensor<?x{0}xf32>) -> "
                     "tensor<?x{0}xf32> attributes {{moe.layer = 0 : i64} {{\n",
                     H);
  m += routerOps() + expertOps({0, 1, 2, 3}) + "}\n";
  m += llvm::formatv("func.func @router(%x: tensor<?x{0}xf32>) -> "
                     "(tensor<?x2xi32>, tensor<?x2xf32>) attributes "
                     "{{moe.layer = 0 : i64, moe.role = \"router\"} {{\n",
                     H);
  m += routerOps() +
       "  return %ids, %w : tensor<?x2xi32>, tensor<?x2xf32>\n}\n";
  for (int64_t rank = 0; rank < 2; ++rank) {
    // Local experts in expert order; slot s maps to its expert's local
    // index when it sits on this rank.
    std::vector<int64_t> local;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t s = 0; s < S; ++s)
        if (kSlotExpert[s] == e && kSlotGpu[s] == rank) {
          local.push_back(e);
          break;
        }
    std::string mapping;
    for (int64_t s = 0; s < S; ++s) {
      int64_t m2 = -1;
      if (kSlotGpu[s] == rank)
        m2 = std::find(local.begin(), local.end(), kSlotExpert[s]) -
             local.begin();
      mapping += (s ? ", " : "") + std::to_string(m2);
    }
    m += llvm::formatv(
        "func.func @rank{0}(%x: tensor<?x{1}xf32>, %gi: tensor<?x2xi32>, "
        "%gw: tensor<?x2xf32>) -> tensor<?x{1}xf32> attributes "
        "{{moe.layer = 0 : i64} {{\n"
        "  %ids, %w = moe.remap_experts %gi, %gw mapping = [{2}] : "
        "tensor<?x2xi32>, tensor<?x2xf32>\n",
        rank, H, mapping);
    m += expertOps(local) + "}\n";
  }
  return m + "}\n";
}

class GivenRouting : public ::testing::Test {
protected:
  void SetUp() override {
    context.loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect>();
    mod = parseSourceString<ModuleOp>(module(), &context);
    ASSERT_TRUE(mod);
    x = ::moe::HostTensor::floats({T, H});
    for (int64_t i = 0; i < T * H; ++i)
      x.f[i] = std::cos(0.91f * i) * 1.5f;
  }

  func::FuncOp fn(StringRef name) {
    return mod->lookupSymbol<func::FuncOp>(name);
  }

  /// The router's routing as physical slots: the replica of a slot's expert
  /// alternates with the token.
  ::moe::HostTensor physical(const ::moe::HostTensor &ids) {
    ::moe::HostTensor p = ids;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) {
        int32_t e = ids.i[t * K + k];
        std::vector<int64_t> slots;
        for (int64_t s = 0; s < S; ++s)
          if (kSlotExpert[s] == e)
            slots.push_back(s);
        p.i[t * K + k] = e < 0 ? -1 : slots[t % slots.size()];
      }
    return p;
  }

  /// max |sum over ranks - full| / max |full|, and the smallest of the
  /// same for one rank alone.
  void expectRanksSumToFull(double &rel, double &alone) {
    ::moe::WeightLoader loader(".");
    auto full = ::moe::interpret(fn("full"), x, loader);
    ASSERT_TRUE(bool(full)) << llvm::toString(full.takeError());
    auto routing = ::moe::interpretRouter(fn("router"), x, loader);
    ASSERT_TRUE(bool(routing)) << llvm::toString(routing.takeError());
    ::moe::HostTensor ids = physical(routing->ids);
    std::vector<float> sum(T * H, 0.0f);
    alone = 1e30;
    double scale = 0;
    for (float v : full->f)
      scale = std::max(scale, double(std::fabs(v)));
    for (const char *rank : {"rank0", "rank1"}) {
      auto y = ::moe::interpretGiven(fn(rank), x, ids, routing->weights,
                                     loader);
      ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
      double err = 0;
      for (int64_t i = 0; i < T * H; ++i) {
        sum[i] += y->f[i];
        err = std::max(err, double(std::fabs(y->f[i] - full->f[i])));
      }
      alone = std::min(alone, err / scale);
    }
    rel = 0;
    for (int64_t i = 0; i < T * H; ++i)
      rel = std::max(rel, double(std::fabs(sum[i] - full->f[i])) / scale);
  }

  static constexpr int64_t T = 9;
  MLIRContext context;
  OwningOpRef<ModuleOp> mod;
  ::moe::HostTensor x;
};

TEST_F(GivenRouting, RanksSumToTheFullLayerOnTheReference) {
  double rel = 1, alone = 0;
  expectRanksSumToFull(rel, alone);
  EXPECT_LT(rel, 1e-6);
  // Each rank alone is far from the layer: the check can fail.
  EXPECT_GT(alone, 1e-2);
}

TEST_F(GivenRouting, RanksSumToTheFullLayerAfterFusion) {
  PassManager pm(&context);
  pm.addPass(createMoEOptimize());
  ASSERT_TRUE(succeeded(pm.run(*mod)));
  // Every function is fused, the rank layers with a given routing.
  int given = 0, routes = 0;
  mod->walk([&](FusedRouteOp op) {
    ++routes;
    given += op.getGivenIds() != nullptr;
  });
  EXPECT_EQ(routes, 4);
  EXPECT_EQ(given, 2);
  mod->walk([&](DispatchOp op) { ADD_FAILURE() << "unfused dispatch"; });
  double rel = 1, alone = 0;
  expectRanksSumToFull(rel, alone);
  EXPECT_LT(rel, 1e-6);
  EXPECT_GT(alone, 1e-2);
}

TEST_F(GivenRouting, RouterReturnsTheLayersRouting) {
  ::moe::WeightLoader loader(".");
  ::moe::RoutingTrace trace;
  auto full = ::moe::interpret(fn("full"), x, loader, &trace);
  ASSERT_TRUE(bool(full)) << llvm::toString(full.takeError());
  auto routing = ::moe::interpretRouter(fn("router"), x, loader);
  ASSERT_TRUE(bool(routing)) << llvm::toString(routing.takeError());
  ASSERT_EQ(trace.routers.size(), 1u);
  EXPECT_EQ(routing->ids.i, trace.routers[0].ids.i);
  EXPECT_EQ(routing->weights.f, trace.routers[0].weights.f);
  EXPECT_EQ(routing->ids.shape, (std::vector<int64_t>{T, K}));
}

TEST_F(GivenRouting, EachFormHasItsEntryPoint) {
  ::moe::WeightLoader loader(".");
  auto asLayer = ::moe::interpret(fn("rank0"), x, loader);
  ASSERT_FALSE(bool(asLayer));
  std::string why = llvm::toString(asLayer.takeError());
  EXPECT_NE(why.find("function @rank0 is a layer with a given routing"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("moe::interpretGiven"), std::string::npos) << why;
  auto asRouter = ::moe::interpret(fn("router"), x, loader);
  ASSERT_FALSE(bool(asRouter));
  why = llvm::toString(asRouter.takeError());
  EXPECT_NE(why.find("moe::interpretRouter"), std::string::npos) << why;
  // Given rows that do not match the tokens are refused.
  ::moe::HostTensor ids = ::moe::HostTensor::ints({T - 1, K});
  ::moe::HostTensor w = ::moe::HostTensor::floats({T - 1, K});
  auto bad = ::moe::interpretGiven(fn("rank0"), x, ids, w, loader);
  ASSERT_FALSE(bool(bad));
  why = llvm::toString(bad.takeError());
  EXPECT_NE(why.find("the given ids have 8 rows, the input 9 tokens"),
            std::string::npos)
      << why;
}

TEST_F(GivenRouting, PlansCarryTheGivenValuesAndTheRouterRole) {
  PassManager pm(&context);
  pm.addPass(createMoEOptimize());
  ASSERT_TRUE(succeeded(pm.run(*mod)));
  auto rank = ::moe::planCudaLayer(fn("rank1"));
  ASSERT_TRUE(bool(rank)) << llvm::toString(rank.takeError());
  ASSERT_GE(rank->givenIds, 0);
  ASSERT_GE(rank->givenWeights, 0);
  EXPECT_EQ(rank->values[rank->givenIds].type, ::moe::ElementType::I32);
  EXPECT_EQ(rank->values[rank->givenIds].perToken, K);
  EXPECT_EQ(rank->values[rank->givenWeights].type, ::moe::ElementType::F32);
  EXPECT_EQ(rank->values[rank->givenWeights].perToken, K);
  EXPECT_TRUE(rank->role.empty());
  EXPECT_GE(rank->output, 0);
  // The routing kernel reads them from its GIVEN slots.
  bool bound = false;
  for (const ::moe::Launch &l : rank->launches)
    if (l.args.size() > MOE_ROUTE_SLOT_GIVEN_WEIGHTS &&
        l.args[MOE_ROUTE_SLOT_GIVEN_IDS].value == rank->givenIds &&
        l.args[MOE_ROUTE_SLOT_GIVEN_WEIGHTS].value == rank->givenWeights)
      bound = true;
  EXPECT_TRUE(bound);

  auto full = ::moe::planCudaLayer(fn("full"));
  ASSERT_TRUE(bool(full)) << llvm::toString(full.takeError());
  EXPECT_EQ(full->givenIds, -1);
  EXPECT_EQ(full->givenWeights, -1);

  auto router = ::moe::planCudaLayer(fn("router"));
  ASSERT_TRUE(bool(router)) << llvm::toString(router.takeError());
  EXPECT_EQ(router->role, "router");
  EXPECT_EQ(router->output, -1);
  ASSERT_EQ(router->routings.size(), 1u);
  EXPECT_EQ(router->values[router->routings[0].ids].type,
            ::moe::ElementType::I32);
  EXPECT_EQ(router->givenIds, -1);
}

// A layer that dispatches its given routing as it is (Read-ME's layers) has
// no router: after fusion it is moe.dispatch of the ids argument and
// moe.fused_experts on the arguments, without moe.fused_route; the plan
// plans that dispatch in one kernel reading the given ids, and the layer
// still computes the full layer from the router's routing.
TEST_F(GivenRouting, GivenRoutingAsItIsKeepsItsDispatch) {
  std::string direct = llvm::formatv(
      "func.func @direct(%x: tensor<?x{0}xf32>, %ids: tensor<?x2xi32>, "
      "%w: tensor<?x2xf32>) -> tensor<?x{0}xf32> attributes "
      "{{moe.layer = 0 : i64} {{\n",
      H);
  direct += expertOps({0, 1, 2, 3}) + "}\n";
  OwningOpRef<ModuleOp> m = parseSourceString<ModuleOp>(direct, &context);
  ASSERT_TRUE(m);
  auto layer = m->lookupSymbol<func::FuncOp>("direct");
  ::moe::WeightLoader loader(".");
  auto full = ::moe::interpret(fn("full"), x, loader);
  ASSERT_TRUE(bool(full)) << llvm::toString(full.takeError());
  auto routing = ::moe::interpretRouter(fn("router"), x, loader);
  ASSERT_TRUE(bool(routing)) << llvm::toString(routing.takeError());

  PassManager pm(&context);
  pm.addPass(createMoEOptimize());
  ASSERT_TRUE(succeeded(pm.run(*m)));
  m->walk([&](FusedRouteOp op) { ADD_FAILURE() << "a moe.fused_route"; });
  SmallVector<DispatchOp> dispatches;
  m->walk([&](DispatchOp op) { dispatches.push_back(op); });
  ASSERT_EQ(dispatches.size(), 1u);
  EXPECT_EQ(dispatches[0].getIds(), layer.getArgument(1));
  SmallVector<FusedExpertsOp> experts;
  m->walk([&](FusedExpertsOp op) { experts.push_back(op); });
  ASSERT_EQ(experts.size(), 1u);
  EXPECT_EQ(experts[0].getIds(), layer.getArgument(1));
  EXPECT_EQ(experts[0].getWeights(), layer.getArgument(2));
  EXPECT_EQ(experts[0].getRows(), dispatches[0].getRows());

  auto y =
      ::moe::interpretGiven(layer, x, routing->ids, routing->weights, loader);
  ASSERT_TRUE(bool(y)) << llvm::toString(y.takeError());
  double err = 0, scale = 0;
  for (int64_t i = 0; i < T * H; ++i) {
    err = std::max(err, double(std::fabs(y->f[i] - full->f[i])));
    scale = std::max(scale, double(std::fabs(full->f[i])));
  }
  EXPECT_LT(err, 1e-6 * scale);

  auto plan = ::moe::planCudaLayer(layer);
  ASSERT_TRUE(bool(plan)) << llvm::toString(plan.takeError());
  ASSERT_GE(plan->givenIds, 0);
  ASSERT_GE(plan->givenWeights, 0);
  ASSERT_EQ(plan->routings.size(), 1u);
  EXPECT_EQ(plan->routings[0].ids, plan->givenIds);
  EXPECT_EQ(plan->routings[0].weights, plan->givenWeights);
  EXPECT_EQ(plan->routings[0].experts, E);
  // The dispatch-planning kernel reads the given ids; no routing kernel.
  int planning = 0;
  for (const ::moe::Launch &l : plan->launches) {
    EXPECT_EQ(StringRef(l.kernel).find("moe_route"), StringRef::npos)
        << l.kernel;
    if (StringRef(l.kernel).starts_with("moe_dispatch")) {
      ++planning;
      ASSERT_EQ(l.args.size(), size_t(MOE_DISPATCH_NUM_SLOTS));
      EXPECT_EQ(l.args[MOE_DISPATCH_SLOT_IDS].value, plan->givenIds);
      EXPECT_EQ(l.maxBlocks, 1);
    }
  }
  EXPECT_EQ(planning, 1);
}

TEST_F(GivenRouting, OtherSignaturesAreRefusedByName) {
  const char *bad = R"mlir(
func.func @two(%x: tensor<?x8xf32>, %y: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = 0 : i64} {
  return %x : tensor<?x8xf32>
}
func.func @role(%x: tensor<?x8xf32>) -> tensor<?x8xf32> attributes {moe.layer = 0 : i64, moe.role = "router"} {
  return %x : tensor<?x8xf32>
}
)mlir";
  OwningOpRef<ModuleOp> m = parseSourceString<ModuleOp>(bad, &context);
  ASSERT_TRUE(m);
  auto two = ::moe::planCudaLayer(m->lookupSymbol<func::FuncOp>("two"));
  ASSERT_FALSE(bool(two));
  std::string why = llvm::toString(two.takeError());
  EXPECT_NE(why.find("function @two: expected a layer (x [T, H]) -> y, a "
                     "layer with a given routing"),
            std::string::npos)
      << why;
  auto role = ::moe::planCudaLayer(m->lookupSymbol<func::FuncOp>("role"));
  ASSERT_FALSE(bool(role));
  why = llvm::toString(role.takeError());
  EXPECT_NE(why.find("function @role (moe.role = \"router\"): expected one "
                     "argument x [T, H] and two results"),
            std::string::npos)
      << why;
}

} // namespace
