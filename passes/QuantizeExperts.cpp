//===- QuantizeExperts.cpp - Block-scaled FP8 / MXFP4 expert weights ------===//
//
// Part of moe-opt. Quantizes the f32/bf16/f16 weights of moe.expert_ffn and
// moe.ffn into the formats of the released checkpoints (DeepSeek-V3 FP8
// E4M3 with f32 block scales, gpt-oss MXFP4 with E8M0 scales), writes codes
// and scales beside the output IR in their on-disk layouts, and reports the
// quantization error of each projection.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Reference/QuantDecode.h"
#include "moe/lib/Weights/Safetensors.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace mlir::moe {
#define GEN_PASS_DEF_MOEQUANTIZEEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

constexpr float kE4M3Max = 448.0f;

/// The E4M3FN code nearest to finite `x`, ties to even, saturating at 448
/// (the format has no infinity; S.1111.111 is NaN and never produced).
uint8_t encodeE4M3FN(float x) {
  int sign = std::signbit(x) ? 0x80 : 0;
  double m = std::fabs(static_cast<double>(x));
  int magnitude;
  if (m >= 464.0) {
    // 464 is halfway between 448 and 480 (which would be the NaN code).
    magnitude = 0x7E;
  } else if (m < 0x1p-6) {
    // Subnormals step by 2^-9; 8 is the smallest normal, code 8.
    magnitude = static_cast<int>(std::nearbyint(m * 0x1p9));
  } else {
    int e = std::ilogb(m); // m in [2^e, 2^(e+1))
    // q in [8, 16]: 16 carries into the exponent field, which is exact.
    auto q = static_cast<int>(std::nearbyint(std::ldexp(m, 3 - e)));
    magnitude = (e + 7) * 8 + (q - 8);
  }
  return static_cast<uint8_t>(sign | magnitude);
}

/// The E2M1 nibble nearest to `x`, ties to even, saturating at 6.
uint8_t encodeE2M1(double x) {
  int sign = std::signbit(x) ? 8 : 0;
  double m = std::fabs(x);
  int magnitude;
  if (m >= 6.0) {
    magnitude = 7;
  } else if (m < 1.0) {
    // 0, 0.5, and 2 (1.0, the smallest normal).
    magnitude = static_cast<int>(std::nearbyint(m * 2.0));
  } else {
    int e = std::ilogb(m); // 0, 1 or 2
    // q in [2, 4]: 4 carries into the exponent (never past 6: m < 6).
    auto q = static_cast<int>(std::nearbyint(std::ldexp(m, 1 - e)));
    magnitude = 2 * e + q;
  }
  return static_cast<uint8_t>(sign | magnitude);
}

/// A projection's weights quantized: codes and scales as stored, and the
/// error of the dequantized values.
struct Quantized {
  std::vector<uint8_t> codes, scaleBytes;
  std::vector<float> scales; // fp8: f32 scales
  double errorSq = 0.0, normSq = 0.0;
};

/// One projection of an FFN op.
struct Projection {
  StringRef name;
  OpOperand *operand;
  WeightOp weight;
  int64_t lead = 1, out = 0, in = 0;
  Quantized q;
};

struct MoEQuantizeExpertsPass
    : impl::MoEQuantizeExpertsBase<MoEQuantizeExpertsPass> {
  using MoEQuantizeExpertsBase::MoEQuantizeExpertsBase;

  bool fp8 = true;
  int64_t block0 = 128, block1 = 128;
  ::moe::WeightLoader *loader = nullptr;

  LogicalResult parseOptions(ModuleOp module) {
    auto fail = [&]() {
      return module.emitError() << "moe-quantize-experts: ";
    };
    if (dtype == "fp8_e4m3") {
      fp8 = true;
      if (block.empty())
        return success();
      auto [r, c] = StringRef(block).split('x');
      if (r.getAsInteger(10, block0) || c.getAsInteger(10, block1) ||
          block0 < 1 || block1 < 1)
        return fail() << "block must be RxC with R, C >= 1 (e.g. 128x128), "
                         "got '"
                      << block << "'";
      return success();
    }
    if (dtype == "mxfp4") {
      fp8 = false;
      block0 = 1;
      block1 = 32;
      if (!block.empty() && block != "32" && block != "1x32")
        return fail() << "mxfp4 scales 32 values along the input (OCP MX); "
                         "block must be 32, got '"
                      << block << "'";
      return success();
    }
    return fail() << "dtype must be fp8_e4m3 or mxfp4, got '" << dtype << "'";
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (failed(parseOptions(module)))
      return signalPassFailure();
    ::moe::WeightLoader weights(
        ::moe::weightRoot(module, getInputIRPath(module)));
    loader = &weights;
    NewWeights out(module, "quant", weightsOut);
    for (auto fn : module.getOps<func::FuncOp>()) {
      auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
      if (!layer)
        continue;
      if (failed(quantizeLayer(fn, layer.getInt(), out)))
        return signalPassFailure();
    }
    loader = nullptr;
    if (failed(out.commit()))
      return signalPassFailure();
  }

  LogicalResult quantizeLayer(func::FuncOp fn, int64_t layer, NewWeights &out) {
    bool fused = false;
    fn.walk([&](Operation *op) {
      if (isa<FusedExpertsOp, FusedRouteOp>(op))
        fused = true;
    });
    if (fused) {
      fn.emitRemark() << "moe-quantize-experts: layer " << layer
                      << " not quantized: it holds fused ops "
                         "(moe.fused_experts / moe.fused_route); run "
                         "--moe-quantize-experts before --moe-optimize";
      return success();
    }
    fn.walk([&](LoraMixtureOp op) {
      op.emitRemark() << "moe-quantize-experts: layer " << layer
                      << ": 'moe.lora_mixture' is not quantized (its "
                         "adapters have no block-scaled form)";
    });
    SmallVector<Operation *> ops;
    fn.walk([&](Operation *op) {
      if (isa<ExpertFFNOp, FFNOp>(op))
        ops.push_back(op);
    });
    int64_t routed = 0, shared = 0;
    for (Operation *op : ops) {
      LogicalResult r = success();
      if (auto e = dyn_cast<ExpertFFNOp>(op))
        r = quantizeOp(fn, layer, e, "experts" + indexSuffix(routed++), out);
      else
        r = quantizeOp(fn, layer, cast<FFNOp>(op),
                       "shared" + indexSuffix(shared++), out);
      if (failed(r))
        return failure();
    }
    return success();
  }

  static std::string indexSuffix(int64_t i) {
    return i == 0 ? std::string() : std::to_string(i);
  }

  template <typename OpT>
  LogicalResult quantizeOp(func::FuncOp fn, int64_t layer, OpT op,
                           const std::string &tag, NewWeights &out) {
    StringRef opName = op->getName().getStringRef();
    auto remark = [&]() {
      return op->emitRemark() << "moe-quantize-experts: layer " << layer
                              << " not quantized: '" << opName << "' ";
    };
    if (op.getQuantBlock()) {
      remark() << "is already quantized (quant_block)";
      return success();
    }
    if constexpr (std::is_same_v<OpT, ExpertFFNOp>) {
      if (op.getWidths()) {
        remark() << "has experts of unequal width ('widths'); quantized "
                    "experts are one stacked tensor per projection";
        return success();
      }
    }
    bool inOut = op.getWeightLayout() == WeightLayout::in_out;
    int64_t rank = std::is_same_v<OpT, ExpertFFNOp> ? 3 : 2;
    SmallVector<Projection> projections;
    auto add = [&](StringRef name, OpOperand *operand) {
      Projection p;
      p.name = name;
      p.operand = operand;
      projections.push_back(p);
    };
    if (op.getGate())
      add("gate", &op.getGateMutable()[0]);
    if (op.getUp())
      add("up", &op.getUpMutable()[0]);
    if (op.getGateUp())
      add("gate_up", &op.getGateUpMutable()[0]);
    add("down", &op.getDownMutable());

    Type element;
    for (Projection &p : projections) {
      Value v = p.operand->get();
      auto wt = cast<RankedTensorType>(v.getType());
      element = wt.getElementType();
      if (!(element.isF32() || element.isBF16() || element.isF16())) {
        remark() << "operand '" << p.name << "' is " << element
                 << "; only f32, bf16 and f16 weights are quantized";
        return success();
      }
      p.weight = v.getDefiningOp<WeightOp>();
      if (!p.weight) {
        remark() << "operand '" << p.name << "' is not a moe.weight (the "
                 << "pass reads the values it quantizes from the weight "
                    "files)";
        return success();
      }
      if (!wt.hasStaticShape() || wt.getRank() != rank) {
        remark() << "operand '" << p.name << "' must be a static tensor of "
                 << "rank " << rank;
        return success();
      }
      if (rank == 3)
        p.lead = wt.getDimSize(0);
      p.out = inOut ? wt.getDimSize(rank - 1) : wt.getDimSize(rank - 2);
      p.in = inOut ? wt.getDimSize(rank - 2) : wt.getDimSize(rank - 1);
      if (!fp8 && p.in % 32 != 0) {
        remark() << "operand '" << p.name << "' has input size " << p.in
                 << ", not a multiple of 32 (mxfp4 scales 32 input values)";
        return success();
      }
    }

    for (Projection &p : projections) {
      llvm::Expected<::moe::HostTensor> t = loader->load(p.weight);
      if (!t)
        return p.weight.emitError()
               << "moe-quantize-experts: " << llvm::toString(t.takeError());
      // [lead, out, in] whatever the layout.
      std::vector<float> w(p.lead * p.out * p.in);
      for (int64_t l = 0; l < p.lead; ++l)
        for (int64_t o = 0; o < p.out; ++o)
          for (int64_t i = 0; i < p.in; ++i) {
            int64_t base = l * p.out * p.in;
            float v = t->f[base + (inOut ? i * p.out + o : o * p.in + i)];
            if (!std::isfinite(v))
              return p.weight.emitError()
                     << "moe-quantize-experts: operand '" << p.name << "' of '"
                     << opName << "' has a non-finite value at [" << l << ", "
                     << o << ", " << i << "] ([E, out, in]); cannot quantize";
            w[base + o * p.in + i] = v;
          }
      if (fp8)
        quantizeFP8(p, w);
      else
        quantizeMXFP4(p, w);
    }

    // Every projection is quantized: rewrite.
    OpBuilder builder(op);
    std::string prefix = (fn.getSymName() + "." + tag).str();
    int64_t before = 0, after = 0;
    std::string errors;
    int64_t bytes = element.isF32() ? 4 : 2;
    MLIRContext *ctx = op.getContext();
    SmallVector<Value> scaleValues;
    for (Projection &p : projections) {
      Location loc = p.weight.getLoc();
      std::string base = prefix + "." + p.name.str();
      auto shape = [&](std::initializer_list<int64_t> dims) {
        SmallVector<int64_t> s;
        if (rank == 3)
          s.push_back(p.lead);
        s.append(dims.begin(), dims.end());
        return s;
      };
      FailureOr<WeightOp> codes, scales;
      if (fp8) {
        int64_t r = llvm::divideCeil(p.out, block0),
                c = llvm::divideCeil(p.in, block1);
        codes =
            out.addRaw(builder, loc, base + ".weight",
                       RankedTensorType::get(shape({p.out, p.in}),
                                             Float8E4M3FNType::get(ctx)),
                       ::moe::DType::F8E4M3, shape({p.out, p.in}), p.q.codes);
        if (failed(codes))
          return failure();
        scales =
            out.add(builder, loc, base + ".weight_scale_inv",
                    RankedTensorType::get(shape({r, c}), Float32Type::get(ctx)),
                    p.q.scales);
      } else {
        int64_t g = p.in / 32;
        codes = out.addRaw(builder, loc, base + "_blocks",
                           RankedTensorType::get(shape({p.out, p.in}),
                                                 Float4E2M1FNType::get(ctx)),
                           ::moe::DType::U8, shape({p.out, g, 16}), p.q.codes);
        if (failed(codes))
          return failure();
        scales =
            out.addRaw(builder, loc, base + "_scales",
                       RankedTensorType::get(shape({p.out, g}),
                                             Float8E8M0FNUType::get(ctx)),
                       ::moe::DType::U8, shape({p.out, g}), p.q.scaleBytes);
      }
      if (failed(scales))
        return failure();
      p.operand->set(codes->getResult());
      scaleValues.push_back(scales->getResult());
      if (p.weight->use_empty())
        p.weight->erase();
      before += p.lead * p.out * p.in * bytes;
      after += static_cast<int64_t>(p.q.codes.size() + p.q.scaleBytes.size() +
                                    4 * p.q.scales.size());
      double rel = p.q.normSq > 0.0 ? std::sqrt(p.q.errorSq / p.q.normSq)
                                    : std::sqrt(p.q.errorSq);
      if (!errors.empty())
        errors += ", ";
      errors += (p.name + " " + llvm::formatv("{0:e3}", rel).str()).str();
    }
    // Last: adding operands moves the operand storage (p.operand).
    for (auto [p, s] : llvm::zip_equal(projections, scaleValues)) {
      if (p.name == "gate")
        op.getGateScaleMutable().assign(s);
      else if (p.name == "up")
        op.getUpScaleMutable().assign(s);
      else if (p.name == "gate_up")
        op.getGateUpScaleMutable().assign(s);
      else
        op.getDownScaleMutable().assign(s);
    }
    if (inOut)
      op.setWeightLayout(WeightLayout::out_in);
    op.setQuantBlockAttr(DenseI64ArrayAttr::get(ctx, {block0, block1}));

    llvm::errs() << "moe-quantize-experts: @" << fn.getSymName() << " (layer "
                 << layer << ") " << opName;
    if (rank == 3)
      llvm::errs() << " (" << projections.front().lead << " experts)";
    llvm::errs() << ": " << (fp8 ? "fp8_e4m3" : "mxfp4") << " blocks " << block0
                 << "x" << block1 << ", bytes " << before << " -> " << after
                 << " ("
                 << llvm::format("%.1f", 100.0 * static_cast<double>(after) /
                                             static_cast<double>(before))
                 << "%); relative error " << errors << "\n";
    return success();
  }

  /// DeepSeek-V3: scale = amax / 448 per block (f32), code = RNE(w / scale).
  void quantizeFP8(Projection &p, const std::vector<float> &w) {
    int64_t r = llvm::divideCeil(p.out, block0),
            c = llvm::divideCeil(p.in, block1);
    p.q.codes.resize(w.size());
    p.q.scales.resize(p.lead * r * c);
    for (int64_t l = 0; l < p.lead; ++l)
      for (int64_t br = 0; br < r; ++br)
        for (int64_t bc = 0; bc < c; ++bc) {
          int64_t o0 = br * block0, o1 = std::min(p.out, o0 + block0);
          int64_t i0 = bc * block1, i1 = std::min(p.in, i0 + block1);
          float amax = 0.0f;
          for (int64_t o = o0; o < o1; ++o)
            for (int64_t i = i0; i < i1; ++i)
              amax = std::max(amax, std::fabs(w[(l * p.out + o) * p.in + i]));
          // An all-zero block: any scale gives zero codes; 1 keeps it exact.
          float scale = amax > 0.0f ? amax / kE4M3Max : 1.0f;
          p.q.scales[(l * r + br) * c + bc] = scale;
          for (int64_t o = o0; o < o1; ++o)
            for (int64_t i = i0; i < i1; ++i) {
              int64_t k = (l * p.out + o) * p.in + i;
              uint8_t code = encodeE4M3FN(w[k] / scale);
              p.q.codes[k] = code;
              account(p.q, w[k], ::moe::quant::decodeE4M3FN(code) * scale);
            }
        }
  }

  /// OCP MX: per 32 input values, X = floor(log2(amax)) - 2 (E2M1's emax),
  /// scale 2^X as E8M0, nibble = RNE(w / 2^X) saturating at 6.
  void quantizeMXFP4(Projection &p, const std::vector<float> &w) {
    int64_t g = p.in / 32;
    p.q.codes.assign(w.size() / 2, 0);
    p.q.scaleBytes.resize(p.lead * p.out * g);
    for (int64_t row = 0; row < p.lead * p.out; ++row)
      for (int64_t b = 0; b < g; ++b) {
        const float *v = &w[row * p.in + b * 32];
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j)
          amax = std::max(amax, std::fabs(v[j]));
        int x = amax > 0.0f ? std::ilogb(amax) - 2 : -127;
        x = std::clamp(x, -127, 127);
        auto scaleCode = static_cast<uint8_t>(x + 127);
        p.q.scaleBytes[row * g + b] = scaleCode;
        float scale = ::moe::quant::decodeE8M0(scaleCode);
        for (int j = 0; j < 32; ++j) {
          uint8_t nibble =
              encodeE2M1(std::ldexp(static_cast<double>(v[j]), -x));
          int64_t k = row * p.in + b * 32 + j;
          p.q.codes[k / 2] |=
              static_cast<uint8_t>(k % 2 == 0 ? nibble : nibble << 4);
          account(p.q, v[j], ::moe::quant::decodeE2M1(nibble) * scale);
        }
      }
  }

  static void account(Quantized &q, float w, float deq) {
    double d = static_cast<double>(w) - static_cast<double>(deq);
    q.errorSq += d * d;
    q.normSq += static_cast<double>(w) * static_cast<double>(w);
  }
};

} // namespace
} // namespace mlir::moe
