//===- CudaEmitter.h - CUDA C++ from fused moe IR ---------------*- C++ -*-===//
//
// Part of moe-opt. Maps each fused op one-to-one onto a kernel: the
// templates of runtime/kernels/*.cuh, instantiated with the op's sizes,
// dtypes, layouts and router composition as compile-time constants.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CODEGEN_CUDAEMITTER_H
#define MOE_CODEGEN_CUDAEMITTER_H

#include "moe/runtime/Plan.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/Support/Error.h"

#include <optional>

namespace moe {

/// How the grouped (prefill) expert GEMMs load their tiles
/// (runtime/kernels/moe_grouped.cuh, docs/codegen.md).
enum class GroupedGemm {
  /// A multi-stage k loop: cp.async copies of the next steps' tiles in
  /// flight while mma.sync multiplies the current one.
  Pipelined,
  /// One stage: synchronous loads, a barrier, mma.sync (the fallback).
  Mma,
  /// The pipelined loads into wgmma's core-matrix tiles, multiplied by a
  /// warpgroup with wgmma.mma_async (sm_90a only; FFNs with [in, out],
  /// quantized, factored or f32 weights take the pipelined path).
  Wgmma,
  /// sm_90: 16-bit [out, in] weight tiles by TMA tensor copies into an
  /// mbarrier pipeline, mma.sync on them; other weights as Pipelined.
  Tma,
};

/// "pipelined", "mma", "wgmma" or "tma".
std::optional<GroupedGemm> parseGroupedGemm(llvm::StringRef name);

/// The names parseGroupedGemm takes, for error messages.
inline constexpr const char *kGroupedGemmNames = "pipelined, mma, wgmma or tma";

/// The help text of the tools' --gemm option.
inline constexpr const char *kGroupedGemmHelp =
    "The grouped (prefill) expert GEMMs: pipelined (cp.async stages in "
    "flight while mma.sync multiplies, the default), mma "
    "(single-buffered loads, the fallback), wgmma (pipelined loads, "
    "warpgroup wgmma.mma_async; sm_90a only) or tma (sm_90: weight tiles by "
    "TMA tensor copies into an mbarrier pipeline)";

/// The architecture the kernels of `gemm` need ("sm_90a" for wgmma), or
/// null when any architecture the tools take will do.
const char *groupedGemmArch(GroupedGemm gemm);

/// Choices of the emitter that the IR does not fix.
struct CudaEmitOptions {
  GroupedGemm gemm = GroupedGemm::Pipelined;
};

/// Emits the kernels and launch plans of every layer function (functions
/// with `moe.layer`) of `module`, which must be fused (`--moe-optimize`).
llvm::Expected<ModulePlan> emitCudaModule(mlir::ModuleOp module,
                                          const CudaEmitOptions &options = {});

/// The launch plan of one layer function (a function with `moe.layer`),
/// without the kernels' text: what reports such as moe-stats count.
llvm::Expected<LayerPlan> planCudaLayer(mlir::func::FuncOp fn);

/// Registers `--moe-to-cuda` with mlir-translate style tools.
void registerMoEToCudaTranslation();

} // namespace moe

#endif // MOE_CODEGEN_CUDAEMITTER_H
