//===- WeightStore.cpp - Tensors of a Hugging Face model folder -----------===//
//
// Part of the moe-opt project.
//
//===----------------------------------------------------------------------===//

#include "moe/lib/Weights/WeightStore.h"
#include "moe/lib/Weights/InputFile.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <map>
#include <set>

using namespace llvm;

namespace moe {

static std::string joinPath(StringRef dir, StringRef file) {
  SmallString<256> path(dir);
  sys::path::append(path, file);
  return std::string(path);
}

Expected<std::unique_ptr<WeightStore>> WeightStore::open(StringRef dir) {
  sys::fs::file_status status;
  if (std::error_code ec = sys::fs::status(dir, status))
    return createStringError(dir +
                             ": cannot open model folder: " + ec.message());
  if (!sys::fs::is_directory(status))
    return createStringError(dir + ": not a directory (expected a Hugging "
                                   "Face model folder)");

  std::unique_ptr<WeightStore> store(new WeightStore());
  store->dir = dir.str();

  std::string indexPath = joinPath(dir, kSafetensorsIndexName);
  if (sys::fs::exists(indexPath)) {
    store->index = indexPath;
    if (Error error = store->loadIndex())
      return std::move(error);
    return std::move(store);
  }

  std::string single = joinPath(dir, kSafetensorsSingleName);
  if (Error e = checkRegularFile(single, "safetensors file"))
    return std::move(e);
  if (sys::fs::is_regular_file(single)) {
    store->shards.push_back(single);
    return std::move(store);
  }

  std::error_code ec;
  for (sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec)) {
    StringRef path = it->path();
    if (path.ends_with(".safetensors") && sys::fs::is_regular_file(path))
      store->shards.push_back(path.str());
  }
  if (ec)
    return createStringError(dir +
                             ": cannot list the model folder: " + ec.message());
  if (store->shards.empty())
    return createStringError(
        dir + ": no weights found: expected " + kSafetensorsIndexName + ", " +
        kSafetensorsSingleName + " or other *.safetensors files");
  llvm::sort(store->shards);
  return std::move(store);
}

Error WeightStore::loadIndex() {
  auto fail = [&](const Twine &message) {
    return createStringError(index + ": " + message);
  };
  if (Error e = checkRegularFile(index, "safetensors index"))
    return e;
  ErrorOr<std::unique_ptr<MemoryBuffer>> buffer =
      MemoryBuffer::getFile(index, /*IsText=*/true);
  if (!buffer)
    return fail("cannot read the index: " + buffer.getError().message());
  Expected<json::Value> root = parseBoundedJson((*buffer)->getBuffer());
  if (!root)
    return fail("invalid JSON: " + toString(root.takeError()));
  const json::Object *object = root->getAsObject();
  if (!object)
    return fail("the index is not a JSON object (expected {\"metadata\": "
                "..., \"weight_map\": {...}})");
  const json::Value *mapValue = object->get("weight_map");
  if (!mapValue)
    return fail("field 'weight_map' is missing");
  const json::Object *map = mapValue->getAsObject();
  if (!map)
    return fail("field 'weight_map' is not an object (expected a map from "
                "tensor name to shard file)");
  if (map->empty())
    return fail("no weights: field 'weight_map' is empty");

  // Sorted so that the first tensor named for a missing shard is stable.
  std::map<std::string, std::string> entries;
  for (const auto &[key, value] : *map) {
    std::optional<StringRef> file = value.getAsString();
    if (!file)
      return fail("field 'weight_map': the shard of tensor '" + StringRef(key) +
                  "' is not a string");
    // Shards are confined to the model folder: no absolute path, no '..'.
    bool escapes = llvm::any_of(
        make_range(sys::path::begin(*file), sys::path::end(*file)),
        [](StringRef part) { return part == ".."; });
    if (file->empty() || sys::path::is_absolute(*file) || escapes)
      return fail("field 'weight_map': tensor '" + StringRef(key) +
                  "' names shard '" + *file +
                  "', expected a file name inside the model folder (no "
                  "absolute path, no '..')");
    entries[StringRef(key).str()] = file->str();
  }
  std::set<std::string> shardSet;
  for (const auto &[name, file] : entries) {
    std::string path = joinPath(dir, file);
    if (shardSet.insert(path).second && !sys::fs::is_regular_file(path))
      return fail("tensor '" + name + "' is mapped to shard '" + file +
                  "', which does not exist in " + dir);
    weightMap[name] = path;
  }
  shards.assign(shardSet.begin(), shardSet.end());
  return Error::success();
}

Expected<const SafetensorsFile *> WeightStore::shard(StringRef path) {
  auto it = opened.find(path);
  if (it != opened.end())
    return it->second.get();
  Expected<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  const SafetensorsFile *result = file->get();
  opened[path] = std::move(*file);
  return result;
}

Expected<TensorLocation> WeightStore::findInShard(StringRef shardPath,
                                                  StringRef name) {
  Expected<const SafetensorsFile *> file = shard(shardPath);
  if (!file)
    return file.takeError();
  const TensorInfo *info = (*file)->lookup(name);
  if (!info)
    return createStringError(index + " maps tensor '" + name + "' to shard '" +
                             sys::path::filename(shardPath) +
                             "', but that shard has no such tensor");
  return TensorLocation{shardPath.str(), *info};
}

Expected<TensorLocation> WeightStore::find(StringRef name) {
  if (!index.empty()) {
    auto it = weightMap.find(name);
    if (it == weightMap.end())
      return createStringError("tensor '" + name + "' not found in " + dir +
                               " (looked in " + kSafetensorsIndexName + ")");
    return findInShard(it->second, name);
  }
  std::string looked;
  for (const std::string &path : shards) {
    Expected<const SafetensorsFile *> file = shard(path);
    if (!file)
      return file.takeError();
    if (const TensorInfo *info = (*file)->lookup(name))
      return TensorLocation{path, *info};
    if (!looked.empty())
      looked += ", ";
    looked += sys::path::filename(path).str();
  }
  return createStringError("tensor '" + name + "' not found in " + dir +
                           " (looked in " + looked + ")");
}

Expected<ArrayRef<uint8_t>> WeightStore::rawData(StringRef name) {
  Expected<TensorLocation> location = find(name);
  if (!location)
    return location.takeError();
  Expected<const SafetensorsFile *> file = shard(location->path);
  if (!file)
    return file.takeError();
  return (*file)->rawData(location->info);
}

Expected<std::vector<float>> WeightStore::readF32(StringRef name) {
  Expected<TensorLocation> location = find(name);
  if (!location)
    return location.takeError();
  Expected<const SafetensorsFile *> file = shard(location->path);
  if (!file)
    return file.takeError();
  return (*file)->readF32(name);
}

Expected<std::vector<std::string>> WeightStore::tensorNames() {
  std::vector<std::string> names;
  if (!index.empty()) {
    for (const auto &entry : weightMap)
      names.push_back(entry.getKey().str());
  } else {
    std::set<std::string> unique;
    for (const std::string &path : shards) {
      Expected<const SafetensorsFile *> file = shard(path);
      if (!file)
        return file.takeError();
      for (const TensorInfo &info : (*file)->tensors())
        unique.insert(info.name);
    }
    names.assign(unique.begin(), unique.end());
  }
  llvm::sort(names);
  return names;
}

} // namespace moe
