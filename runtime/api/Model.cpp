//===- Model.cpp - The C++ API: run a compiled package --------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/Model.h"
#include "moe/runtime/Backends.h"
#include "moe/runtime/Executor.h"
#include "moe/runtime/Package.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <set>

namespace moe {

using runtime::Expected;
using runtime::Status;

struct Model::Impl {
  Impl(runtime::LoadedPackage package) : package(std::move(package)) {}
  runtime::LoadedPackage package;
  std::unique_ptr<KernelBackend> device;
  std::string backend, description;
  /// Model layer -> its plan (the MoE block's) and its router-only plan.
  std::map<int64_t, const LayerPlan *> layers, routers;
  /// The pre-gating router (role "pregate", Read-ME), or null: it routes
  /// every layer that takes its routing and has no router of its own.
  const LayerPlan *pregate = nullptr;
  /// The router that routes `layer` when it takes its routing: its own
  /// (a rank package's), else the pre-gating router; null if none.
  const LayerPlan *routerOf(int64_t layer) const {
    auto it = routers.find(layer);
    return it != routers.end() ? it->second : pregate;
  }
  /// Plan -> index into package.plan().layers.
  std::map<const LayerPlan *, size_t> planIndex;
  std::map<const LayerPlan *, std::unique_ptr<LayerExecutor>> executors;
  /// Tensors bound by the caller (bindTensor).
  std::map<size_t, const void *> bound;
  double lastMs = 0;
  /// recordRouting(): the last routing and the load of each layer.
  bool recordRouting = false;
  std::map<int64_t, std::vector<Model::LayerRouting>> lastRouting;
  std::map<int64_t, std::vector<RoutingStats>> stats;

  /// Keeps the routing of a host run (LayerOutputs::routings, asked for
  /// when recordRouting is on).
  void record(const LayerPlan &plan, LayerOutputs &out, int64_t tokens) {
    if (!recordRouting || out.routings.empty())
      return;
    std::vector<Model::LayerRouting> &last = lastRouting[plan.layer];
    std::vector<RoutingStats> &load = stats[plan.layer];
    last.clear();
    for (size_t r = 0; r < out.routings.size(); ++r) {
      LayerOutputs::Routing &o = out.routings[r];
      int64_t experts = r < plan.routings.size() ? plan.routings[r].experts : 0;
      if (load.size() <= r)
        load.push_back(makeRoutingStats(experts));
      load[r].add(o.ids.data(), o.weights.data(), tokens, o.slots);
      Model::LayerRouting &l = last.emplace_back();
      l.tokens = tokens;
      l.slots = o.slots;
      l.experts = experts;
      l.ids = std::move(o.ids);
      l.weights = std::move(o.weights);
    }
  }

  Status unknownLayer(int64_t layer) const {
    std::string list;
    for (const auto &[l, p] : layers)
      list += (list.empty() ? "" : ", ") + std::to_string(l);
    return Status::error("layer " + std::to_string(layer) +
                         " is not an MoE layer of " + package.directory() +
                         "; MoE layers: " + (list.empty() ? "none" : list));
  }

  Expected<const LayerPlan *> plan(int64_t layer) const {
    auto it = layers.find(layer);
    if (it == layers.end())
      return unknownLayer(layer);
    return it->second;
  }

  Expected<LayerExecutor *> executor(int64_t layer) {
    Expected<const LayerPlan *> p = plan(layer);
    if (!p)
      return p.takeError();
    return executorOf(p.value());
  }

  Expected<LayerExecutor *> executorOf(const LayerPlan *plan) {
    auto it = executors.find(plan);
    if (it != executors.end())
      return it->second.get();
    auto exec = std::make_unique<LayerExecutor>(*plan, *device);
    size_t index = planIndex.at(plan);
    for (size_t w = 0; w < plan->weights.size(); ++w) {
      auto b = bound.find(static_cast<size_t>(package.tensorIndex(index, w)));
      if (b != bound.end())
        exec->bindWeight(w, b->second);
    }
    if (Status s = exec->loadWeights(package.weightProvider()))
      return s.withContext("layer " + std::to_string(plan->layer) +
                           (plan->role.empty() ? "" : " (" + plan->role + ")"));
    LayerExecutor *raw = exec.get();
    executors[plan] = std::move(exec);
    return raw;
  }

  template <typename F> Status timed(F &&f) {
    auto start = std::chrono::steady_clock::now();
    if (Status s = f())
      return s;
    lastMs = std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - start)
                 .count();
    return Status::success();
  }
};

Model::Model(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
Model::~Model() = default;

Expected<std::unique_ptr<Model>> Model::open(const std::string &packageDir,
                                             const ModelOptions &options) {
  if (options.backend != "cuda" && options.backend != "emu" &&
      options.backend != "auto")
    return Status::error("unknown backend '" + options.backend +
                         "'; expected cuda, emu or auto");
  Expected<runtime::LoadedPackage> package = runtime::openPackage(packageDir);
  if (!package)
    return package.takeError();
  auto impl = std::make_unique<Impl>(std::move(package.value()));
  const std::vector<LayerPlan> &plans = impl->package.plan().layers;
  for (size_t i = 0; i < plans.size(); ++i) {
    if (!plans[i].target.empty())
      continue;
    impl->planIndex[&plans[i]] = i;
    if (plans[i].role == "pregate") {
      impl->pregate = &plans[i];
      continue;
    }
    auto &byLayer = plans[i].role == "router" ? impl->routers : impl->layers;
    byLayer[plans[i].layer] = &plans[i];
  }

  BackendReport report;
  std::string cudaError;
  if (options.backend != "emu") {
    std::map<std::string, std::string> cubins;
    for (const std::string &arch : impl->package.cubinArchs())
      cubins[arch] = *impl->package.cubin(arch);
    auto cuda = openCudaBackend(impl->package.source(), options.device,
                                &report, &cubins, options.cacheDir);
    if (cuda) {
      impl->device = std::move(cuda.value());
      impl->backend = "cuda";
    } else if (options.backend == "cuda") {
      return cuda.takeError();
    } else {
      cudaError = cuda.message();
    }
  }
  if (!impl->device) {
    auto emu = openEmuBackend(impl->package.source(), options.cacheDir,
                              &report);
    if (!emu)
      return emu.takeError().withContext(
          cudaError.empty() ? "emu backend"
                            : "no GPU (" + cudaError + ") and the emu backend");
    impl->device = std::move(emu.value());
    impl->backend = "emu";
  }
  impl->description = report.description;
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const std::string &Model::backend() const { return impl->backend; }
const std::string &Model::description() const { return impl->description; }

std::vector<int64_t> Model::layers() const {
  std::vector<int64_t> result;
  for (const auto &[l, p] : impl->layers)
    result.push_back(l);
  return result;
}

Expected<int64_t> Model::hidden(int64_t layer) const {
  auto it = impl->layers.find(layer);
  if (it == impl->layers.end())
    return Status::error("layer " + std::to_string(layer) +
                         " is not an MoE layer of the package");
  return it->second->inputWidth;
}

Expected<int64_t> Model::outputWidth(int64_t layer) const {
  auto it = impl->layers.find(layer);
  if (it == impl->layers.end())
    return Status::error("layer " + std::to_string(layer) +
                         " is not an MoE layer of the package");
  return it->second->outputWidth;
}

std::vector<std::string> Model::kernelNames() const {
  std::vector<std::string> names;
  std::set<std::string> seen;
  for (const LayerPlan &layer : impl->package.plan().layers)
    for (const Launch &launch : layer.launches)
      if (seen.insert(launch.kernel).second)
        names.push_back(launch.kernel);
  return names;
}

Expected<std::string> Model::activationType(int64_t layer) const {
  auto it = impl->layers.find(layer);
  if (it == impl->layers.end())
    return Status::error("layer " + std::to_string(layer) +
                         " is not an MoE layer of the package");
  const LayerPlan &p = *it->second;
  return std::string(elementTypeName(p.values[p.input].type));
}

Status Model::runLayer(int64_t layer, const float *x, int64_t tokens,
                       float *y) {
  if (tokens < 1)
    return Status::error("runLayer: tokens must be >= 1, got " +
                         std::to_string(tokens));
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  return impl->timed([&]() -> Status {
    auto out = exec.value()->run(x, tokens, impl->recordRouting);
    if (!out)
      return out.takeError().withContext(
          "runLayer (a layer that takes its routing runs with "
          "runLayerDispatched)");
    impl->record(*impl->layers.at(layer), out.value(), tokens);
    std::copy(out.value().y.begin(), out.value().y.end(), y);
    return Status::success();
  });
}

Expected<std::vector<Model::InputInfo>> Model::inputs(int64_t layer) const {
  Expected<const LayerPlan *> p = impl->plan(layer);
  if (!p)
    return p.takeError();
  std::vector<InputInfo> infos;
  for (const LayerInput &in : p.value()->inputs)
    infos.push_back({in.name, elementTypeName(in.type), in.dims});
  return infos;
}

/// The caller's extra inputs as the executor takes them.
static Expected<std::vector<InputArray>>
inputArrays(const std::vector<const void *> &data,
            const std::vector<std::vector<int64_t>> &shapes) {
  if (data.size() != shapes.size())
    return Status::error("extra inputs: " + std::to_string(data.size()) +
                         " data pointer(s) but " +
                         std::to_string(shapes.size()) + " shape(s)");
  std::vector<InputArray> arrays;
  for (size_t i = 0; i < data.size(); ++i)
    arrays.push_back({data[i], shapes[i]});
  return arrays;
}

Status
Model::runLayerWithInputs(int64_t layer, const float *x, int64_t tokens,
                          const std::vector<const void *> &data,
                          const std::vector<std::vector<int64_t>> &shapes,
                          float *y, std::vector<std::vector<float>> *outputs) {
  if (tokens < 1)
    return Status::error("runLayerWithInputs: tokens must be >= 1, got " +
                         std::to_string(tokens));
  Expected<std::vector<InputArray>> arrays = inputArrays(data, shapes);
  if (!arrays)
    return arrays.takeError();
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  return impl->timed([&]() -> Status {
    auto out = exec.value()->runWithInputs(x, tokens, impl->recordRouting,
                                           arrays.value());
    if (!out)
      return out.takeError();
    impl->record(*impl->layers.at(layer), out.value(), tokens);
    std::copy(out.value().y.begin(), out.value().y.end(), y);
    if (outputs)
      *outputs = std::move(out.value().extras);
    return Status::success();
  });
}

Status Model::runLayerWithInputsOnDevice(
    int64_t layer, const void *x, const std::vector<const void *> &data,
    const std::vector<std::vector<int64_t>> &shapes, void *y, int64_t tokens,
    void *stream) {
  if (impl->backend != "cuda")
    return Status::error("runLayerWithInputsOnDevice needs the cuda backend; "
                         "this model runs on " + impl->backend);
  Expected<std::vector<InputArray>> arrays = inputArrays(data, shapes);
  if (!arrays)
    return arrays.takeError();
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  return impl->timed([&] {
    return exec.value()->runOnDeviceWithInputs(x, y, tokens, stream,
                                               arrays.value());
  });
}

Expected<int64_t> Model::routingSlots(int64_t layer) const {
  Expected<const LayerPlan *> p = impl->plan(layer);
  if (!p)
    return p.takeError();
  const LayerPlan *router =
      p.value()->givenIds >= 0 ? impl->routerOf(layer) : nullptr;
  const LayerPlan &plan = router ? *router : *p.value();
  if (plan.givenIds >= 0)
    return plan.values[plan.givenIds].perToken;
  if (plan.routings.empty())
    return Status::error("layer " + std::to_string(layer) +
                         " has no routing (no router and no given routing)");
  return plan.values[plan.routings[0].ids].perToken;
}

bool Model::takesRouting(int64_t layer) const {
  auto it = impl->layers.find(layer);
  return it != impl->layers.end() && it->second->givenIds >= 0;
}

Status Model::route(int64_t layer, const float *x, int64_t tokens,
                    int32_t *ids, float *weights) {
  if (tokens < 1)
    return Status::error("route: tokens must be >= 1, got " +
                         std::to_string(tokens));
  Expected<const LayerPlan *> p = impl->plan(layer);
  if (!p)
    return p.takeError();
  // A rank package's router-only plan, or for a layer that takes its
  // routing a Read-ME package's pre-gating router; else the layer itself,
  // when it routes its tokens (its first router's routing).
  const LayerPlan *router =
      impl->routers.count(layer) || p.value()->givenIds >= 0
          ? impl->routerOf(layer)
          : nullptr;
  const LayerPlan *plan = router ? router : p.value();
  if (plan->routings.empty() || plan->givenIds >= 0)
    return Status::error("route: layer " + std::to_string(layer) + " of " +
                         impl->package.directory() +
                         " has no router to run (it takes its routing from "
                         "the caller and the package has no router plan)");
  Expected<LayerExecutor *> exec = impl->executorOf(plan);
  if (!exec)
    return exec.takeError();
  return impl->timed([&]() -> Status {
    auto out = exec.value()->run(x, tokens, true);
    if (!out)
      return out.takeError();
    const LayerOutputs::Routing &r = out.value().routings.front();
    std::copy(r.ids.begin(), r.ids.end(), ids);
    std::copy(r.weights.begin(), r.weights.end(), weights);
    return Status::success();
  });
}

Status Model::runLayerDispatched(int64_t layer, const float *x,
                                 const int32_t *ids, const float *weights,
                                 int64_t tokens, float *y) {
  if (tokens < 1)
    return Status::error("runLayerDispatched: tokens must be >= 1, got " +
                         std::to_string(tokens));
  if (!ids || !weights)
    return Status::error("runLayerDispatched: ids and weights are required");
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  return impl->timed([&]() -> Status {
    auto out = exec.value()->run(x, tokens, false, ids, weights);
    if (!out)
      return out.takeError();
    std::copy(out.value().y.begin(), out.value().y.end(), y);
    return Status::success();
  });
}

Status Model::runLayerDispatchedOnDevice(int64_t layer, const void *x,
                                         const void *ids, const void *weights,
                                         void *y, int64_t tokens,
                                         void *stream) {
  if (impl->backend != "cuda")
    return Status::error("runLayerDispatchedOnDevice needs the cuda backend; "
                         "this model runs on " + impl->backend);
  if (!ids || !weights)
    return Status::error("runLayerDispatchedOnDevice: ids and weights are "
                         "required");
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  return impl->timed([&] {
    return exec.value()->runOnDevice(x, y, tokens, stream, ids, weights);
  });
}

Status Model::runAll(const float *x, int64_t tokens, float *y,
                     ChainMode chain) {
  return runAllWithInputs(x, tokens, {}, {}, y, chain, nullptr);
}

Expected<std::vector<Model::OutputInfo>>
Model::extraOutputs(int64_t layer) const {
  auto it = impl->layers.find(layer);
  if (it == impl->layers.end())
    return Status::error("no MoE layer " + std::to_string(layer));
  std::vector<OutputInfo> infos;
  for (const LayerOutput &out : it->second->outputs)
    infos.push_back({out.name, out.width});
  return infos;
}

Status Model::runAllWithInputs(const float *x, int64_t tokens,
                               const std::vector<const void *> &data,
                               const std::vector<std::vector<int64_t>> &shapes,
                               float *y, ChainMode chain,
                               std::vector<std::vector<float>> *outputs) {
  if (data.size() != shapes.size())
    return Status::error("runAll: " + std::to_string(data.size()) +
                         " extra input(s) but " +
                         std::to_string(shapes.size()) + " shape(s)");
  std::vector<int64_t> all = layers();
  if (all.empty())
    return Status::error("the package has no MoE layer");
  Expected<int64_t> h = hidden(all.front());
  if (!h)
    return h.takeError();
  if (tokens < 1)
    return Status::error("runAll: tokens must be >= 1, got " +
                         std::to_string(tokens));
  // y is [tokens, hidden] and the residual adds the stream to each layer's
  // output: equal widths.
  for (int64_t l : all) {
    Expected<int64_t> in = hidden(l), out = outputWidth(l);
    if (!in)
      return in.takeError();
    if (!out)
      return out.takeError();
    if (in.value() != h.value() || out.value() != h.value())
      return Status::error(
          "runAll: layer " + std::to_string(l) + " maps width " +
          std::to_string(in.value()) + " to " + std::to_string(out.value()) +
          " in a chain of width " + std::to_string(h.value()) +
          "; the chain needs equal widths (run the layers one by one)");
  }
  size_t count = static_cast<size_t>(tokens * h.value());
  std::vector<float> stream(x, x + count), input, next(count);
  double total = 0;
  // Read-ME: the pre-gating router runs once, on the first layer's input;
  // every layer that takes its routing without a router of its own gets it.
  std::vector<int32_t> pregateIds;
  std::vector<float> pregateWeights;
  // Extra inputs by name (bytes, shape), carried from layer to layer: the
  // caller's seed the first layer that takes any, then the layers' extra
  // results.
  std::map<std::string, std::pair<std::vector<uint8_t>, std::vector<int64_t>>>
      carried;
  bool seeded = false;
  if (outputs)
    outputs->clear();
  for (int64_t l : all) {
    const float *in = stream.data();
    if (chain == ChainMode::PreNorm) {
      input = stream;
      chainInputRows(chain, input.data(), tokens, h.value());
      in = input.data();
    }
    const LayerPlan *router =
        impl->layers.at(l)->givenIds >= 0 ? impl->routerOf(l) : nullptr;
    if (!router && impl->layers.at(l)->givenIds >= 0)
      return Status::error("runAll: layer " + std::to_string(l) +
                           " takes its routing and the package has no router "
                           "for it (no router plan of that layer and no "
                           "pre-gating router)");
    // The routing router-only plan `r` computes on `in`.
    auto routeOn = [&](const LayerPlan &r, std::vector<int32_t> &ids,
                       std::vector<float> &w) -> Status {
      int64_t slots = r.values[r.routings.at(0).ids].perToken;
      ids.assign(tokens * slots, 0);
      w.assign(tokens * slots, 0.0f);
      Expected<LayerExecutor *> exec = impl->executorOf(&r);
      if (!exec)
        return exec.takeError();
      auto out = exec.value()->run(in, tokens, true);
      if (!out)
        return out.takeError();
      const LayerOutputs::Routing &o = out.value().routings.front();
      std::copy(o.ids.begin(), o.ids.end(), ids.begin());
      std::copy(o.weights.begin(), o.weights.end(), w.begin());
      return Status::success();
    };
    if (impl->pregate && l == all.front()) {
      if (Status s = impl->timed([&] {
            return routeOn(*impl->pregate, pregateIds, pregateWeights);
          }))
        return s.withContext("the pre-gating router");
      total += impl->lastMs;
    }
    const LayerPlan &plan = *impl->layers.at(l);
    if (!plan.inputs.empty()) {
      std::string names;
      for (const LayerInput &in : plan.inputs)
        names += (names.empty() ? "'" : ", '") + in.name + "'";
      if (!seeded) {
        if (data.size() != plan.inputs.size())
          return Status::error(
              "runAll: layer " + std::to_string(l) +
              " (the chain's first layer with extra inputs) takes " +
              std::to_string(plan.inputs.size()) + " extra input(s) after x (" +
              names + "); " + std::to_string(data.size()) + " given" +
              (data.empty() ? " (runAllWithInputs gives them)" : ""));
        for (size_t i = 0; i < data.size(); ++i) {
          size_t bytes = 4;
          for (int64_t d : shapes[i])
            bytes *= static_cast<size_t>(std::max<int64_t>(d, 0));
          const auto *p = static_cast<const uint8_t *>(data[i]);
          carried[plan.inputs[i].name] = {std::vector<uint8_t>(p, p + bytes),
                                          shapes[i]};
        }
        seeded = true;
      }
      std::vector<InputArray> arrays;
      for (const LayerInput &in : plan.inputs) {
        auto it = carried.find(in.name);
        if (it == carried.end())
          return Status::error("runAll: layer " + std::to_string(l) +
                               " takes the extra input '" + in.name +
                               "', which neither the chain's first inputs "
                               "nor an earlier layer's results give");
        arrays.push_back({it->second.first.data(), it->second.second});
      }
      Expected<LayerExecutor *> exec = impl->executor(l);
      if (!exec)
        return exec.takeError();
      if (Status s = impl->timed([&]() -> Status {
            auto out = exec.value()->runWithInputs(in, tokens,
                                                   impl->recordRouting, arrays);
            if (!out)
              return out.takeError();
            impl->record(plan, out.value(), tokens);
            std::copy(out.value().y.begin(), out.value().y.end(), next.begin());
            for (size_t i = 0; i < plan.outputs.size(); ++i) {
              const std::vector<float> &e = out.value().extras[i];
              const auto *p = reinterpret_cast<const uint8_t *>(e.data());
              carried[plan.outputs[i].name] = {
                  std::vector<uint8_t>(p, p + e.size() * 4),
                  {tokens, plan.outputs[i].width}};
              if (outputs && l == all.back())
                outputs->push_back(e);
            }
            return Status::success();
          }))
        return s.withContext("layer " + std::to_string(l));
    } else if (router) {
      std::vector<int32_t> ownIds;
      std::vector<float> ownWeights;
      bool pregated = router == impl->pregate;
      if (!pregated) {
        if (Status s = impl->timed(
                [&] { return routeOn(*router, ownIds, ownWeights); }))
          return s;
        total += impl->lastMs;
      }
      if (Status s = runLayerDispatched(
              l, in, pregated ? pregateIds.data() : ownIds.data(),
              pregated ? pregateWeights.data() : ownWeights.data(), tokens,
              next.data()))
        return s;
    } else if (Status s = runLayer(l, in, tokens, next.data())) {
      return s;
    }
    total += impl->lastMs;
    chainAddStream(chain, stream.data(), next.data(), count);
    stream.swap(next);
  }
  std::copy(stream.begin(), stream.end(), y);
  impl->lastMs = total;
  return Status::success();
}

Status Model::runLayerOnDevice(int64_t layer, const void *x, void *y,
                               int64_t tokens, void *stream) {
  if (impl->backend != "cuda")
    return Status::error("runLayerOnDevice needs the cuda backend; this "
                         "model runs on " + impl->backend);
  Expected<LayerExecutor *> exec = impl->executor(layer);
  if (!exec)
    return exec.takeError();
  if (Status s = impl->timed(
          [&] { return exec.value()->runOnDevice(x, y, tokens, stream); }))
    return s;
  if (!impl->recordRouting)
    return Status::success();
  // Recording waits for the device: the routing is copied to the host.
  auto routing = exec.value()->lastDeviceRouting(tokens);
  if (!routing)
    return routing.takeError().withContext("recording the routing");
  LayerOutputs out;
  out.routings = std::move(routing.value());
  impl->record(*impl->layers.at(layer), out, tokens);
  return Status::success();
}

size_t Model::numTensors() const { return impl->package.tensors().size(); }

Expected<TensorInfo> Model::tensor(size_t t) const {
  const std::vector<runtime::PackageTensor> &tensors = impl->package.tensors();
  if (t >= tensors.size())
    return Status::error("tensor " + std::to_string(t) +
                         " is out of range (the package has " +
                         std::to_string(tensors.size()) + " tensors)");
  TensorInfo info;
  info.names = tensors[t].ref.names;
  info.shape = tensors[t].ref.shape;
  info.stacked = tensors[t].ref.stacked;
  info.dtype = elementTypeName(tensors[t].ref.type);
  info.bytes = tensors[t].bytes;
  info.constant = tensors[t].constant;
  info.stored = tensors[t].stored;
  info.bound = impl->bound.count(t) != 0;
  return info;
}

Status Model::bindTensor(size_t tensor, const void *data, size_t bytes) {
  Expected<TensorInfo> info = this->tensor(tensor);
  if (!info)
    return Status::error("bindTensor: " + info.message());
  const runtime::PackageTensor &t = impl->package.tensors()[tensor];
  std::string what = "bindTensor: tensor " + std::to_string(tensor) + " (" +
                     (t.ref.names.empty() ? std::string("a constant")
                                          : t.ref.names.front()) +
                     ")";
  if (t.constant)
    return Status::error(what + " is a constant of the compiled IR and "
                                "cannot be bound");
  if (!data)
    return Status::error(what + ": the data pointer is null");
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0)
    return Status::error(what + ": the data must be 16-byte aligned (the "
                                "kernels read it 16 bytes at a time)");
  if (bytes != static_cast<size_t>(t.bytes))
    return Status::error(what + ": got " + std::to_string(bytes) +
                         " bytes, expected " + std::to_string(t.bytes) +
                         " (shape and dtype in manifest.json weights.tensors[" +
                         std::to_string(tensor) + "])");
  impl->bound[tensor] = data;
  for (auto &[plan, exec] : impl->executors) {
    size_t index = impl->planIndex.at(plan);
    for (size_t w = 0; w < plan->weights.size(); ++w)
      if (impl->package.tensorIndex(index, w) == static_cast<int>(tensor))
        exec->bindWeight(w, data);
  }
  return Status::success();
}

double Model::lastMilliseconds() const { return impl->lastMs; }

void Model::recordRouting(bool enable) { impl->recordRouting = enable; }
bool Model::recordsRouting() const { return impl->recordRouting; }

/// The recorded entry of `layer` in `map`, or why there is none.
template <typename T>
static Expected<T> recorded(const Model::Impl &impl,
                            const std::map<int64_t, T> &map, int64_t layer) {
  Expected<const LayerPlan *> p = impl.plan(layer);
  if (!p)
    return p.takeError();
  auto it = map.find(layer);
  if (it != map.end())
    return it->second;
  if (!impl.recordRouting)
    return Status::error("no routing recorded for layer " +
                         std::to_string(layer) +
                         ": turn routing recording on before running it "
                         "(C++ recordRouting(true), C "
                         "moe_model_record_routing, Python "
                         "record_routing=True)");
  if (p.value()->routings.empty())
    return Status::error("layer " + std::to_string(layer) + " of " +
                         impl.package.directory() +
                         " has no router of its own (it takes its routing, "
                         "or runs every expert): no routing to record");
  return Status::error("no routing recorded for layer " +
                       std::to_string(layer) +
                       " yet: run it on host memory first");
}

Expected<std::vector<Model::LayerRouting>>
Model::lastRouting(int64_t layer) const {
  return recorded(*impl, impl->lastRouting, layer);
}

Expected<std::vector<RoutingStats>> Model::routingStats(int64_t layer) const {
  return recorded(*impl, impl->stats, layer);
}

void Model::resetRoutingStats() {
  impl->stats.clear();
  impl->lastRouting.clear();
}

} // namespace moe
