//===- NewWeights.h - Weights that passes create ----------------*- C++ -*-===//
//
// Part of moe-opt. Passes that rewrite expert weights (prune, merge,
// compress) write the new tensors to one safetensors file beside the output
// IR and reference it with `moe.weight`, so that moe-run, moe-compile and
// packages read the result like any imported model.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PASSES_NEWWEIGHTS_H
#define MOE_PASSES_NEWWEIGHTS_H

#include "moe/dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <string>

namespace moe {
class SafetensorsWriter;
enum class DType;
} // namespace moe

namespace mlir::moe {

/// The file moe-opt writes the IR to ("-": standard output). moe-opt sets
/// it before running passes; passes that create weights put them beside it.
void setOutputIRPath(llvm::StringRef path);
llvm::StringRef getOutputIRPath();

/// The IR file `module` was parsed from (its location), or "-" when that is
/// unknown (standard input, a module built in memory). Passes that read the
/// existing weights resolve them against its weight root; the layout passes
/// hash it to check a profile's model identity.
std::string getInputIRPath(ModuleOp module);

/// The weights one run of a pass creates: one safetensors file, by default
/// `<output IR without .mlir>.<tag>.safetensors`, or `explicitPath` (the
/// pass's `weights-out` option) when given.
class NewWeights {
public:
  NewWeights(ModuleOp module, llvm::StringRef tag,
             llvm::StringRef explicitPath);
  ~NewWeights();

  /// Adds tensor `name` holding `values` (row-major, rounded to the element
  /// type of `type`: f32, bf16 or f16) and builds a `moe.weight` reading it
  /// at `b`. Fails (with an error on `loc`) on a duplicate name, a size
  /// mismatch, another element type or when there is no place to write.
  FailureOr<WeightOp> add(OpBuilder &b, Location loc, llvm::StringRef name,
                          RankedTensorType type, llvm::ArrayRef<float> values);

  /// Adds tensor `name` stored as `dtype` (quantized codes or scales:
  /// F8_E4M3, U8) with `storedShape` and its raw `bytes`, and builds a
  /// `moe.weight` of the logical `type` reading it (the loader checks how
  /// the two shapes relate).
  FailureOr<WeightOp> addRaw(OpBuilder &b, Location loc, llvm::StringRef name,
                             RankedTensorType type, ::moe::DType dtype,
                             llvm::ArrayRef<int64_t> storedShape,
                             llvm::ArrayRef<uint8_t> bytes);

  /// Produces a streamed weight's bytes at commit(): calls the sink with
  /// consecutive pieces that together hold the whole tensor.
  using Producer = std::function<llvm::Error(
      llvm::function_ref<llvm::Error(llvm::ArrayRef<uint8_t>)>)>;

  /// Adds tensor `name` of `type` (f32, bf16 or f16 stored as it is;
  /// f8E4M3FN codes as F8_E4M3, f8E8M0FNU scales as U8, f4E2M1FN codes as U8
  /// two per byte with the last dimension halved) whose
  /// bytes `produce` hands over only while commit() writes the file, and
  /// builds a `moe.weight` reading it at `b`: the pass never holds the
  /// tensor, so a rewrite of a model of any size needs the memory of one
  /// piece. `produce` must stay valid until commit().
  FailureOr<WeightOp> addStreamed(OpBuilder &b, Location loc,
                                  llvm::StringRef name, RankedTensorType type,
                                  Producer produce);

  /// Writes the file atomically (nothing when no tensor was added); errors
  /// are emitted on the module.
  LogicalResult commit();

  /// Where the file goes, and how the IR names it (relative to the
  /// module's weight root when it lies there, else absolute).
  llvm::StringRef path() const { return filePath; }
  llvm::StringRef reference() const { return fileReference; }
  /// Bytes of the tensors added so far.
  uint64_t bytes() const;

private:
  ModuleOp module;
  std::string filePath, fileReference, problem;
  std::unique_ptr<::moe::SafetensorsWriter> writer;
};

} // namespace mlir::moe

#endif // MOE_PASSES_NEWWEIGHTS_H
