//===- HFImporter.cpp - Emits moe IR for a Hugging Face model -------------===//
//
// Part of moe-opt. Turns a ModelSpec into the composed form of the moe
// dialect: router scoring, selection and weight ops, dispatch, experts and
// combine, one function per MoE layer.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Import/HFImporter.h"
#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Verifier.h"

#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace mlir::moe;
using ::moe::DType;
using ::moe::FFNActivation;
using ::moe::GatedFFNWeights;
using ::moe::GroupScoring;
using ::moe::ImportOptions;
using ::moe::LoraMixtureSpec;
using ::moe::ModelSpec;
using ::moe::MoEBlockSpec;
using ::moe::RouterScoring;
using ::moe::SelectedTransform;
using ::moe::TensorRef;

namespace {

class Emitter {
public:
  Emitter(OpBuilder &b, Location loc) : b(b), loc(loc) {}

  Type elementType(DType dtype) {
    switch (dtype) {
    case DType::BF16:
      return b.getBF16Type();
    case DType::F16:
      return b.getF16Type();
    default:
      return b.getF32Type();
    }
  }

  RankedTensorType tensor(ArrayRef<int64_t> shape, Type elem) {
    return RankedTensorType::get(shape, elem);
  }

  /// `?xN` f32 scores.
  RankedTensorType scores(int64_t n) {
    return tensor({ShapedType::kDynamic, n}, b.getF32Type());
  }
  RankedTensorType ids(int64_t n) {
    return tensor({ShapedType::kDynamic, n}, b.getI32Type());
  }

  Value weight(const TensorRef &ref, ArrayRef<int64_t> shape = {},
               bool stacked = false) {
    SmallVector<Attribute> names, files;
    for (const std::string &n : ref.names)
      names.push_back(b.getStringAttr(n));
    bool oneFile = llvm::all_equal(ref.files);
    for (const std::string &f : ref.files) {
      files.push_back(b.getStringAttr(f));
      if (oneFile)
        break;
    }
    ArrayRef<int64_t> s = shape.empty() ? ArrayRef<int64_t>(ref.shape) : shape;
    Type elem = elementType(ref.dtype);
    switch (ref.codes) {
    case ::moe::QuantCodes::F8E4M3FN:
      elem = b.getType<Float8E4M3FNType>();
      break;
    case ::moe::QuantCodes::F4E2M1FN:
      elem = b.getType<Float4E2M1FNType>();
      break;
    case ::moe::QuantCodes::E8M0:
      elem = b.getType<Float8E8M0FNUType>();
      break;
    case ::moe::QuantCodes::None:
      break;
    }
    return WeightOp::create(b, loc, tensor(s, elem),
                            b.getArrayAttr(names), b.getArrayAttr(files),
                            stacked && names.size() == 1);
  }

  Activation activation(FFNActivation a) {
    switch (a) {
    case FFNActivation::Silu:
      return Activation::silu;
    case FFNActivation::Gelu:
      return Activation::gelu;
    case FFNActivation::GeluTanh:
      return Activation::gelu_tanh;
    case FFNActivation::SwigluClamped:
      return Activation::swiglu_clamped;
    }
    return Activation::silu;
  }

  /// Operands of a gated FFN op, in its operand-segment order.
  struct FFNOperands {
    Value gate, up, gateUp, down, gateBias, upBias, gateUpBias, downBias;
    Value gateScale, upScale, gateUpScale, downScale;
  };

  FFNOperands ffnWeights(const GatedFFNWeights &w) {
    FFNOperands o;
    auto scale = [&](const TensorRef &r) {
      return r.scale ? weight(*r.scale) : Value();
    };
    if (!w.gateUp.empty()) {
      o.gateUp = weight(w.gateUp);
      o.gateUpScale = scale(w.gateUp);
    } else {
      o.gate = weight(w.gate);
      o.up = weight(w.up);
      o.gateScale = scale(w.gate);
      o.upScale = scale(w.up);
    }
    o.down = weight(w.down);
    o.downScale = scale(w.down);
    if (!w.gateUpBias.empty())
      o.gateUpBias = weight(w.gateUpBias);
    if (!w.downBias.empty())
      o.downBias = weight(w.downBias);
    return o;
  }

  template <typename OpT>
  void setFFNAttributes(OpT op, const GatedFFNWeights &w) {
    op.setActivationAttr(ActivationAttr::get(b.getContext(),
                                             activation(w.activation)));
    if (w.interleaved)
      op.setGateUpLayoutAttr(GateUpLayoutAttr::get(
          b.getContext(), GateUpLayout::interleaved));
    if (w.inOut)
      op.setWeightLayoutAttr(
          WeightLayoutAttr::get(b.getContext(), WeightLayout::in_out));
    if (w.activation == FFNActivation::SwigluClamped) {
      op.setAlphaAttr(b.getF32FloatAttr(w.alpha));
      op.setLimitAttr(b.getF32FloatAttr(w.limit));
    }
    // Block-scaled projections share one block (the resolver checks it).
    for (const TensorRef *r : {&w.gate, &w.up, &w.gateUp, &w.down})
      if (r->scale) {
        op.setQuantBlock(r->block);
        break;
      }
  }

  Value expertFFN(Value xs, Value offsets, const GatedFFNWeights &w) {
    FFNOperands o = ffnWeights(w);
    auto op = ExpertFFNOp::create(
        b, loc, xs.getType(), xs, offsets, o.gate, o.up, o.gateUp, o.down,
        o.gateBias, o.upBias, o.gateUpBias, o.downBias, o.gateScale,
        o.upScale, o.gateUpScale, o.downScale,
        ActivationAttr::get(b.getContext(), activation(w.activation)),
        GateUpLayoutAttr(), WeightLayoutAttr(), FloatAttr(), FloatAttr(),
        UnitAttr(), DenseI64ArrayAttr(), DenseI64ArrayAttr());
    setFFNAttributes(op, w);
    return op.getResult();
  }

  Value denseFFN(Value x, const GatedFFNWeights &w) {
    FFNOperands o = ffnWeights(w);
    auto op = FFNOp::create(
        b, loc, x.getType(), x, o.gate, o.up, o.gateUp, o.down, o.gateBias,
        o.upBias, o.gateUpBias, o.downBias, o.gateScale, o.upScale,
        o.gateUpScale, o.downScale,
        ActivationAttr::get(b.getContext(), activation(w.activation)),
        GateUpLayoutAttr(), WeightLayoutAttr(), FloatAttr(), FloatAttr(),
        UnitAttr(), DenseI64ArrayAttr());
    setFFNAttributes(op, w);
    return op.getResult();
  }

  /// Top-k selection followed by the weight post-processing of `block`;
  /// returns (ids, weights).
  std::pair<Value, Value> route(Value x, const MoEBlockSpec &block) {
    int64_t E = block.numExperts, K = block.topK;
    Value wg = weight(block.routerWeight);
    Value bias = block.routerBias.empty() ? Value() : weight(block.routerBias);
    Value logits =
        RouterLinearOp::create(b, loc, scores(E), x, wg, bias).getResult();
    Value s = logits;
    if (block.scoring == RouterScoring::Softmax)
      s = SoftmaxOp::create(b, loc, logits).getResult();
    else if (block.scoring == RouterScoring::Sigmoid)
      s = SigmoidOp::create(b, loc, logits).getResult();

    // The choice score steers selection; the weights come from `s`.
    Value choice = s;
    if (!block.correctionBias.empty())
      choice = BiasAddOp::create(b, loc, s, weight(block.correctionBias))
                   .getResult();
    if (block.groupScoring != GroupScoring::None) {
      GroupScore kind = block.groupScoring == GroupScoring::Max
                            ? GroupScore::max
                            : GroupScore::top2_sum;
      choice = GroupLimitOp::create(
                   b, loc, choice, b.getI64IntegerAttr(block.numGroups),
                   b.getI64IntegerAttr(block.keepGroups),
                   GroupScoreAttr::get(b.getContext(), kind))
                   .getResult();
    }
    auto topk = TopKOp::create(b, loc, ids(K), scores(K), choice,
                               b.getI64IntegerAttr(K));
    // A group limit only masks scores, so the selected values are the
    // scores; a correction bias makes them differ.
    Value w = topk.getValues();
    if (!block.correctionBias.empty())
      w = GatherScoresOp::create(b, loc, scores(K), s, topk.getIds())
              .getResult();
    if (block.selected == SelectedTransform::Softmax)
      w = SoftmaxOp::create(b, loc, w).getResult();
    else if (block.selected == SelectedTransform::Sigmoid)
      w = SigmoidOp::create(b, loc, w).getResult();
    if (block.normalize)
      w = NormalizeOp::create(b, loc, w,
                              b.getF32FloatAttr(block.normalizeEpsilon))
              .getResult();
    if (block.scale != 1.0f)
      w = ScaleOp::create(b, loc, w, b.getF32FloatAttr(block.scale))
              .getResult();
    return {topk.getIds(), w};
  }

  Value block(Value x, const MoEBlockSpec &block) {
    int64_t E = block.numExperts;
    auto [idsV, w] = route(x, block);
    auto dispatch = DispatchOp::create(
        b, loc, tensor({E}, b.getI32Type()), tensor({E + 1}, b.getI32Type()),
        tensor({ShapedType::kDynamic}, b.getI32Type()), idsV,
        b.getI64IntegerAttr(E));
    Value xs = PermuteOp::create(b, loc, x.getType(), x, dispatch.getRows(), w,
                                 block.weightOnInput)
                   .getResult();
    Value ys = expertFFN(xs, dispatch.getOffsets(), block.experts);
    Value y = CombineOp::create(b, loc, x.getType(), ys, dispatch.getRows(), w,
                                block.weightOnInput)
                  .getResult();
    if (block.hasShared) {
      Value shared = denseFFN(x, block.shared);
      if (!block.sharedGate.empty()) {
        Value gateLogit = RouterLinearOp::create(b, loc, scores(1), x,
                                                 weight(block.sharedGate),
                                                 Value())
                              .getResult();
        Value gate = SigmoidOp::create(b, loc, gateLogit).getResult();
        shared = RowScaleOp::create(b, loc, x.getType(), shared, gate)
                     .getResult();
      }
      y = arith::AddFOp::create(b, loc, y, shared).getResult();
    }
    return y;
  }

  Value lora(Value x, const LoraMixtureSpec &m, Type actType) {
    int64_t E = static_cast<int64_t>(m.adapters.size());
    TensorRef a, bRef;
    SmallVector<Attribute> scales;
    for (const auto &ad : m.adapters) {
      a.names.push_back(ad.a.names[0]);
      a.files.push_back(ad.a.files[0]);
      a.dtype = ad.a.dtype;
      bRef.names.push_back(ad.b.names[0]);
      bRef.files.push_back(ad.b.files[0]);
      bRef.dtype = ad.b.dtype;
      scales.push_back(b.getF32FloatAttr(ad.scale));
    }
    Value aV = weight(a, {E, m.maxRank, m.in}, /*stacked=*/true);
    Value bV = weight(bRef, {E, m.out, m.maxRank}, /*stacked=*/true);
    Value base = weight(m.base);
    Value baseBias = m.baseBias.empty() ? Value() : weight(m.baseBias);
    Value idsV, w;
    if (!m.routerWeight.empty()) {
      MoEBlockSpec router;
      router.numExperts = E;
      router.topK = m.topK;
      router.routerWeight = m.routerWeight;
      router.routerBias = m.routerBias;
      router.normalize = m.normalize;
      std::tie(idsV, w) = route(x, router);
    }
    auto type = tensor({ShapedType::kDynamic, m.out}, actType);
    return LoraMixtureOp::create(b, loc, type, x, base, baseBias, aV, bV, idsV,
                                 w, b.getArrayAttr(scales))
        .getResult();
  }

private:
  OpBuilder &b;
  Location loc;
};

std::string sanitize(StringRef s) {
  std::string out;
  for (char c : s)
    out.push_back(llvm::isAlnum(c) ? c : '_');
  return out;
}

} // namespace

namespace moe {

OwningOpRef<ModuleOp> emitModel(MLIRContext &context,
                                     const ModelSpec &spec,
                                     const ImportOptions &options) {
  context.loadDialect<MoEDialect, func::FuncDialect, arith::ArithDialect>();
  OpBuilder b(&context);
  Location loc = FileLineColLoc::get(&context, spec.modelDir + "/config.json",
                                     1, 1);
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  module->getOperation()->setAttr(kWeightRootAttrName,
                                  b.getStringAttr(spec.modelDir));
  module->getOperation()->setAttr("moe.model_type",
                                  b.getStringAttr(spec.modelType));
  module->getOperation()->setAttr("moe.num_layers",
                                  b.getI64IntegerAttr(spec.numLayers));
  b.setInsertionPointToEnd(module->getBody());
  Emitter emit(b, loc);

  auto actType = [&](DType weights) -> Type {
    if (options.activationType == "model")
      return emit.elementType(weights);
    if (options.activationType == "bf16")
      return b.getBF16Type();
    if (options.activationType == "f16")
      return b.getF16Type();
    return b.getF32Type();
  };

  auto makeFunc = [&](StringRef name, int64_t layer, Type argType,
                      Type resultType) {
    auto fn = func::FuncOp::create(
        b, loc, name, b.getFunctionType({argType}, {resultType}));
    fn->setAttr(kLayerAttrName, b.getI64IntegerAttr(layer));
    Block *entry = fn.addEntryBlock();
    return std::make_pair(fn, entry);
  };

  for (const MoEBlockSpec &block : spec.blocks) {
    Type act = actType(block.routerWeight.dtype);
    auto x = emit.tensor({ShapedType::kDynamic, block.hidden}, act);
    auto [fn, entry] =
        makeFunc(("layer_" + std::to_string(block.layer)), block.layer, x, x);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(entry);
    Value y = emit.block(entry->getArgument(0), block);
    func::ReturnOp::create(b, loc, y);
  }
  for (const LoraMixtureSpec &m : spec.loras) {
    Type act = actType(m.base.dtype);
    auto x = emit.tensor({ShapedType::kDynamic, m.in}, act);
    auto y = emit.tensor({ShapedType::kDynamic, m.out}, act);
    auto [fn, entry] = makeFunc(
        "lora_" + std::to_string(m.layer) + "_" + sanitize(m.target), m.layer,
        x, y);
    fn->setAttr("moe.lora_target", b.getStringAttr(m.target));
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(entry);
    Value out = emit.lora(entry->getArgument(0), m, act);
    func::ReturnOp::create(b, loc, out);
  }
  return module;
}

llvm::Expected<OwningOpRef<ModuleOp>>
importHuggingFaceModel(MLIRContext &context,
                            const ImportOptions &options) {
  if (options.activationType != "f32" && options.activationType != "bf16" &&
      options.activationType != "f16" && options.activationType != "model")
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "--activation-type is '" + options.activationType +
            "'; expected f32, bf16, f16 or model");
  auto store = ::moe::WeightStore::open(options.modelDir);
  if (!store)
    return store.takeError();
  llvm::Expected<ModelSpec> spec = ::moe::readModelSpec(options.modelDir, **store);
  if (!spec)
    return spec.takeError();
  if (llvm::Error err = ::moe::addLoraAdapters(*spec, **store, options.adapterDirs,
                                        options.loraRouter))
    return std::move(err);
  OwningOpRef<ModuleOp> module = emitModel(context, *spec, options);
  // The importer's output must always verify; a failure here is a bug.
  std::string diagnostics;
  {
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &d) {
      llvm::raw_string_ostream os(diagnostics);
      os << d << "\n";
      return success();
    });
    if (failed(verify(*module)))
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          "internal error: the imported IR does not verify:\n" + diagnostics);
  }
  return std::move(module);
}

} // namespace moe
