//===- Compiler.cpp - CUDA C++ to cubin with NVRTC ------------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Compiler.h"

#include "moe/runtime/CudaApi.h"

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <regex>

namespace moe::runtime {
namespace {

std::atomic<uint64_t> compileCount{0};

bool isFile(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string parentDir(const std::string &path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

/// Destroys an NVRTC program on every path out of compileKernels.
class ProgramGuard {
public:
  ProgramGuard(const NvrtcApi &api) : api_(api) {}
  ~ProgramGuard() {
    if (program)
      api_.nvrtcDestroyProgram(&program);
  }
  ProgramGuard(const ProgramGuard &) = delete;
  ProgramGuard &operator=(const ProgramGuard &) = delete;
  NvrtcProgram program = nullptr;

private:
  const NvrtcApi &api_;
};

std::string archList(const std::vector<int> &archs) {
  std::string out;
  for (int a : archs)
    out += (out.empty() ? "sm_" : ", sm_") + std::to_string(a);
  return out;
}

bool startsWith(const std::string &s, const char *prefix) {
  return s.rfind(prefix, 0) == 0;
}

/// The first integer right before `suffix` in `line` (as in "10 registers").
bool numberBefore(const std::string &line, const std::string &suffix,
                  int64_t &out) {
  size_t at = line.find(suffix);
  if (at == std::string::npos)
    return false;
  size_t end = at;
  while (end > 0 && line[end - 1] == ' ')
    --end;
  size_t begin = end;
  while (begin > 0 && line[begin - 1] >= '0' && line[begin - 1] <= '9')
    --begin;
  if (begin == end)
    return false;
  out = std::strtoll(line.substr(begin, end - begin).c_str(), nullptr, 10);
  return true;
}

/// The text between the first pair of single quotes after `marker`.
std::string quotedAfter(const std::string &line, const std::string &marker,
                        size_t *endPos = nullptr) {
  size_t at = line.find(marker);
  if (at == std::string::npos)
    return {};
  size_t open = line.find('\'', at + marker.size());
  if (open == std::string::npos)
    return {};
  size_t close = line.find('\'', open + 1);
  if (close == std::string::npos)
    return {};
  if (endPos)
    *endPos = close + 1;
  return line.substr(open + 1, close - open - 1);
}

} // namespace

uint64_t nvrtcCompileCount() { return compileCount.load(); }

const char *kernelAbiHeaderText() {
  static const char text[] =
#include "KernelABIText.inc"
      ;
  return text;
}

const KernelResources *
CompiledModule::findResources(const std::string &name) const {
  auto lowered = loweredNames.find(name);
  const std::string &symbol =
      lowered == loweredNames.end() ? name : lowered->second;
  for (const KernelResources &r : resources)
    if (r.name == symbol)
      return &r;
  return nullptr;
}

Expected<std::string> findCudaIncludeDir() {
  std::vector<std::string> tried;
  auto consider = [&](const std::string &dir) {
    if (dir.empty())
      return false;
    tried.push_back(dir);
    return isFile(dir + "/cuda_bf16.h") || isFile(dir + "/cuda_runtime.h");
  };
  for (const char *var : {"CUDA_HOME", "CUDA_PATH"}) {
    const char *value = std::getenv(var);
    if (value && *value && consider(std::string(value) + "/include"))
      return std::string(value) + "/include";
  }
  if (Expected<std::shared_ptr<const NvrtcApi>> api = nvrtcApi()) {
    if (!(*api)->libraryFile.empty()) {
      std::string dir = parentDir(parentDir((*api)->libraryFile)) + "/include";
      if (consider(dir))
        return dir;
    }
  }
  if (consider("/usr/local/cuda/include"))
    return std::string("/usr/local/cuda/include");
  std::string list;
  for (const std::string &dir : tried)
    list += "\n  " + dir;
  return Status::error("cannot find the CUDA headers (cuda_bf16.h); tried:" +
                       list + "\nset CUDA_HOME to the CUDA toolkit");
}

Status validateArch(const std::string &arch, const NvrtcApi *nvrtc) {
  static const std::regex form("(sm|compute)_([0-9]{2,3})([af]?)");
  std::smatch match;
  if (!std::regex_match(arch, match, form))
    return Status::error(
        "invalid GPU architecture '" + arch +
        "': expected sm_XX, sm_XXa, sm_XXf or compute_XX (for example "
        "sm_90a for the H100 and H200)");
  // The kernels use bf16 tensor-core instructions (mma.sync m16n8k16 with
  // bf16 operands) and bf16 conversions, which start with sm_80: refused
  // here rather than through pages of ptxas errors.
  if (std::stoi(match[2].str()) < 80)
    return Status::error("GPU architecture '" + arch +
                         "' is not supported: the kernels need sm_80 or "
                         "newer (bf16 tensor-core instructions)");
  if (!nvrtc)
    return Status::success();
  std::vector<int> supported = nvrtc->supportedArchs();
  if (supported.empty())
    return Status::success();
  int number = std::stoi(match[2].str());
  for (int a : supported)
    if (a == number)
      return Status::success();
  auto [major, minor] = nvrtc->version();
  return Status::error("unknown GPU architecture '" + arch + "': NVRTC " +
                       std::to_string(major) + "." + std::to_string(minor) +
                       " compiles for " + archList(supported) +
                       " (with an optional 'a' or 'f' suffix where the "
                       "architecture has one)");
}

std::vector<std::string> nvrtcOptions(const CompileRequest &request) {
  std::vector<std::string> options;
  options.push_back("--gpu-architecture=" + request.arch);
  options.push_back("-std=c++17");
  if (Expected<std::string> include = findCudaIncludeDir())
    options.push_back("--include-path=" + *include);
  // ptxas runs only for a real architecture; its report fills
  // CompiledModule::resources.
  if (startsWith(request.arch, "sm_"))
    options.push_back("--ptxas-options=-v");
  options.push_back("-lineinfo");
  for (const std::string &o : request.extraOptions)
    options.push_back(o);
  return options;
}

std::vector<KernelResources> parsePtxasReport(const std::string &log) {
  std::vector<KernelResources> out;
  // Indices into `out`: the kernel whose "Used N registers" line comes
  // next, and the function whose "bytes stack frame" line comes next.
  long entry = -1, properties = -1;
  auto indexOf = [&](const std::string &name) -> long {
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].name == name)
        return static_cast<long>(i);
    KernelResources r;
    r.name = name;
    out.push_back(r);
    return static_cast<long>(out.size() - 1);
  };

  size_t pos = 0;
  while (pos < log.size()) {
    size_t eol = log.find('\n', pos);
    if (eol == std::string::npos)
      eol = log.size();
    std::string line = log.substr(pos, eol - pos);
    pos = eol + 1;
    if (!startsWith(line, "ptxas"))
      continue;

    size_t after = 0;
    if (line.find("Compiling entry function") != std::string::npos) {
      std::string name = quotedAfter(line, "Compiling entry function", &after);
      if (name.empty())
        continue;
      entry = indexOf(name);
      out[entry].isEntry = true;
      out[entry].arch = quotedAfter(line.substr(after), "for");
      continue;
    }
    const std::string propertiesMarker = "Function properties for ";
    if (size_t at = line.find(propertiesMarker); at != std::string::npos) {
      std::string name = line.substr(at + propertiesMarker.size());
      while (!name.empty() && (name.back() == ' ' || name.back() == '\r'))
        name.pop_back();
      properties = name.empty() ? -1 : indexOf(name);
      continue;
    }
    int64_t value = 0;
    if (line.find("bytes stack frame") != std::string::npos &&
        properties >= 0) {
      KernelResources &r = out[properties];
      if (numberBefore(line, "bytes stack frame", value))
        r.stackFrameBytes = value;
      if (numberBefore(line, "bytes spill stores", value))
        r.spillStoresBytes = value;
      if (numberBefore(line, "bytes spill loads", value))
        r.spillLoadsBytes = value;
      continue;
    }
    if (line.find("Used ") != std::string::npos &&
        line.find("registers") != std::string::npos && entry >= 0) {
      KernelResources &r = out[entry];
      if (numberBefore(line, "registers", value))
        r.registers = static_cast<int>(value);
      if (numberBefore(line, "barriers", value))
        r.barriers = static_cast<int>(value);
      if (numberBefore(line, "bytes smem", value))
        r.sharedBytes = value;
      if (numberBefore(line, "bytes cmem[0]", value))
        r.constantBytes = value;
      if (numberBefore(line, "bytes lmem", value))
        r.localBytes = value;
    }
  }
  return out;
}

Expected<CompiledModule> compileKernels(const NvrtcApi &nvrtc,
                                        const CompileRequest &request) {
  if (Status s = validateArch(request.arch, &nvrtc))
    return s;
  for (const std::string &o : request.extraOptions)
    if (startsWith(o, "--gpu-architecture") || startsWith(o, "-arch"))
      return Status::error("option '" + o +
                           "': give the architecture in "
                           "CompileRequest::arch, not as an extra option");

  auto start = std::chrono::steady_clock::now();
  std::vector<const char *> headerTexts, headerNames;
  for (const auto &[name, text] : request.headers) {
    headerNames.push_back(name.c_str());
    headerTexts.push_back(text.c_str());
  }
  if (!request.headers.count(kKernelAbiIncludeName)) {
    headerNames.push_back(kKernelAbiIncludeName);
    headerTexts.push_back(kernelAbiHeaderText());
  }
  ProgramGuard guard(nvrtc);
  NvrtcResult r = nvrtc.nvrtcCreateProgram(
      &guard.program, request.source.c_str(), request.sourceName.c_str(),
      static_cast<int>(headerTexts.size()), headerTexts.data(),
      headerNames.data());
  if (r != kNvrtcSuccess) {
    guard.program = nullptr;
    return Status::error("nvrtcCreateProgram failed for " +
                         request.sourceName + ": " + nvrtc.errorString(r));
  }
  for (const std::string &expr : request.nameExpressions) {
    r = nvrtc.nvrtcAddNameExpression(guard.program, expr.c_str());
    if (r != kNvrtcSuccess)
      return Status::error("nvrtcAddNameExpression failed for '" + expr +
                           "': " + nvrtc.errorString(r));
  }

  std::vector<std::string> options = nvrtcOptions(request);
  std::vector<const char *> optionPtrs;
  for (const std::string &o : options)
    optionPtrs.push_back(o.c_str());
  ++compileCount;
  NvrtcResult compiled = nvrtc.nvrtcCompileProgram(
      guard.program, static_cast<int>(optionPtrs.size()), optionPtrs.data());

  CompiledModule module;
  module.arch = request.arch;
  size_t logSize = 0;
  if (nvrtc.nvrtcGetProgramLogSize(guard.program, &logSize) == kNvrtcSuccess &&
      logSize > 1) {
    std::string log(logSize, '\0');
    if (nvrtc.nvrtcGetProgramLog(guard.program, log.data()) == kNvrtcSuccess)
      module.log = log.c_str(); // Drops the terminating NUL.
  }

  if (compiled != kNvrtcSuccess) {
    std::string message = "NVRTC could not compile " + request.sourceName +
                          " for " + request.arch + ": " +
                          nvrtc.errorString(compiled);
    if (compiled == kNvrtcErrorInvalidOption) {
      message += "\noptions:";
      for (const std::string &o : options)
        message += " " + o;
    }
    if (!module.log.empty())
      message += "\n" + module.log;
    if (Expected<std::string> include = findCudaIncludeDir(); !include)
      message += "\nnote: " + include.message();
    return Status::error(message);
  }

  size_t size = 0;
  if (nvrtc.nvrtcGetPTXSize(guard.program, &size) == kNvrtcSuccess &&
      size > 1) {
    std::string ptx(size, '\0');
    if ((r = nvrtc.nvrtcGetPTX(guard.program, ptx.data())) != kNvrtcSuccess)
      return Status::error("nvrtcGetPTX failed: " + nvrtc.errorString(r));
    ptx.resize(size - 1); // The PTX is NUL-terminated.
    module.ptx = std::move(ptx);
  }
  if (startsWith(request.arch, "sm_")) {
    if ((r = nvrtc.nvrtcGetCUBINSize(guard.program, &size)) != kNvrtcSuccess)
      return Status::error("nvrtcGetCUBINSize failed: " +
                           nvrtc.errorString(r));
    if (size == 0)
      return Status::error("NVRTC produced no cubin for " + request.arch);
    module.cubin.assign(size, '\0');
    if ((r = nvrtc.nvrtcGetCUBIN(guard.program, module.cubin.data())) !=
        kNvrtcSuccess)
      return Status::error("nvrtcGetCUBIN failed: " + nvrtc.errorString(r));
  }
  for (const std::string &expr : request.nameExpressions) {
    const char *lowered = nullptr;
    r = nvrtc.nvrtcGetLoweredName(guard.program, expr.c_str(), &lowered);
    if (r != kNvrtcSuccess || !lowered)
      return Status::error("nvrtcGetLoweredName failed for '" + expr +
                           "': " + nvrtc.errorString(r));
    module.loweredNames[expr] = lowered;
  }
  module.resources = parsePtxasReport(module.log);
  module.compileSeconds = std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start)
                              .count();
  return module;
}

Expected<CompiledModule> compileKernels(const CompileRequest &request) {
  Expected<std::shared_ptr<const NvrtcApi>> api = nvrtcApi();
  if (!api)
    return api.status();
  return compileKernels(**api, request);
}

Expected<CompiledModule>
compileKernels(const std::string &source,
               const std::map<std::string, std::string> &headers,
               const std::string &arch,
               const std::vector<std::string> &extraOptions) {
  CompileRequest request;
  request.source = source;
  request.headers = headers;
  request.arch = arch;
  request.extraOptions = extraOptions;
  return compileKernels(request);
}

} // namespace moe::runtime
