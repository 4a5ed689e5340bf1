//===- KernelContract.h - What each generated kernel expects ----*- C++ -*-===//
//
// Part of moe-opt. The code generator writes, inside the text of every
// kernel it generates, one line per launch of that kernel:
//
//   // moe-contract: NAME block_threads=128 dynamic_shared_bytes=0 ...
//   //   ... slots=value:bf16:64:0,weight:bf16:0:512,null
//   //   ... maps=SLOT:TABLE:ENTRY:BOX_ROWS:BOX_COLS:SWIZZLE,...
//
// the launch geometry (the fields of moe::Launch), per argument slot the
// binding kind, the element type and the extent (per token, fixed) of the
// buffer the kernel reads or writes there, and (only on launches that read
// tensor maps, --gemm=tma) the tensor maps the kernel expects in its table,
// with the boxes its shared-memory stages are sized for; and one line per
// layer with
// the order of its launches:
//
//   // moe-layer: layer=0 function=layer_0 launches=NAME1,NAME2
//
// The line is part of the hashed text that names the kernel, so it is
// consistent with the kernel by construction; a package's plan (from its
// manifest, which nothing ties to the kernels) is checked against these
// lines when it is written and opened (checkPlanContracts). Plain C++.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_KERNELCONTRACT_H
#define MOE_RUNTIME_KERNELCONTRACT_H

#include "moe/runtime/Plan.h"
#include "moe/runtime/Status.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

constexpr const char *kKernelContractTag = "// moe-contract:";
constexpr const char *kLayerContractTag = "// moe-layer:";

/// The buffer one argument slot expects: a value of `type` with
/// perToken * T + fixed elements, a weight of `type` with `fixed` elements
/// (perToken 0), or nothing.
struct ContractSlot {
  Binding::Kind kind = Binding::Null;
  ElementType type = ElementType::F32;
  int64_t perToken = 0;
  int64_t fixed = 0;
  bool operator==(const ContractSlot &o) const {
    return kind == o.kind && type == o.type && perToken == o.perToken &&
           fixed == o.fixed;
  }
};

/// One launch of a kernel as the kernel was generated for it: a Launch's
/// geometry, and its arguments resolved to extents.
struct KernelContract {
  std::string kernel;
  /// The geometry fields of Launch, with `args` and `zeroOnce` unused.
  Launch geometry;
  std::vector<ContractSlot> slots;
  /// Launch::tensorMaps as the kernel was generated for them.
  std::vector<TensorMapRequest> maps;
  bool operator==(const KernelContract &o) const;
};

/// The launch order of one layer (LayerPlan, by position in the plan).
struct LayerContract {
  int64_t layer = 0;
  std::string function;
  std::vector<std::string> launches;
};

/// Every contract line of a kernel source.
struct SourceContracts {
  std::map<std::string, KernelContract> kernels;
  std::vector<LayerContract> layers;
};

/// The contract of `launch` of `layer` (its bindings must index existing
/// values and weights).
KernelContract contractOf(const Launch &launch, const LayerPlan &layer);

/// The line (without newline) for a contract, and for a layer.
std::string formatKernelContract(const KernelContract &contract);
std::string formatLayerContract(const LayerPlan &layer);

/// Reads the contract lines of `source`. Errors name `sourceFile`, the line
/// and what was expected.
runtime::Expected<SourceContracts>
parseContracts(const std::string &source, const std::string &sourceFile);

/// Checks a plan against the contract lines of its source: each layer's
/// launch order, each launch's geometry, arguments and the extents of what
/// they bind, and the layer's input, output and routing values. Errors are
/// "layers[L].FIELD: ..." in the manifest's terms.
runtime::Status checkPlanContracts(const ModulePlan &plan,
                                   const std::string &sourceFile);

} // namespace moe

#endif // MOE_RUNTIME_KERNELCONTRACT_H
