//===- NewWeights.cpp - Weights that passes create ------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/passes/NewWeights.h"

#include "moe/lib/Reference/Interpreter.h"
#include "moe/lib/Weights/Safetensors.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

using namespace mlir;
using namespace mlir::moe;

static std::string &outputIRPath() {
  static std::string path = "-";
  return path;
}

void mlir::moe::setOutputIRPath(llvm::StringRef path) {
  outputIRPath() = path.str();
}

llvm::StringRef mlir::moe::getOutputIRPath() { return outputIRPath(); }

std::string mlir::moe::getInputIRPath(ModuleOp module) {
  auto loc = dyn_cast<FileLineColLoc>(module.getLoc());
  if (!loc)
    return "-";
  llvm::StringRef name = loc.getFilename().getValue();
  if (name.empty() || name == "-" || name == "<stdin>")
    return "-";
  return name.str();
}

/// The dtype a tensor element type is stored as.
static std::optional<::moe::DType> storedDType(Type t) {
  if (t.isF32())
    return ::moe::DType::F32;
  if (t.isBF16())
    return ::moe::DType::BF16;
  if (t.isF16())
    return ::moe::DType::F16;
  return std::nullopt;
}

NewWeights::NewWeights(ModuleOp module, llvm::StringRef tag,
                       llvm::StringRef explicitPath)
    : module(module), writer(std::make_unique<::moe::SafetensorsWriter>()) {
  llvm::StringRef ir = getOutputIRPath();
  llvm::SmallString<256> path;
  if (!explicitPath.empty()) {
    path = explicitPath;
  } else if (ir.empty() || ir == "-") {
    problem = "the new weights need a file: give moe-opt -o FILE.mlir (they "
              "go beside it) or the pass option weights-out=FILE.safetensors";
    return;
  } else {
    path = ir;
    if (llvm::sys::path::extension(path) == ".mlir")
      llvm::sys::path::replace_extension(path, "");
    path += ("." + tag + ".safetensors").str();
  }
  llvm::sys::fs::make_absolute(path);
  llvm::sys::path::remove_dots(path, /*remove_dot_dot=*/true);
  filePath = path.str().str();

  // The IR resolves relative names against its weight root, which is
  // relative to the folder of the IR file being written.
  llvm::SmallString<256> root(ir == "-" || ir.empty()
                                  ? std::string(".")
                                  : ::moe::weightRoot(module, ir));
  llvm::sys::fs::make_absolute(root);
  llvm::sys::path::remove_dots(root, /*remove_dot_dot=*/true);
  llvm::StringRef parent = llvm::sys::path::parent_path(filePath);
  if (ir != "-" && !ir.empty() && parent == root.str())
    fileReference = llvm::sys::path::filename(filePath).str();
  else
    fileReference = filePath;
}

NewWeights::~NewWeights() = default;

uint64_t NewWeights::bytes() const { return writer->dataSize(); }

FailureOr<WeightOp> NewWeights::add(OpBuilder &b, Location loc,
                                    llvm::StringRef name,
                                    RankedTensorType type,
                                    llvm::ArrayRef<float> values) {
  if (!problem.empty())
    return emitError(loc) << problem;
  std::optional<::moe::DType> dtype = storedDType(type.getElementType());
  if (!dtype)
    return emitError(loc) << "new weight '" << name << "' has element type "
                          << type.getElementType()
                          << "; expected f32, bf16 or f16";
  if (!type.hasStaticShape() || type.getNumElements() != int64_t(values.size()))
    return emitError(loc) << "new weight '" << name << "' of type " << type
                          << " was given " << values.size() << " values";
  if (llvm::Error e =
          writer->addFloatTensor(name, *dtype, type.getShape(), values))
    return emitError(loc) << "new weight '" << name
                          << "': " << llvm::toString(std::move(e));
  return WeightOp::create(b, loc, type, b.getStrArrayAttr({name}),
                            b.getStrArrayAttr({fileReference}),
                            /*stacked=*/false);
}

FailureOr<WeightOp> NewWeights::addRaw(OpBuilder &b, Location loc,
                                       llvm::StringRef name,
                                       RankedTensorType type,
                                       ::moe::DType dtype,
                                       llvm::ArrayRef<int64_t> storedShape,
                                       llvm::ArrayRef<uint8_t> bytes) {
  if (!problem.empty())
    return emitError(loc) << problem;
  if (llvm::Error e = writer->addTensor(name, dtype, storedShape, bytes))
    return emitError(loc) << "new weight '" << name
                          << "': " << llvm::toString(std::move(e));
  return WeightOp::create(b, loc, type, b.getStrArrayAttr({name}),
                          b.getStrArrayAttr({fileReference}),
                          /*stacked=*/false);
}

FailureOr<WeightOp> NewWeights::addStreamed(OpBuilder &b, Location loc,
                                            llvm::StringRef name,
                                            RankedTensorType type,
                                            Producer produce) {
  if (!problem.empty())
    return emitError(loc) << problem;
  Type elem = type.getElementType();
  std::optional<::moe::DType> dtype = storedDType(elem);
  SmallVector<int64_t> stored(type.getShape());
  // Quantized codes and scales as the loader reads them (forEachSlice):
  // FP8 codes as F8_E4M3, E8M0 scales as U8, FP4 codes as U8 two per byte.
  if (isa<Float8E4M3FNType>(elem))
    dtype = ::moe::DType::F8E4M3;
  if (isa<Float8E8M0FNUType, Float4E2M1FNType>(elem))
    dtype = ::moe::DType::U8;
  bool fp4 = isa<Float4E2M1FNType>(elem);
  if (!dtype || !type.hasStaticShape() ||
      (fp4 && (stored.empty() || stored.back() % 2 != 0)))
    return emitError(loc) << "new weight '" << name << "' has type " << type
                          << "; expected a static shape of f32, bf16, f16, "
                             "f8E4M3FN, f8E8M0FNU or f4E2M1FN (an even last "
                             "dimension)";
  if (fp4)
    stored.back() /= 2;
  if (llvm::Error e =
          writer->addStreamedTensor(name, *dtype, stored, std::move(produce)))
    return emitError(loc) << "new weight '" << name
                          << "': " << llvm::toString(std::move(e));
  return WeightOp::create(b, loc, type, b.getStrArrayAttr({name}),
                          b.getStrArrayAttr({fileReference}),
                          /*stacked=*/false);
}

LogicalResult NewWeights::commit() {
  if (writer->size() == 0)
    return success();
  if (llvm::Error e = writer->write(filePath))
    return module.emitError() << "cannot write the new weights to '"
                              << filePath
                              << "': " << llvm::toString(std::move(e));
  return success();
}
