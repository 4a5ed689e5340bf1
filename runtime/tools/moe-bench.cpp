//===- moe-bench.cpp - Times the layers of a package ----------------------===//
//
// Part of moe-opt. Runs every MoE layer of a package for several token
// counts on random inputs (never zeros) and prints the median time per
// layer. Plain C++ on the runtime: builds on a GPU machine without MLIR.
//
//   moe-bench PKG [--backend auto|cuda|emu] [--tokens 1,8,64] [--repeat N]
//             [--check DIR] [--random-weights SEED] [--json FILE]
//
// On the cuda backend each run is timed on the GPU (CUDA events around
// Model::runLayerOnDevice, inputs already on the device, rotated among
// buffers that together exceed the L2 cache); on emu, the host run. With
// --check DIR, the outputs are compared with reference outputs (DIR/x_T.f32
// -> DIR/y_L_T.f32, raw float32 files written by bench/gpu/prepare.sh).
// --random-weights binds every tensor without data (a shape-only package,
// moe-compile --weights none) to random values: timing needs no checkpoint,
// and the weights are never zeros.
//
//===----------------------------------------------------------------------===//

#include "moe/Model.h"
#include "moe/runtime/Device.h"
#include "moe/runtime/Executor.h"
#include "moe/runtime/Package.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using moe::runtime::Expected;
using moe::runtime::Status;

namespace {
const char *const kUsage =
    "usage: moe-bench PKG [--backend auto|cuda|emu] [--tokens 1,8,64] "
    "[--repeat N] [--check DIR] [--random-weights SEED] [--json FILE] "
    "[--bandwidth GBPS]\n";

int usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

int help() {
  std::fputs(kUsage, stdout);
  std::fputs(
      "\nTimes every MoE layer of a package (moe-compile's output) on random "
      "inputs.\n\n"
      "  --backend B          auto (cuda when a GPU is present, else emu), "
      "cuda or emu; default auto\n"
      "  --tokens LIST        token counts to run, comma-separated positive "
      "integers; default 1,8,64\n"
      "  --repeat N           runs per layer and token count (1 to 1000000); "
      "the median is printed; default 20\n"
      "  --check DIR          compare outputs with DIR/y_L_T.f32 for inputs "
      "DIR/x_T.f32 (raw float32, bench/gpu/prepare.sh)\n"
      "  --random-weights S   bind tensors without data (a shape-only "
      "package) to random values from seed S\n"
      "  --json FILE          also write the rows as JSON\n"
      "  --bandwidth G        memory bandwidth in GB/s: print the decode "
      "floor, the weight bytes read (weight MB: the touched experts' codes "
      "and scales as stored, min(T*K, E) experts, plus router and shared "
      "weights) over G\n"
      "  -h, --help           print this help\n",
      stdout);
  return 0;
}

int fail(const std::string &message) {
  std::fprintf(stderr, "moe-bench: error: %s\n", message.c_str());
  return 1;
}

std::vector<float> readRaw(const std::string &path, size_t count) {
  std::vector<float> v(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char *>(v.data()),
          static_cast<std::streamsize>(count * sizeof(float)));
  if (!in)
    v.clear();
  return v;
}

/// `count` elements of `type` from N(0, scale^2) values (integers: |v| * 4),
/// as raw bytes, encoded as the executor encodes weights.
std::vector<uint8_t> randomElements(size_t count, moe::ElementType type,
                                    float scale, std::mt19937 &rng) {
  if (moe::isQuantizedType(type)) {
    // Codes as stored (count bytes): FP8 any code but the NaNs; FP4 any
    // pair of nibbles; E8M0 exponents 2^-8 .. 2^-1 (about unit gain for
    // E2M1 values up to 6).
    std::vector<uint8_t> out(count);
    for (uint8_t &b : out) {
      unsigned r = static_cast<unsigned>(rng());
      b = type == moe::ElementType::F8E8M0FNU
              ? static_cast<uint8_t>(119 + r % 8)
              : static_cast<uint8_t>(r & 0xFF);
      if (type == moe::ElementType::F8E4M3FN && (b & 0x7F) == 0x7F)
        b ^= 1; // S.1111.111 is NaN
    }
    return out;
  }
  std::normal_distribution<float> normal(0.0f, scale);
  bool integer = type == moe::ElementType::I32 || type == moe::ElementType::U32;
  std::vector<float> values(count);
  for (float &v : values)
    v = integer ? std::trunc(std::fabs(normal(rng)) * 4) : normal(rng);
  return moe::encodeElements(values, type);
}

/// Memory that the model's backend can read: device memory (cuda) or
/// 16-byte aligned host memory (emu), with 16 bytes of slack.
class Buffer {
public:
  static Expected<Buffer> make(const moe::runtime::Device *device,
                               size_t bytes) {
    Buffer b;
    b.bytes_ = bytes;
    if (device) {
      Expected<moe::runtime::DeviceBuffer> d = device->allocate(bytes + 16);
      if (!d)
        return d.takeError();
      b.device_ = std::make_shared<moe::runtime::DeviceBuffer>(
          std::move(d.value()));
    } else {
      b.host_ = std::shared_ptr<uint8_t>(
          static_cast<uint8_t *>(std::aligned_alloc(16, (bytes + 31) / 16 * 16)),
          std::free);
      if (!b.host_)
        return Status::error("out of host memory");
    }
    return b;
  }
  void *pointer() const {
    return device_ ? device_->pointer() : static_cast<void *>(host_.get());
  }
  Status write(const void *src, size_t bytes, size_t offset) {
    if (device_)
      return device_->copyFromHost(src, bytes, offset);
    std::memcpy(host_.get() + offset, src, bytes);
    return Status::success();
  }
  /// Fills the buffer by repeating `pattern` (random values: a big tensor
  /// need not be generated value by value to be never-zero data).
  Status tile(const std::vector<uint8_t> &pattern) {
    for (size_t at = 0; at < bytes_; at += pattern.size())
      if (Status s = write(pattern.data(),
                           std::min(pattern.size(), bytes_ - at), at))
        return s;
    return Status::success();
  }

private:
  size_t bytes_ = 0;
  std::shared_ptr<moe::runtime::DeviceBuffer> device_;
  std::shared_ptr<uint8_t> host_;
};
} // namespace

namespace {
struct Options {
  std::string pkg, backend = "auto", tokensList = "1,8,64", check, json;
  int repeat = 20;
  bool randomWeights = false;
  unsigned seed = 0;
  /// Memory bandwidth in GB/s for the decode floor (0: not printed).
  double bandwidth = 0;
};

/// Binds every tensor the package has no data for to random values.
Status bindRandomWeights(moe::Model &model,
                         const moe::runtime::LoadedPackage &package,
                         const moe::runtime::Device *device, unsigned seed,
                         std::vector<Buffer> &keep, int &bound) {
  std::mt19937 rng(seed);
  const auto &tensors = package.tensors();
  for (size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].stored)
      continue;
    const moe::WeightRef &ref = tensors[t].ref;
    // Elements, or bytes of codes (quantized tensors: randomElements
    // writes codes as stored).
    size_t count = static_cast<size_t>(tensors[t].bytes) /
                   moe::elementSize(ref.type);
    // Weights of about unit gain: N(0, 1/fan_in), fan_in the last dimension.
    float scale = 1.0f / std::sqrt(static_cast<float>(ref.shape.back()));
    std::vector<uint8_t> pattern = randomElements(
        std::min<size_t>(count, size_t(1) << 22), ref.type, scale, rng);
    Expected<Buffer> b = Buffer::make(device, tensors[t].bytes);
    if (!b)
      return b.takeError();
    if (Status s = b->tile(pattern))
      return s;
    if (Status s = model.bindTensor(t, b->pointer(),
                                    static_cast<size_t>(tensors[t].bytes)))
      return s;
    keep.push_back(std::move(b.value()));
    ++bound;
  }
  return Status::success();
}

/// The weight bytes a layer reads for T tokens at decode: every weight
/// bound to a routed-expert slot of the expert kernels (codes and scales
/// as stored: the quantized bytes) counts per expert touched, min(T * K, E)
/// experts (each selected expert read once), every other weight (router,
/// shared experts) in full. The memory floor is this over the bandwidth.
struct DecodeBytes {
  double perExpert = 0, other = 0;
  int64_t experts = 0, k = 0;
  double at(int64_t tokens) const {
    int64_t touched = std::min<int64_t>(tokens * std::max<int64_t>(k, 1),
                                        std::max<int64_t>(experts, 1));
    return perExpert * static_cast<double>(touched) + other;
  }
};

DecodeBytes decodeBytes(const moe::LayerPlan &plan) {
  DecodeBytes d;
  if (!plan.routings.empty()) {
    d.experts = plan.routings.front().experts;
    if (plan.routings.front().ids >= 0)
      d.k = plan.values[plan.routings.front().ids].perToken;
  }
  std::vector<int> kind(plan.weights.size(), 0); // 1 routed, 2 other
  auto routedSlot = [](size_t slot) {
    return (slot >= MOE_EXPERTS_SLOT_ROUTED_GATE &&
            slot <= MOE_EXPERTS_SLOT_ROUTED_DOWN_BIAS) ||
           (slot >= MOE_EXPERTS_SLOT_ROUTED_GATE_B &&
            slot <= MOE_EXPERTS_SLOT_ROUTED_DOWN_B) ||
           (slot >= MOE_EXPERTS_SLOT_ROUTED_GATE_SCALE &&
            slot <= MOE_EXPERTS_SLOT_ROUTED_DOWN_SCALE);
  };
  for (const moe::Launch &l : plan.launches) {
    bool experts = l.kernel.rfind("moe_experts_", 0) == 0;
    for (size_t i = 0; i < l.args.size(); ++i)
      if (l.args[i].kind == moe::Binding::Weight)
        kind[l.args[i].weight] =
            experts && routedSlot(i) ? 1 : std::max(kind[l.args[i].weight], 2);
  }
  for (size_t w = 0; w < plan.weights.size(); ++w) {
    int64_t n = 1;
    for (int64_t s : plan.weights[w].shape)
      n *= s;
    double bytes =
        static_cast<double>(moe::storageBytes(plan.weights[w].type, n));
    if (kind[w] == 1 && d.experts > 0)
      d.perExpert += bytes / static_cast<double>(d.experts);
    else
      d.other += bytes;
  }
  return d;
}

/// The relative max error of `y` against DIR/y_L_T.f32, or -1 without one.
double checkOutput(const std::string &dir, int64_t layer, int64_t tokens,
                   const std::vector<float> &y) {
  std::vector<float> ref =
      readRaw(dir + "/y_" + std::to_string(layer) + "_" +
                  std::to_string(tokens) + ".f32",
              y.size());
  if (ref.empty())
    return -1;
  double mx = 0, diff = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    mx = std::max(mx, std::fabs(double(ref[i])));
    diff = std::max(diff, std::fabs(double(ref[i]) - y[i]));
  }
  return diff / std::max(mx, 1e-30);
}

/// Milliseconds of `repeat` timed runs (after warm-up) of one layer on the
/// device, each between two CUDA events, inputs rotated among 4 buffers.
Expected<std::vector<double>> timeOnDevice(moe::Model &m,
                                           const moe::runtime::Device &device,
                                           int64_t layer, int64_t tokens,
                                           int repeat, std::mt19937 &rng) {
  Expected<std::string> act = m.activationType(layer);
  if (!act)
    return act.takeError();
  std::optional<moe::ElementType> parsed = moe::runtime::parseElementType(*act);
  if (!parsed)
    return Status::error("layer " + std::to_string(layer) +
                         ": unknown activation type " + *act);
  moe::ElementType type = *parsed;
  size_t count = static_cast<size_t>(tokens * m.hidden(layer).value());
  size_t bytes = count * moe::elementSize(type);
  std::vector<Buffer> xs;
  for (int i = 0; i < 4; ++i) {
    Expected<Buffer> b = Buffer::make(&device, bytes);
    if (!b)
      return b.takeError();
    if (Status s = b->write(randomElements(count, type, 1.0f, rng).data(),
                            bytes, 0))
      return s;
    xs.push_back(std::move(b.value()));
  }
  Expected<Buffer> y = Buffer::make(&device, bytes);
  if (!y)
    return y.takeError();
  Expected<moe::runtime::Event> start = device.createEvent();
  Expected<moe::runtime::Event> end = device.createEvent();
  if (!start || !end)
    return (!start ? start.takeError() : end.takeError());
  std::vector<double> ms;
  for (int r = 0; r < repeat + 3; ++r) {
    if (Status s = start->record())
      return s;
    if (Status s = m.runLayerOnDevice(layer, xs[r % xs.size()].pointer(),
                                      y->pointer(), tokens, nullptr))
      return s;
    if (Status s = end->record())
      return s;
    if (Status s = end->synchronize())
      return s;
    Expected<float> elapsed = moe::runtime::Event::elapsedMs(*start, *end);
    if (!elapsed)
      return elapsed.takeError();
    if (r >= 3) // Warm-up runs are not timed.
      ms.push_back(*elapsed);
  }
  return ms;
}
} // namespace

int main(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    const bool takesValue = a == "--backend" || a == "--tokens" ||
                            a == "--repeat" || a == "--check" ||
                            a == "--json" || a == "--random-weights" ||
                            a == "--bandwidth";
    const char *v = takesValue && i + 1 < argc ? argv[++i] : nullptr;
    if (takesValue && !v)
      return fail(a + " needs a value"), usage();
    if (a == "--help" || a == "-h")
      return help();
    if (a == "--backend") {
      o.backend = v;
      if (o.backend != "auto" && o.backend != "cuda" && o.backend != "emu")
        return fail("unknown --backend '" + o.backend +
                    "' (expected auto, cuda or emu)");
    } else if (a == "--tokens") {
      o.tokensList = v;
    } else if (a == "--repeat") {
      char *endp = nullptr;
      long long n = std::strtoll(v, &endp, 10);
      if (!*v || *endp || n < 1 || n > 1000000)
        return fail(std::string("bad --repeat '") + v +
                    "' (expected an integer from 1 to 1000000)");
      o.repeat = static_cast<int>(n);
    } else if (a == "--check") {
      o.check = v;
    } else if (a == "--json") {
      o.json = v;
    } else if (a == "--bandwidth") {
      char *endp = nullptr;
      double g = std::strtod(v, &endp);
      if (!*v || *endp || !(g > 0) || !std::isfinite(g))
        return fail(std::string("bad --bandwidth '") + v +
                    "' (expected GB/s, a positive number)");
      o.bandwidth = g;
    } else if (a == "--random-weights") {
      char *endp = nullptr;
      unsigned long long n = std::strtoull(v, &endp, 10);
      if (!*v || *endp || *v == '-' || n > 0xffffffffull)
        return fail(std::string("bad --random-weights '") + v +
                    "' (expected a seed from 0 to 4294967295)");
      o.randomWeights = true;
      o.seed = static_cast<unsigned>(n);
    } else if (!a.empty() && a[0] == '-') {
      return fail("unknown option '" + a + "' (moe-bench --help lists them)"),
             usage();
    } else if (!o.pkg.empty()) {
      return fail("more than one package given ('" + o.pkg + "' and '" + a +
                  "')"),
             usage();
    } else {
      o.pkg = a;
    }
  }
  if (o.pkg.empty())
    return usage();
  std::vector<int64_t> tokenCounts;
  {
    std::stringstream list(o.tokensList);
    std::string item;
    while (std::getline(list, item, ',')) {
      char *endp = nullptr;
      long long t = std::strtoll(item.c_str(), &endp, 10);
      if (item.empty() || *endp || t < 1)
        return fail("bad token count '" + item + "' in --tokens " +
                    o.tokensList + " (expected positive integers)");
      tokenCounts.push_back(t);
    }
  }
  moe::runtime::OpenPackageOptions openOptions;
  openOptions.verifyHashes = false; // The model opens it again, checked.
  Expected<moe::runtime::LoadedPackage> package =
      moe::runtime::openPackage(o.pkg, openOptions);
  if (!package)
    return fail(package.message());
  moe::ModelOptions options;
  options.backend = o.backend;
  auto model = moe::Model::open(o.pkg, options);
  if (!model)
    return fail(model.message());
  moe::Model &m = *model.value();
  std::unique_ptr<moe::runtime::Device> device;
  if (m.backend() == "cuda") {
    Expected<moe::runtime::Device> d = moe::runtime::Device::open(0);
    if (!d)
      return fail(d.message());
    device = std::make_unique<moe::runtime::Device>(std::move(d.value()));
  }
  std::vector<Buffer> weights;
  int bound = 0;
  if (o.randomWeights)
    if (Status s = bindRandomWeights(m, *package, device.get(), o.seed,
                                     weights, bound))
      return fail(s.message());
  std::printf("moe-bench: %s on %s (%s), %s%s\n", o.pkg.c_str(),
              m.backend().c_str(), m.description().c_str(),
              device ? "GPU time (CUDA events)" : "host time",
              bound ? (", " + std::to_string(bound) +
                       " tensors bound to random weights")
                          .c_str()
                    : "");
  std::printf("%8s %8s %12s %12s %12s %12s %10s\n", "layer", "tokens",
              "median us", "min us", "max rel err", "weight MB", "floor us");
  std::string json = "[";
  int status = 0;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t tokens : tokenCounts) {
    for (int64_t layer : m.layers()) {
      int64_t h = m.hidden(layer).value();
      std::vector<float> x(tokens * h), y(tokens * h);
      double err = -1;
      if (!o.check.empty()) {
        x = readRaw(o.check + "/x_" + std::to_string(tokens) + ".f32",
                    tokens * h);
        if (!x.empty()) {
          if (Status s = m.runLayer(layer, x.data(), tokens, y.data()))
            return fail(s.message());
          err = checkOutput(o.check, layer, tokens, y);
          if (err > 1e-2)
            status = 1;
        }
        x.resize(tokens * h);
      }
      std::vector<double> ms;
      if (device) {
        Expected<std::vector<double>> timed =
            timeOnDevice(m, *device, layer, tokens, o.repeat, rng);
        if (!timed)
          return fail(timed.message());
        ms = std::move(timed.value());
      } else {
        for (float &v : x)
          v = normal(rng);
        for (int r = 0; r < o.repeat + 2; ++r) {
          if (Status s = m.runLayer(layer, x.data(), tokens, y.data()))
            return fail(s.message());
          if (r >= 2) // Warm-up runs are not timed.
            ms.push_back(m.lastMilliseconds());
        }
      }
      std::sort(ms.begin(), ms.end());
      double median = ms[ms.size() / 2], best = ms[0];
      char errText[32] = "-";
      if (err >= 0)
        std::snprintf(errText, sizeof errText, "%.3g", err);
      // The decode floor from the bytes as stored (quantized codes and
      // scales for block-scaled experts).
      double weightBytes = 0;
      for (const moe::LayerPlan &lp : package->plan().layers)
        if (lp.layer == layer && lp.target.empty())
          weightBytes = decodeBytes(lp).at(tokens);
      char floorText[32] = "-";
      if (o.bandwidth > 0)
        std::snprintf(floorText, sizeof floorText, "%.1f",
                      weightBytes / (o.bandwidth * 1e3));
      std::printf("%8lld %8lld %12.1f %12.1f %12s %12.3f %10s\n",
                  static_cast<long long>(layer),
                  static_cast<long long>(tokens), median * 1e3, best * 1e3,
                  errText, weightBytes / 1e6, floorText);
      char row[384];
      std::snprintf(row, sizeof row,
                    "%s\n {\"layer\": %lld, \"tokens\": %lld, \"median_us\": "
                    "%.3f, \"min_us\": %.3f, \"max_rel_err\": %s, "
                    "\"timing\": \"%s\", \"weight_bytes\": %.0f, "
                    "\"floor_us\": %s}",
                    json.size() > 1 ? "," : "", static_cast<long long>(layer),
                    static_cast<long long>(tokens), median * 1e3, best * 1e3,
                    err >= 0 ? errText : "null",
                    device ? "cuda-events" : "host", weightBytes,
                    o.bandwidth > 0 ? floorText : "null");
      json += row;
    }
  }
  json += "\n]\n";
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << json;
    if (!out)
      return fail("cannot write " + o.json);
  }
  return status;
}
