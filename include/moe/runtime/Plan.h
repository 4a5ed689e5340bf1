//===- Plan.h - Launch plans of generated kernels ---------------*- C++ -*-===//
//
// Part of moe-opt. What the code generator hands to a backend for each
// layer: the kernels to launch in order, their launch shapes, and which
// buffer (the layer's input, an intermediate value, a weight tensor, a
// scratch area) sits in each argument slot. Plain C++: the runtime executes
// plans without MLIR.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_RUNTIME_PLAN_H
#define MOE_RUNTIME_PLAN_H

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

/// Quantized weight codes (block-scaled expert weights, quant_block):
/// F8E4M3FN one byte per value, F4E2M1FN two values per byte (low nibble
/// first), F8E8M0FNU one exponent byte per scale. Names are the IR's.
enum class ElementType { F32, BF16, F16, I32, U32, F8E4M3FN, F4E2M1FN, F8E8M0FNU };

/// Every element type, for parsers (one list: names parse back).
inline constexpr ElementType kElementTypes[] = {
    ElementType::F32,      ElementType::BF16,     ElementType::F16,
    ElementType::I32,      ElementType::U32,      ElementType::F8E4M3FN,
    ElementType::F4E2M1FN, ElementType::F8E8M0FNU};

const char *elementTypeName(ElementType type);
/// Bytes per element; 1 for F4E2M1FN, whose values are packed two per byte:
/// size tensors with storageBytes.
int64_t elementSize(ElementType type);
/// Bytes of `count` elements as stored (F4E2M1FN: ceil(count / 2)).
int64_t storageBytes(ElementType type, int64_t count);
/// Whether `type` holds quantized codes (no f32 conversion applies).
bool isQuantizedType(ElementType type);

/// A buffer whose size may grow with the token count T:
/// perToken * T + fixed elements.
struct BufferShape {
  ElementType type = ElementType::F32;
  int64_t perToken = 0;
  int64_t fixed = 0;
  int64_t elements(int64_t tokens) const { return perToken * tokens + fixed; }
};

/// A weight tensor, as the IR's moe.weight names it (resolved by the caller
/// against the weight root), or inline values (arith.constant).
struct WeightRef {
  std::vector<std::string> names;
  std::vector<std::string> files;
  bool stacked = false;
  std::vector<int64_t> shape;
  ElementType type = ElementType::F32;
  std::vector<float> inlineValues; ///< Non-empty for constants.
};

/// What one kernel argument slot holds.
struct Binding {
  enum Kind { Null, Value, Weight } kind = Null;
  int value = -1;  ///< Index into LayerPlan::values.
  int weight = -1; ///< Index into LayerPlan::weights.
};

/// The routed-slot count (T * K) up to which a moe.fused_experts of
/// `runtime` layout runs its decode kernels at least; above its
/// decodeMaxSlots, the grouped (prefill) kernels run. The code generator
/// writes decodeMaxSlots into the launches' slot gates (Launch::maxSlots /
/// minSlots).
constexpr int64_t kPerTokenMaxSlots = 64;

/// Rows per distinct expert up to which the decode kernels beat the
/// grouped GEMMs: both read each distinct expert's weights from memory
/// once, but the decode kernels then re-read them from L1/L2 once per 4
/// rows (moe_k::DecodeRows) on the CUDA cores, while a grouped tile takes
/// 64 rows on the tensor cores. A guess, to be timed.
constexpr double kDecodeMaxRowsPerExpert = 8.0;

/// The decode path's slot limit for E experts and K per token: the
/// largest T * K whose expected rows per distinct expert under uniform
/// routing, T * K / (E * (1 - (1 - K / E)^T)), is at most
/// kDecodeMaxRowsPerExpert, and at least kPerTokenMaxSlots. Layers of many
/// experts (DeepSeek-V3: 256, Qwen3: 128) decode well past 64 slots, since
/// their tokens spread over distinct experts.
int64_t decodeMaxSlots(int64_t experts, int64_t topK);

/// The token count up to which a moe.fused_route with one router_linear
/// runs its small-T kernel (the router projection spread over the GPU and
/// the routing by the last block to finish: one launch); above it, the
/// projection's kernel and then the routing kernel (two launches). The code
/// generator writes it into the launches' gates (maxSlots / minSlots with
/// one slot per token). The last block's 4 warps route at most 2 tokens
/// each: beyond that the second launch costs less than the serial routing.
constexpr int64_t kSmallRouteMaxTokens = 8;

/// A tensor map the host encodes for a launch (the --gemm=tma grouped
/// GEMMs, TensorMap.h): the weight bound to argument slot `slot`, seen as a
/// row-major matrix of its last dimension by the product of the others,
/// copied in boxes of boxRows x boxCols elements with a swizzle of
/// swizzleBytes (0, 32, 64 or 128); written to entry `entry` (128 bytes
/// each) of the value bound to argument slot `table` before the launch.
struct TensorMapRequest {
  int slot = -1;
  int table = -1;
  int entry = -1;
  int64_t boxRows = 0, boxCols = 0;
  int swizzleBytes = 0;
  bool operator==(const TensorMapRequest &o) const {
    return slot == o.slot && table == o.table && entry == o.entry &&
           boxRows == o.boxRows && boxCols == o.boxCols &&
           swizzleBytes == o.swizzleBytes;
  }
};

struct Launch {
  std::string kernel;
  /// Which IR op the kernel implements (for messages and reports).
  std::string origin;
  int blockThreads = 128;
  int64_t dynamicSharedBytes = 0;
  /// Grid: (ceil(T * rowsPerToken / tokensPerBlock) + extraBlocks) *
  /// gridColumns blocks, at least 1 and at most maxBlocks. With the
  /// defaults, ceil(T / tokensPerBlock). The grouped expert kernels use
  /// rows = routed slots (rowsPerToken = K), tokensPerBlock = the tile
  /// height, extraBlocks = E (each expert may end in a partial tile) and
  /// gridColumns = the tiles across the output: an upper bound; the kernels
  /// skip the blocks past their last tile (and loop, so that a clamped grid
  /// is still correct).
  int64_t tokensPerBlock = 1;
  int64_t maxBlocks = 65535;
  int64_t rowsPerToken = 1;
  int64_t extraBlocks = 0;
  int64_t gridColumns = 1;
  /// Gate for alternative launches chosen at run time: the launch runs only
  /// when minSlots <= T * slotsPerToken <= maxSlots (maxSlots < 0: no upper
  /// bound). The defaults always run. A moe.fused_experts of `runtime`
  /// layout has decode launches with maxSlots = kPerTokenMaxSlots and
  /// grouped launches (their combine included) with minSlots =
  /// kPerTokenMaxSlots + 1.
  int64_t slotsPerToken = 1;
  int64_t minSlots = 0;
  int64_t maxSlots = -1;
  std::vector<Binding> args;
  /// Values set to zero once, before the first launch of the layer (whether
  /// or not the launch's gate lets it run).
  std::vector<int> zeroOnce;
  /// Tensor maps to encode before each launch (none but on the TMA path).
  /// Packages record them (manifest `tensor_maps`), checked on load against
  /// the kernel's contract line (KernelContract.h).
  std::vector<TensorMapRequest> tensorMaps;
};

/// A named extra input of a layer (a function argument after x carrying
/// `moe.input`, e.g. GLIDER's sequence scores and token-to-sequence map):
/// the caller's array is copied into (or stands in for) `value` before the
/// first launch.
struct LayerInput {
  /// A dimension equal to the token count T / of any size >= 1 given at
  /// run time (the number of sequences B).
  static constexpr int64_t kTokenDim = -1, kAnyDim = -2;
  std::string name;
  int value = -1;
  ElementType type = ElementType::F32; ///< F32 or I32.
  /// Each dimension: >= 0 static, kTokenDim or kAnyDim.
  std::vector<int64_t> dims;
  /// An i32 input whose values index dimension 0 of input `indexes` (the
  /// sequence map of moe.add_sequence_scores, into the sequence scores):
  /// every value must be in [0, that size), checked on the host before any
  /// launch; -1 when its values are not indices.
  int indexes = -1;
};

/// A named extra result of a layer (a function result after y carrying
/// `moe.output`, e.g. RMoE's router state for the next layer): the [T,
/// width] f32 value the caller receives after the last launch.
struct LayerOutput {
  std::string name;
  int value = -1;
  int64_t width = 0;
};

struct LayerPlan {
  int64_t layer = 0;
  std::string target;   ///< LoRA target module, or empty for the MoE block.
  std::string function; ///< IR function name.
  std::vector<BufferShape> values;
  std::vector<WeightRef> weights;
  std::vector<Launch> launches;
  int input = -1, output = -1;   ///< Values of the layer's input and output.
  /// The (ids, weights) values of each router of the layer, in IR order,
  /// for --routing-out (router 0 is PREFIX.ids.npy, router r > 0
  /// PREFIX.r<r>.ids.npy).
  struct Routing {
    int ids = -1, weights = -1;
    /// Experts the router dispatches to (moe.fused_route num_experts): the
    /// length of its per-expert load statistics; 0 when unknown (a manifest
    /// written before it was recorded).
    int64_t experts = 0;
  };
  std::vector<Routing> routings;
  int64_t inputWidth = 0, outputWidth = 0;
  /// A LoRA mixture without routing applies every one of its allExperts
  /// adapters with weight 1 (reported as such by --routing-out).
  int64_t allExperts = 0;
  /// A layer whose routing is given by the caller (an engine's dispatch;
  /// the function's second and third arguments): the [T, K] i32 ids and
  /// f32 weights values the caller's arrays are copied into before the
  /// first launch; -1 when the layer routes its tokens itself.
  int givenIds = -1, givenWeights = -1;
  /// The layer's extra inputs in argument order (empty for a layer of one
  /// input).
  std::vector<LayerInput> inputs;
  /// The layer's extra results in result order (empty for a layer that
  /// returns y only).
  std::vector<LayerOutput> outputs;
  /// What the plan computes: "" a layer's output; "router" only the
  /// layer's routing (routings[0]; no output value, output == -1);
  /// "pregate" a router-only plan that routes every layer taking its
  /// routing without a router of its own (Read-ME), run once on the first
  /// layer's input.
  std::string role;
};

/// Whether a plan's role computes routing only ("router" or "pregate").
inline bool isRouterRole(const std::string &role) {
  return role == "router" || role == "pregate";
}

struct ModulePlan {
  std::string source; ///< CUDA C++ of every kernel.
  std::vector<LayerPlan> layers;
};

/// Grid size of a launch for T tokens.
int64_t gridBlocks(const Launch &launch, int64_t tokens);

/// Whether a launch's slot gate lets it run for T tokens.
bool launchRuns(const Launch &launch, int64_t tokens);

} // namespace moe

#endif // MOE_RUNTIME_PLAN_H
