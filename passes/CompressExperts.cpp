//===- CompressExperts.cpp - Truncated-SVD factorisation of experts -------===//
//
// Part of moe-opt. Replaces each routed expert matrix by moe.low_rank(A, B),
// the truncated SVD of the matrix (optionally whitened by the layer input's
// Gram matrix from a calibration profile), computed with LAPACK.
//
//===----------------------------------------------------------------------===//

#include "moe/dialects/MoE/MoEOps.h"
#include "moe/lib/Analysis/Profile.h"
#include "moe/lib/Reference/Interpreter.h"
#include "moe/passes/NewWeights.h"
#include "moe/passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <lapacke.h>

#include <algorithm>
#include <cmath>

namespace mlir::moe {
#define GEN_PASS_DEF_MOECOMPRESSEXPERTS
#include "moe/passes/Passes.h.inc"

namespace {

/// Eigenvalues of the input Gram below this fraction of their mean are
/// raised to it before whitening, so that S^{-1} stays bounded on input
/// directions the calibration tokens (almost) never took.
constexpr double kGramFloor = 1e-3;

/// A row-major [rows, cols] f64 matrix.
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Mat() = default;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), v(r * c, 0.0) {}
  double &at(int64_t i, int64_t j) { return v[i * cols + j]; }
  double at(int64_t i, int64_t j) const { return v[i * cols + j]; }
};

Mat multiply(const Mat &a, const Mat &b) {
  Mat c(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i)
    for (int64_t k = 0; k < a.cols; ++k) {
      double aik = a.at(i, k);
      if (aik == 0.0)
        continue;
      for (int64_t j = 0; j < b.cols; ++j)
        c.at(i, j) += aik * b.at(k, j);
    }
  return c;
}

/// S = G^{1/2} and S^{-1} of a symmetric positive semi-definite G
/// (eigendecomposition, eigenvalues floored at kGramFloor * mean).
struct Whitening {
  Mat sqrtG, invSqrtG;
};

FailureOr<Whitening> whitening(const std::vector<double> &gram, int64_t n,
                               std::string &why) {
  std::vector<double> q(gram), w(n);
  // Symmetrise: the profile sums outer products, but rounding may differ.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j)
      q[i * n + j] = q[j * n + i] = 0.5 * (q[i * n + j] + q[j * n + i]);
  lapack_int info =
      LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', n, q.data(), n, w.data());
  if (info != 0) {
    why = "dsyevd failed (info " + std::to_string(info) + ")";
    return failure();
  }
  double mean = 0.0;
  for (double l : w)
    mean += std::max(l, 0.0);
  mean /= static_cast<double>(n);
  if (!(mean > 0.0)) {
    why = "the input Gram matrix is zero";
    return failure();
  }
  Whitening r{Mat(n, n), Mat(n, n)};
  for (int64_t k = 0; k < n; ++k) {
    double l = std::max(w[k], kGramFloor * mean);
    double s = std::sqrt(l), inv = 1.0 / s;
    for (int64_t i = 0; i < n; ++i) {
      double qik = q[i * n + k];
      for (int64_t j = 0; j < n; ++j) {
        r.sqrtG.at(i, j) += qik * s * q[j * n + k];
        r.invSqrtG.at(i, j) += qik * inv * q[j * n + k];
      }
    }
  }
  return r;
}

/// A = U_r sqrt(S_r) [out, r], B = sqrt(S_r) V_r^T [r, in] of `w`.
LogicalResult truncatedSVD(Mat w, int64_t rank, Mat &a, Mat &b,
                           std::string &why) {
  int64_t m = w.rows, n = w.cols, k = std::min(m, n);
  std::vector<double> s(k), u(m * k), vt(k * n);
  lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', m, n, w.v.data(), n,
                                   s.data(), u.data(), k, vt.data(), n);
  if (info != 0) {
    why = "dgesdd failed (info " + std::to_string(info) + ")";
    return failure();
  }
  a = Mat(m, rank);
  b = Mat(rank, n);
  for (int64_t j = 0; j < rank; ++j) {
    double root = std::sqrt(s[j]);
    for (int64_t i = 0; i < m; ++i)
      a.at(i, j) = u[i * k + j] * root;
    for (int64_t i = 0; i < n; ++i)
      b.at(j, i) = vt[j * n + i] * root;
  }
  return success();
}

/// One projection of a moe.expert_ffn.
struct Projection {
  StringRef name;
  OpOperand *operand;
  WeightOp weight;
  /// Matrix sizes (W is [out, in] per expert) and whether the input is the
  /// layer's input (gate, up, gate_up: these can be whitened).
  int64_t out = 0, in = 0, rank = 0;
  bool readsLayerInput = false;
  std::vector<float> a, b; // [E, out, r], [E, r, in]
};

int64_t elementBytes(Type t) { return t.isF32() ? 4 : 2; }

/// Whether the layer has shared experts (moe.ffn: not compressed).
bool hasShared(func::FuncOp fn) {
  bool found = false;
  fn.walk([&](FFNOp) { found = true; });
  return found;
}

struct MoECompressExpertsPass
    : impl::MoECompressExpertsBase<MoECompressExpertsPass> {
  using MoECompressExpertsBase::MoECompressExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if ((rank > 0) == (paramRatio > 0.0) || rank < 0 || paramRatio < 0.0 ||
        paramRatio >= 1.0) {
      module.emitError() << "moe-compress-experts: give exactly one of "
                            "rank=R (R >= 1) and param-ratio=F (0 < F < 1)";
      return signalPassFailure();
    }
    if (whiten != "none" && whiten != "gram") {
      module.emitError() << "moe-compress-experts: whiten must be none or "
                            "gram, got '"
                         << whiten << "'";
      return signalPassFailure();
    }
    if (whiten == "gram") {
      if (profile.empty()) {
        module.emitError() << "moe-compress-experts: whiten=gram needs "
                              "profile=P (a calibration profile with "
                              "layer.L.input_gram)";
        return signalPassFailure();
      }
      llvm::Expected<::moe::Profile> p = ::moe::readProfile(profile);
      if (!p) {
        module.emitError() << "moe-compress-experts: "
                           << llvm::toString(p.takeError());
        return signalPassFailure();
      }
      calibration = std::move(*p);
    }

    // Existing weights resolve against the input IR's folder (the
    // module's location) and its moe.weight_root.
    ::moe::WeightLoader weights(
        ::moe::weightRoot(module, getInputIRPath(module)));
    loader = &weights;
    NewWeights factors(module, "compress", weightsOut);

    for (auto fn : module.getOps<func::FuncOp>()) {
      auto layer = fn->getAttrOfType<IntegerAttr>(kLayerAttrName);
      if (!layer)
        continue;
      if (failed(compressLayer(fn, layer.getInt(), factors)))
        return signalPassFailure();
    }
    loader = nullptr;
    if (failed(factors.commit()))
      return signalPassFailure();
  }

  /// Compresses the routed experts of one layer; a refusal is a remark (the
  /// layer is unchanged), a broken input an error.
  LogicalResult compressLayer(func::FuncOp fn, int64_t layer,
                              NewWeights &factors) {
    auto remark = [&](Operation *op) {
      return op->emitRemark()
             << "moe-compress-experts: layer " << layer << " not compressed: ";
    };
    bool fused = false;
    fn.walk([&](Operation *op) {
      if (isa<FusedExpertsOp, FusedRouteOp>(op))
        fused = true;
    });
    if (fused) {
      remark(fn) << "it holds fused ops (moe.fused_experts / "
                    "moe.fused_route); run --moe-compress-experts before "
                    "--moe-optimize";
      return success();
    }
    fn.walk([&](LoraMixtureOp op) {
      remark(op) << "moe.lora_mixture is left as it is: its adapters are "
                    "already low rank";
    });
    SmallVector<ExpertFFNOp> routed;
    fn.walk([&](ExpertFFNOp op) { routed.push_back(op); });
    for (auto [index, op] : llvm::enumerate(routed))
      if (failed(compressExperts(fn, layer, index, op, factors)))
        return failure();
    return success();
  }

  LogicalResult compressExperts(func::FuncOp fn, int64_t layer, size_t index,
                                ExpertFFNOp op, NewWeights &factors) {
    auto remark = [&]() {
      return op->emitRemark()
             << "moe-compress-experts: layer " << layer << " not compressed: ";
    };
    // The factored expert kernels compute a gate: refused, not rewritten
    // into IR that could not be generated.
    if (op.getWidths()) {
      remark() << "'moe.expert_ffn' has experts of unequal width ('widths'); "
                  "factored (moe.low_rank) experts have one width";
      return success();
    }
    if (op.getNonGated()) {
      remark() << "'moe.expert_ffn' is non_gated (down(act(up x))); factored "
                  "(moe.low_rank) experts must be gated";
      return success();
    }
    auto type = cast<RankedTensorType>(op.getInput().getType());
    int64_t H = type.getDimSize(1);
    bool inOut = op.getWeightLayout() == WeightLayout::in_out;
    SmallVector<Projection> projections;
    auto addProjection = [&](StringRef name, OpOperand *operand, bool first) {
      Projection p;
      p.name = name;
      p.operand = operand;
      p.readsLayerInput = first;
      projections.push_back(p);
    };
    if (op.getGate())
      addProjection("gate", &op.getGateMutable()[0], true);
    if (op.getUp())
      addProjection("up", &op.getUpMutable()[0], true);
    if (op.getGateUp())
      addProjection("gate_up", &op.getGateUpMutable()[0], true);
    addProjection("down", &op.getDownMutable(), false);

    int64_t E = 0;
    Type element;
    for (Projection &p : projections) {
      Value v = p.operand->get();
      if (v.getDefiningOp<LowRankOp>()) {
        remark() << "'" << p.name << "' is already factored (moe.low_rank)";
        return success();
      }
      p.weight = v.getDefiningOp<WeightOp>();
      if (!p.weight) {
        remark() << "'" << p.name << "' is not a moe.weight (the pass reads "
                 << "the values it factors from the weight files)";
        return success();
      }
      auto wt = cast<RankedTensorType>(v.getType());
      if (!wt.hasStaticShape() || wt.getRank() != 3) {
        remark() << "'" << p.name << "' must be a static [E, out, in] tensor";
        return success();
      }
      E = wt.getDimSize(0);
      element = wt.getElementType();
      p.out = inOut ? wt.getDimSize(2) : wt.getDimSize(1);
      p.in = inOut ? wt.getDimSize(1) : wt.getDimSize(2);
      int64_t small = std::min(p.out, p.in);
      if (rank > 0) {
        p.rank = std::min<int64_t>(rank, small);
      } else {
        p.rank = static_cast<int64_t>(
            std::floor(paramRatio * static_cast<double>(p.out * p.in) /
                       static_cast<double>(p.out + p.in)));
        p.rank = std::min(p.rank, small);
        if (p.rank < 1) {
          remark() << "param-ratio " << paramRatio << " leaves no rank for '"
                   << p.name << "' [" << p.out << " x " << p.in << "]";
          return success();
        }
      }
      if (p.rank * (p.out + p.in) >= p.out * p.in) {
        remark() << "rank " << p.rank << " of '" << p.name << "' [" << p.out
                 << " x " << p.in << "] keeps " << p.rank * (p.out + p.in)
                 << " parameters of " << p.out * p.in << ": nothing to save";
        return success();
      }
    }

    // The whitening of the projections that read the layer input.
    std::optional<Whitening> white;
    if (whiten == "gram") {
      llvm::Expected<const ::moe::LayerProfile *> lp =
          calibration.layer(layer, profile);
      if (!lp)
        return op.emitError()
               << "moe-compress-experts: " << llvm::toString(lp.takeError());
      const ::moe::LayerProfile &l = **lp;
      if (l.inputGram.empty())
        return op.emitError()
               << "moe-compress-experts: profile '" << profile
               << "' has no 'layer." << layer
               << ".input_gram' (record it with the profile's input-Gram "
                  "option)";
      if (l.hidden != H)
        return op.emitError()
               << "moe-compress-experts: 'layer." << layer
               << ".input_gram' of profile '" << profile << "' is [" << l.hidden
               << ", " << l.hidden << "] but the layer's hidden size is " << H;
      std::string why;
      FailureOr<Whitening> w = whitening(l.inputGram, H, why);
      if (failed(w))
        return op.emitError()
               << "moe-compress-experts: 'layer." << layer
               << ".input_gram' of profile '" << profile << "': " << why;
      white = std::move(*w);
    }

    for (Projection &p : projections) {
      llvm::Expected<::moe::HostTensor> t = loader->load(p.weight);
      if (!t)
        return p.weight.emitError()
               << "moe-compress-experts: " << llvm::toString(t.takeError());
      p.a.resize(E * p.out * p.rank);
      p.b.resize(E * p.rank * p.in);
      bool whitened = white && p.readsLayerInput;
      for (int64_t e = 0; e < E; ++e) {
        Mat w(p.out, p.in);
        const float *src = &t->f[e * p.out * p.in];
        for (int64_t o = 0; o < p.out; ++o)
          for (int64_t i = 0; i < p.in; ++i)
            w.at(o, i) = inOut ? src[i * p.out + o] : src[o * p.in + i];
        if (whitened)
          w = multiply(w, white->sqrtG);
        Mat a, b;
        std::string why;
        if (failed(truncatedSVD(std::move(w), p.rank, a, b, why)))
          return op.emitError() << "moe-compress-experts: '" << p.name
                                << "' of expert " << e << ": " << why;
        if (whitened)
          b = multiply(b, white->invSqrtG);
        std::copy(a.v.begin(), a.v.end(), &p.a[e * p.out * p.rank]);
        std::copy(b.v.begin(), b.v.end(), &p.b[e * p.rank * p.in]);
      }
    }

    // Every factor is computed: rewrite.
    OpBuilder builder(op);
    std::string prefix = (fn.getSymName() + ".experts").str();
    if (index > 0)
      prefix += std::to_string(index);
    int64_t before = 0, after = 0;
    std::string ranks;
    for (Projection &p : projections) {
      Location loc = p.weight.getLoc();
      auto aType = RankedTensorType::get({E, p.out, p.rank}, element);
      auto bType = RankedTensorType::get({E, p.rank, p.in}, element);
      FailureOr<WeightOp> a = factors.add(
          builder, loc, prefix + "." + p.name.str() + ".a", aType, p.a);
      if (failed(a))
        return failure();
      FailureOr<WeightOp> b = factors.add(
          builder, loc, prefix + "." + p.name.str() + ".b", bType, p.b);
      if (failed(b))
        return failure();
      auto product = LowRankOp::create(
          builder, loc, RankedTensorType::get({E, p.out, p.in}, element),
          a->getResult(), b->getResult());
      p.operand->set(product.getResult());
      if (p.weight->use_empty())
        p.weight->erase();
      before += E * p.out * p.in;
      after += E * p.rank * (p.out + p.in);
      if (!ranks.empty())
        ranks += ", ";
      ranks += (p.name + " " + llvm::Twine(p.rank)).str();
    }
    // The products are [out, in] whatever the original layout.
    if (inOut)
      op.setWeightLayout(WeightLayout::out_in);

    int64_t bytes = elementBytes(element);
    llvm::errs() << "moe-compress-experts: @" << fn.getSymName() << " (layer "
                 << layer << "): " << E << " routed experts, parameters "
                 << before << " -> " << after << " ("
                 << llvm::format("%.1f", 100.0 * static_cast<double>(after) /
                                             static_cast<double>(before))
                 << "%), bytes " << before * bytes << " -> " << after * bytes
                 << "; rank " << ranks
                 << (white ? "; whitened by input_gram: gate/up (down plain)"
                           : "")
                 << (hasShared(fn) ? "; shared experts (moe.ffn) kept dense"
                                   : "")
                 << "\n";
    return success();
  }

  ::moe::Profile calibration;
  /// The weights of the module being compressed (one run).
  ::moe::WeightLoader *loader = nullptr;
};

} // namespace
} // namespace mlir::moe
