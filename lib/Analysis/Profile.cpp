//===- Profile.cpp - Calibration profiles of MoE layers -------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Analysis/Profile.h"

#include "moe/lib/Weights/Safetensors.h"
#include "moe/runtime/KernelCache.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/Twine.h"

#include <cmath>
#include <cstring>

using namespace llvm;

namespace moe {

namespace {

Error makeError(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// One statistic of a layer: its name, where it lives, and its shape.
struct Field {
  StringLiteral name;
  std::vector<double> LayerProfile::*member;
  /// Shape from the layer's sizes (E, H, E').
  std::vector<int64_t> (*shape)(const LayerProfile &);
  /// Required in every profile (the others are optional).
  bool required;
  /// A count or mass: must not be negative.
  bool nonNegative;
  /// A mean over tokens (not a sum): merged re-weighted by tokens.
  bool mean;
};

std::vector<int64_t> shapeE(const LayerProfile &l) { return {l.experts}; }
std::vector<int64_t> shapeEE(const LayerProfile &l) {
  return {l.experts, l.experts};
}
std::vector<int64_t> shapeEN(const LayerProfile &l) {
  return {l.experts, l.nextExperts};
}
std::vector<int64_t> shapeEH(const LayerProfile &l) {
  return {l.experts, l.hidden};
}
std::vector<int64_t> shapeHH(const LayerProfile &l) {
  return {l.hidden, l.hidden};
}

const Field kFields[] = {
    {"expert_count", &LayerProfile::expertCount, shapeE, true, true, false},
    {"gate_mass", &LayerProfile::gateMass, shapeE, true, false, false},
    {"coactivation", &LayerProfile::coactivation, shapeEE, true, true, false},
    // Absent (both) for a layer whose experts were merged.
    {"logit_gram", &LayerProfile::logitGram, shapeEE, false, false, false},
    {"logit_sum", &LayerProfile::logitSum, shapeE, false, false, false},
    {"output_norm_mass", &LayerProfile::outputNormMass, shapeE, true, false,
     false},
    {"transition", &LayerProfile::transition, shapeEN, false, true, false},
    {"expert_output_mean", &LayerProfile::expertOutputMean, shapeEH, false,
     false, true},
    {"input_gram", &LayerProfile::inputGram, shapeHH, false, false, false},
};

/// Upper bounds that keep a hostile header from asking for absurd sizes.
constexpr int64_t kMaxExperts = 1 << 16;
constexpr int64_t kMaxHidden = 1 << 16;
constexpr int64_t kMaxLayer = 1 << 16;

std::string tensorName(int64_t layer, StringRef field) {
  return ("layer." + Twine(layer) + "." + field).str();
}

int64_t product(ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

} // namespace

Expected<const LayerProfile *> Profile::layer(int64_t index,
                                              StringRef path) const {
  auto it = layers.find(index);
  if (it == layers.end())
    return makeError("profile '" + path + "' has no statistics of layer " +
                     Twine(index) + " (record it with moe-run " +
                     "--record-profile on that layer or --all-layers)");
  return &it->second;
}

std::string profileModelHash(StringRef bytes) {
  return runtime::Sha256::hex(std::string_view(bytes.data(), bytes.size()));
}

Expected<Profile> readProfile(StringRef path) {
  auto file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  const SafetensorsFile &st = **file;
  auto bad = [&](const Twine &what) {
    return makeError("profile '" + path + "': " + what);
  };

  const std::map<std::string, std::string> &meta = st.metadata();
  auto get = [&](StringRef key) -> std::optional<std::string> {
    auto it = meta.find(key.str());
    if (it == meta.end())
      return std::nullopt;
    return it->second;
  };
  if (get("format") != std::optional<std::string>(Profile::kFormat.str()))
    return bad("__metadata__ field 'format' must be \"moe-profile\"");
  if (get("version") != std::optional<std::string>(Profile::kVersion.str()))
    return bad("__metadata__ field 'version' must be \"1\" (got \"" +
               get("version").value_or("<missing>") + "\")");
  Profile profile;
  if (auto model = get("model"); model && !model->empty())
    profile.model = *model;
  else
    return bad("__metadata__ field 'model' (the model's hash) is missing");
  auto tokens = get("tokens");
  if (!tokens || !to_integer(*tokens, profile.tokens, 10) ||
      profile.tokens < 0 || profile.tokens > (int64_t(1) << 50))
    return bad("__metadata__ field 'tokens' must be a non-negative integer");

  // Sizes come from the tensors themselves: E from expert_count, E' from
  // transition, H from expert_output_mean or input_gram.
  for (const TensorInfo &info : st.tensors()) {
    StringRef name = info.name;
    if (!name.consume_front("layer."))
      continue;
    auto [index, field] = name.split('.');
    int64_t layer;
    if (!to_integer(index, layer, 10) || layer < 0 || layer > kMaxLayer)
      return bad("tensor '" + info.name + "': the layer index must be an " +
                 "integer in [0, " + Twine(kMaxLayer) + "]");
    bool known = false;
    for (const Field &f : kFields)
      known |= field == f.name;
    if (!known)
      continue; // a statistic of a later version
    LayerProfile &l = profile.layers[layer];
    if (info.shape.empty())
      continue;
    if (field == "expert_count")
      l.experts = info.shape[0];
    else if (field == "transition" && info.shape.size() == 2)
      l.nextExperts = info.shape[1];
    else if ((field == "expert_output_mean" || field == "input_gram") &&
             info.shape.size() == 2)
      l.hidden = info.shape[1];
  }
  for (auto &[index, l] : profile.layers) {
    if (l.experts < 1 || l.experts > kMaxExperts)
      return bad("layer " + Twine(index) + ": tensor '" +
                 tensorName(index, "expert_count") +
                 "' must be present with 1 to " + Twine(kMaxExperts) +
                 " experts");
    if (l.nextExperts < 0 || l.nextExperts > kMaxExperts ||
        l.hidden < 0 || l.hidden > kMaxHidden)
      return bad("layer " + Twine(index) + ": absurd tensor sizes");
    for (const Field &f : kFields) {
      std::string name = tensorName(index, f.name);
      const TensorInfo *info = st.lookup(name);
      if (!info) {
        if (f.required)
          return bad("tensor '" + name + "' is missing");
        continue;
      }
      std::vector<int64_t> want = f.shape(l);
      if (info->dtype != DType::F64)
        return bad("tensor '" + name + "' must be F64, not " +
                   dtypeName(info->dtype));
      if (info->shape != want)
        return bad("tensor '" + name + "' has shape " +
                   formatShape(info->shape) + " but " + formatShape(want) +
                   " was expected");
      ArrayRef<uint8_t> raw = st.rawData(*info);
      std::vector<double> &values = l.*(f.member);
      values.resize(product(want));
      if (raw.size() != values.size() * sizeof(double))
        return bad("tensor '" + name + "' has " + Twine(raw.size()) +
                   " bytes, not " + Twine(values.size() * sizeof(double)));
      std::memcpy(values.data(), raw.data(), raw.size());
      for (size_t i = 0; i < values.size(); ++i) {
        if (!std::isfinite(values[i]))
          return bad("tensor '" + name + "' element " + Twine(i) +
                     " is not finite");
        if (f.nonNegative && values[i] < 0)
          return bad("tensor '" + name + "' element " + Twine(i) +
                     " is negative (a count)");
      }
    }
    // A merged layer records neither; any other layer both.
    if (l.logitGram.empty() != l.logitSum.empty())
      return bad(
          "tensor '" +
          tensorName(index, l.logitGram.empty() ? "logit_gram" : "logit_sum") +
          "' is missing (logit_gram and logit_sum come together; "
          "a layer with merged experts has neither)");
  }
  return profile;
}

Error writeProfile(const Profile &profile, StringRef path) {
  SafetensorsWriter writer;
  writer.setMetadata("format", Profile::kFormat);
  writer.setMetadata("version", Profile::kVersion);
  writer.setMetadata("model", profile.model);
  writer.setMetadata("tokens", std::to_string(profile.tokens));
  for (const auto &[index, l] : profile.layers) {
    for (const Field &f : kFields) {
      const std::vector<double> &values = l.*(f.member);
      if (values.empty()) {
        if (f.required)
          return makeError("profile of layer " + Twine(index) +
                           " lacks its '" + f.name + "' statistic");
        continue;
      }
      std::vector<int64_t> shape = f.shape(l);
      if (int64_t(values.size()) != product(shape))
        return makeError("profile of layer " + Twine(index) + ": '" +
                         f.name + "' holds " + Twine(values.size()) +
                         " values for shape " + formatShape(shape));
      ArrayRef<uint8_t> bytes(reinterpret_cast<const uint8_t *>(values.data()),
                              values.size() * sizeof(double));
      if (Error e = writer.addTensor(tensorName(index, f.name), DType::F64,
                                     shape, bytes))
        return e;
    }
  }
  return writer.write(path);
}

Error mergeProfiles(Profile &into, const Profile &more, StringRef moreName) {
  auto bad = [&](const Twine &what) {
    return makeError("cannot append profile '" + moreName + "': " + what);
  };
  if (into.model != more.model)
    return bad("it was recorded on another model (hash " + more.model +
               ", expected " + into.model + ")");
  if (into.layers.size() != more.layers.size())
    return bad("it has " + Twine(more.layers.size()) + " layers, not " +
               Twine(into.layers.size()));
  int64_t total = into.tokens + more.tokens;
  for (auto &[index, a] : into.layers) {
    auto it = more.layers.find(index);
    if (it == more.layers.end())
      return bad("it has no statistics of layer " + Twine(index));
    const LayerProfile &b = it->second;
    // Which statistics were recorded first: they decide the sizes known.
    for (const Field &f : kFields)
      if ((a.*(f.member)).empty() != (b.*(f.member)).empty())
        return bad("layer " + Twine(index) + ": it " +
                   ((b.*(f.member)).empty() ? "lacks" : "has") +
                   " the statistic '" + f.name + "' and the profile it is " +
                   "added to " +
                   ((a.*(f.member)).empty() ? "does not" : "does") +
                   (f.name.starts_with("logit_")
                        ? " (a layer with merged experts has no router-logit "
                          "statistics: record on one form of the model)"
                        : " (record with the same options)"));
    if (a.experts != b.experts || a.nextExperts != b.nextExperts ||
        a.hidden != b.hidden)
      return bad("layer " + Twine(index) + " has other sizes (experts " +
                 Twine(b.experts) + ", next layer's " + Twine(b.nextExperts) +
                 ", hidden " + Twine(b.hidden) + "; expected " +
                 Twine(a.experts) + ", " + Twine(a.nextExperts) + ", " +
                 Twine(a.hidden) + ")");
    for (const Field &f : kFields) {
      std::vector<double> &x = a.*(f.member);
      const std::vector<double> &y = b.*(f.member);
      if (x.size() != y.size())
        return bad("layer " + Twine(index) + " statistic '" + f.name +
                   "' has " + Twine(y.size()) + " values, not " +
                   Twine(x.size()));
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = f.mean ? (total ? (x[i] * into.tokens + y[i] * more.tokens) /
                                     total
                               : 0.0)
                      : x[i] + y[i];
    }
  }
  into.tokens = total;
  return Error::success();
}

} // namespace moe
