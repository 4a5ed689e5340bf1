//===- ShardExperts.cpp - One rank's share of expert-parallel layers ------===//
//
// Part of moe-opt. Keeps, in every placed MoE layer, the experts whose slots
// sit on one GPU (replicas included) and empties the router slots the other
// ranks serve, so that the sum over ranks of the rank outputs is the layer.
//
//===----------------------------------------------------------------------===//

#include "ExpertLayer.h"
#include "LayoutInputs.h"

#include "moe/dialects/MoE/Routing.h"
#include "moe/lib/Analysis/Placement.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Verifier.h"

#include "llvm/Support/FormatVariadic.h"

namespace mlir::moe {
#define GEN_PASS_DEF_MOESHARDEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

using namespace experts;

inline constexpr llvm::StringLiteral kRankAttr = "moe.rank";
inline constexpr llvm::StringLiteral kRankExpertsAttr = "moe.rank.experts";

/// What rank R does with each expert of a layer under a placement.
struct RankShare {
  /// Local expert of each layer expert, or -1 when another rank serves it.
  SmallVector<int64_t> mapping;
  /// Replicas of each expert and the replica index rank R holds (replicas
  /// are numbered in slot order).
  SmallVector<int64_t> replicaCount, replicaIndex;
  /// Layer expert of each local expert.
  SmallVector<int64_t> local;
  bool replicated = false;
};

RankShare shareOf(const ::moe::LayerPlacement &p, int64_t rank) {
  RankShare s;
  s.mapping.assign(p.experts, -1);
  s.replicaCount.assign(p.experts, 0);
  s.replicaIndex.assign(p.experts, 0);
  for (int64_t slot = 0; slot < p.slots(); ++slot) {
    int64_t e = p.slotExpert[slot];
    // validatePlacement: at most one replica of `e` on this GPU.
    if (p.slotGpu[slot] == rank)
      s.replicaIndex[e] = s.replicaCount[e];
    ++s.replicaCount[e];
  }
  for (int64_t e = 0; e < p.experts; ++e) {
    s.replicated |= s.replicaCount[e] > 1;
    bool here = false;
    for (int64_t slot = 0; slot < p.slots(); ++slot)
      here |= p.slotExpert[slot] == e && p.slotGpu[slot] == rank;
    if (here) {
      s.mapping[e] = s.local.size();
      s.local.push_back(e);
    }
  }
  return s;
}

/// How a shared expert's (moe.ffn) output joins the layer's: through
/// single-use gates (arith.mulf, moe.row_scale) into an arith.addf, whose other
/// operand is the layer without it. Null when not understood.
std::pair<arith::AddFOp, Value> sharedExpertSum(FFNOp ffn) {
  Value v = ffn.getResult();
  while (v.hasOneUse()) {
    Operation *user = *v.getUsers().begin();
    if (auto add = dyn_cast<arith::AddFOp>(user))
      return {add, add.getLhs() == v ? add.getRhs() : add.getLhs()};
    // A gate scales the shared expert's rows: zero stays zero.
    bool gate = isa<arith::MulFOp>(user) ||
                (isa<RowScaleOp>(user) && user->getOperand(0) == v);
    if (!gate)
      break;
    v = user->getResult(0);
  }
  return {nullptr, Value()};
}

struct ShardExpertsPass : public impl::MoEShardExpertsBase<ShardExpertsPass> {
  using MoEShardExpertsBase::MoEShardExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto fail = [&](Operation *at, const Twine &why) {
      at->emitError() << "moe-shard-experts: " << why;
      signalPassFailure();
    };
    if (rank < 0)
      return fail(module, "give rank=R (R >= 0, a GPU of the placement)");
    if (routing != "internal" && routing != "given")
      return fail(module, "routing='" + routing +
                              "' is not 'internal' (the layer routes its "
                              "tokens) or 'given' (the caller's physical "
                              "slot ids)");
    given = routing == "given";
    std::string root = ::moe::weightRoot(module, getInputIRPath(module));
    ::moe::WeightLoader loader(root);
    // Only experts that are not one checkpoint tensor each need new weights
    // (and a file for them: NewWeights names what is missing).
    NewWeights newWeights(module, "rank" + std::to_string(rank), weightsOut);
    int64_t placed = 0;
    for (auto fn : llvm::to_vector(module.getOps<func::FuncOp>())) {
      std::string why;
      FailureOr<ExpertLayer> layer = findExpertLayer(fn, why, /*wholeExperts=*/true);
      if (failed(layer)) {
        if (!why.empty())
          return fail(fn, "cannot shard the layer: " + why);
        continue;
      }
      if (fn->hasAttr(kRankAttr))
        return fail(fn, llvm::formatv(
                            "layer {0} is already the share of "
                            "rank {1} ({2})",
                            layer->index,
                            fn->getAttrOfType<IntegerAttr>(kRankAttr).getInt(),
                            kRankAttr));
      auto gpus = fn->getAttrOfType<IntegerAttr>(kGpusAttr);
      if (!gpus)
        return fail(
            fn, llvm::formatv("layer {0} has no placement ({1}, {2}, {3}): run "
                              "--moe-plan-placement first",
                              layer->index, kSlotExpertAttr, kSlotGpuAttr,
                              kGpusAttr));
      if (rank >= gpus.getInt())
        return fail(fn, llvm::formatv("rank={0} is out of range: layer {1} "
                                      "is placed on {2} GPUs (ranks 0 to {3})",
                                      int64_t(rank), layer->index,
                                      gpus.getInt(), gpus.getInt() - 1));
      LayoutLayer ll;
      ll.fn = fn;
      ll.layer = layer->index;
      ll.experts = layer->experts;
      FailureOr<std::optional<::moe::LayerPlacement>> p =
          readPlacementAttrs(ll, gpus.getInt());
      if (failed(p))
        return signalPassFailure(); // the error names the attribute
      if (failed(shardLayer(*layer, **p, loader, newWeights, why)))
        return fail(fn, llvm::formatv("layer {0}: {1}", layer->index, why));
      ++placed;
    }
    if (placed == 0)
      return fail(module, "no MoE layer with routed experts to shard");
    if (failed(newWeights.commit()))
      return signalPassFailure();
  }

  bool given = false;

  /// Erases the ops of `fn` that no longer contribute, users first.
  static void eraseDead(func::FuncOp fn) {
    bool erased = true;
    while (erased) {
      erased = false;
      SmallVector<Operation *> dead;
      fn.walk([&](Operation *op) {
        if (op->use_empty() && isMemoryEffectFree(op) &&
            !op->hasTrait<OpTrait::IsTerminator>())
          dead.push_back(op);
      });
      for (Operation *op : dead)
        op->erase();
      erased = !dead.empty();
    }
  }

  /// The layer's router alone, as `<fn>_router` after `fn`: returns the
  /// routing (ids, weights) the layer dispatches and combines with.
  LogicalResult addRouterFunction(ExpertLayer &layer, const RankShare &share,
                                  std::string &why) {
    func::FuncOp fn = layer.fn;
    func::FuncOp router = fn.clone();
    std::string name = (fn.getSymName() + "_router").str();
    if (SymbolTable::lookupSymbolIn(fn->getParentOp(), name)) {
      why = "a function @" + name + " exists already";
      router.erase();
      return failure();
    }
    router.setSymName(name);
    OpBuilder b(fn);
    b.setInsertionPointAfter(fn);
    b.insert(router);
    std::string ignored;
    FailureOr<ExpertLayer> copy = findExpertLayer(router, ignored,
                                                  /*wholeExperts=*/true);
    if (failed(copy)) {
      router.erase();
      why = "internal error: the router's copy is not a layer";
      return failure();
    }
    Value ids = copy->dispatch.getIds(), w = copy->combine.getWeights();
    Operation *ret = router.getBody().front().getTerminator();
    OpBuilder rb(ret);
    func::ReturnOp::create(rb, ret->getLoc(), ValueRange{ids, w});
    ret->erase();
    router.setFunctionType(FunctionType::get(
        fn.getContext(), router.getArgumentTypes(),
        TypeRange{ids.getType(), w.getType()}));
    eraseDead(router);
    // Only what a router function is: no placement (it routes over the
    // logical experts), the layer, the role and the rank.
    SmallVector<StringAttr> drop;
    for (NamedAttribute a : router->getAttrs())
      if (a.getName().getValue().starts_with("moe.placement."))
        drop.push_back(a.getName());
    for (StringAttr a : drop)
      router->removeAttr(a);
    Builder attrs(fn.getContext());
    router->setAttr(kRoleAttr, attrs.getStringAttr("router"));
    router->setAttr(kRankAttr, attrs.getI64IntegerAttr(rank));
    router->setAttr(kRankExpertsAttr, attrs.getDenseI64ArrayAttr(share.local));
    if (failed(verify(router))) {
      why = "the router function does not verify";
      return failure();
    }
    return success();
  }

  /// Replaces every expert weight of the layer by the experts `local` of
  /// it (in that order) without reading any weight now. A moe.weight that
  /// names one checkpoint tensor per expert keeps the names of `local`: the
  /// rank reads its experts from the checkpoint itself (moe-compile
  /// --placement copies them straight into the rank's package). A single
  /// tensor holding every expert becomes a new weight of the rank's slices,
  /// produced tensor by tensor while the new weights' file is written; a
  /// constant (already in memory) is sliced now.
  LogicalResult selectExpertWeights(ExpertLayer &layer, ArrayRef<int64_t> local,
                                    ::moe::WeightLoader &loader,
                                    NewWeights &newWeights, StringRef prefix,
                                    std::string &why) {
    OpBuilder b(layer.ffn);
    int64_t E = layer.experts, n = local.size();
    for (OpOperand *o : expertWeightOperands(layer.ffn)) {
      auto type = cast<RankedTensorType>(o->get().getType());
      RankedTensorType kept = withDim(type, 0, n);
      std::string name = (prefix + "." + expertOperandName(layer.ffn, o)).str();
      Location loc = o->get().getLoc();
      auto w = o->get().getDefiningOp<WeightOp>();
      if (w && w.isStack() && static_cast<int64_t>(w.getNames().size()) == E) {
        SmallVector<Attribute> names, files;
        bool perName = w.getFiles().size() > 1;
        for (int64_t g : local) {
          names.push_back(w.getNames()[g]);
          if (perName)
            files.push_back(w.getFiles()[g]);
        }
        if (!perName)
          files.push_back(w.getFiles()[0]);
        o->set(WeightOp::create(b, loc, kept, b.getArrayAttr(names),
                                b.getArrayAttr(files), /*stacked=*/n == 1));
        continue;
      }
      if (w) {
        // One checkpoint tensor (w is not a stack of E names): read when
        // the new weights are written, the rank's experts one at a time
        // (quantized codes and scales as stored).
        std::string tensor = cast<StringAttr>(w.getNames()[0]).str();
        std::string file = cast<StringAttr>(w.getFiles()[0]).str();
        std::vector<int64_t> shape(type.getShape().begin(),
                                   type.getShape().end());
        std::string elemName =
            ::moe::WeightLoader::weightElementName(type.getElementType())
                .str();
        std::vector<int64_t> experts(local.begin(), local.end());
        auto produce =
            [&loader, tensor, file, shape, elemName,
             experts](llvm::function_ref<llvm::Error(ArrayRef<uint8_t>)> sink)
            -> llvm::Error {
          return loader.forEachRow(tensor, file, shape, elemName, experts,
                                   sink);
        };
        FailureOr<WeightOp> made =
            newWeights.addStreamed(b, loc, name, kept, std::move(produce));
        if (failed(made)) {
          why = "cannot create the new weight '" + name + "'";
          return failure();
        }
        o->set(made->getResult());
        continue;
      }
      FailureOr<std::vector<float>> old = weightValues(o->get(), loader, why);
      if (failed(old))
        return failure();
      int64_t rest = type.getNumElements() / E;
      std::vector<float> values(n * rest);
      for (int64_t i = 0; i < n; ++i)
        std::copy(old->begin() + local[i] * rest,
                  old->begin() + (local[i] + 1) * rest,
                  values.begin() + i * rest);
      FailureOr<WeightOp> made = newWeights.add(b, loc, name, kept, values);
      if (failed(made)) {
        why = "cannot create the new weight '" + name + "'";
        return failure();
      }
      o->set(made->getResult());
    }
    return success();
  }

  LogicalResult shardLayer(ExpertLayer &layer, const ::moe::LayerPlacement &p,
                           ::moe::WeightLoader &loader, NewWeights &newWeights,
                           std::string &why) {
    RankShare share = shareOf(p, rank);
    int64_t n = share.local.size(), E = layer.experts;
    if (n == 0) {
      why = llvm::formatv("rank {0} holds no slot of this layer", rank);
      return failure();
    }
    func::FuncOp fn = layer.fn;
    if (given && layer.permute.getWeights() != layer.combine.getWeights()) {
      why = "routing=given: moe.permute and moe.combine read different "
            "routing weights; a given routing has one weights array";
      return failure();
    }
    if (given && failed(addRouterFunction(layer, share, why)))
      return failure();
    // Shared experts run on rank 0 only: elsewhere their sum is skipped.
    SmallVector<FFNOp> shared;
    fn.walk([&](FFNOp ffn) { shared.push_back(ffn); });
    SmallVector<std::pair<arith::AddFOp, Value>> skips;
    for (FFNOp ffn : shared) {
      auto [add, rest] = sharedExpertSum(ffn);
      if (!add) {
        why = "a shared expert (moe.ffn) is not added to the layer's output "
              "through gates (arith.mulf, moe.row_scale) and an arith.addf; "
              "its share per rank is not understood";
        return failure();
      }
      if (rank != 0)
        skips.push_back({add, rest});
    }

    Size before = routedExpertSize(layer.ffn);
    std::string prefix = llvm::formatv("layer.{0}.rank{1}", layer.index, rank);
    if (failed(selectExpertWeights(layer, share.local, loader, newWeights,
                                   prefix, why)))
      return failure();
    sliceExpertWidths(layer.ffn, share.local);

    // The rank's slots, before the dispatch: the combine's weights get the
    // emptied slots' zeros; the permute keeps its weights when they differ
    // (the slots it reads are the kept ones, unchanged).
    Value ids = layer.dispatch.getIds();
    Value w = layer.combine.getWeights();
    SmallVector<int64_t> mapping = share.mapping;
    DenseI64ArrayAttr count, index;
    OpBuilder b(fn.getContext());
    if (given) {
      // The caller's physical slots: (x, ids, weights); slot s maps to the
      // local expert of its logical expert when it sits on this GPU.
      Block &entry = fn.getBody().front();
      Location loc = fn.getLoc();
      Type idsType = ids.getType(), wType = w.getType();
      if (failed(fn.insertArgument(1, idsType, {}, loc)) ||
          failed(fn.insertArgument(2, wType, {}, loc))) {
        why = "cannot add the ids and weights arguments";
        return failure();
      }
      ids = entry.getArgument(1);
      w = entry.getArgument(2);
      mapping.assign(p.slots(), -1);
      for (int64_t slot = 0; slot < p.slots(); ++slot)
        if (p.slotGpu[slot] == rank)
          mapping[slot] = share.mapping[p.slotExpert[slot]];
      b.setInsertionPointToStart(&entry);
    } else {
      Operation *later = ids.getDefiningOp();
      Operation *wDef = w.getDefiningOp();
      if (!later || (wDef && later->isBeforeInBlock(wDef)))
        later = wDef;
      if (later)
        b.setInsertionPointAfter(later);
      else
        b.setInsertionPointToStart(&fn.getBody().front());
      if (share.replicated) {
        count = b.getDenseI64ArrayAttr(share.replicaCount);
        index = b.getDenseI64ArrayAttr(share.replicaIndex);
      }
    }
    auto remap = RemapExpertsOp::create(
        b, layer.dispatch.getLoc(), ids.getType(), w.getType(), ids, w,
        b.getDenseI64ArrayAttr(mapping), count, index);
    layer.dispatch.getIdsMutable().assign(remap.getResultIds());
    if (given || layer.permute.getWeights() == w)
      layer.permute.getWeightsMutable().assign(remap.getResultWeights());
    layer.combine.getWeightsMutable().assign(remap.getResultWeights());
    setDispatchExperts(layer.dispatch, n);
    layer.experts = n;

    for (auto [add, rest] : skips) {
      add.getResult().replaceAllUsesWith(rest);
      add->erase();
    }
    // Erase what no longer contributes (the skipped shared experts, old
    // weights, with routing=given the router), users first.
    eraseDead(fn);

    Builder attrs(fn.getContext());
    fn->setAttr(kRankAttr, attrs.getI64IntegerAttr(rank));
    fn->setAttr(kRankExpertsAttr, attrs.getDenseI64ArrayAttr(share.local));
    if (failed(verify(fn)))
      return why = "the rank's layer does not verify", failure();

    std::string localText;
    llvm::raw_string_ostream ls(localText);
    llvm::interleaveComma(share.local, ls);
    fn.emitRemark() << llvm::formatv(
        "moe-shard-experts: layer {0}: rank {1} holds experts [{2}] ({3}{4})",
        layer.index, rank, localText,
        given ? "routing given as physical slots; the router is @" +
                    fn.getSymName().str() + "_router"
        : share.replicated ? std::string("replicated experts split tokens "
                                         "by row mod replicas")
                           : std::string("no replicas"),
        shared.empty() ? ""
        : rank == 0    ? "; computes the shared experts"
                       : "; shared experts left to rank 0");
    fn.emitRemark() << sizeReport("moe-shard-experts", layer, E, before,
                                  routedExpertSize(layer.ffn));
    return success();
  }
};

} // namespace
} // namespace mlir::moe
