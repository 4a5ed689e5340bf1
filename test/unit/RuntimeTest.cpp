//===- RuntimeTest.cpp - Tests of the CUDA runtime library ----------------===//
//
// Part of moe-opt. NVRTC runs without a GPU, so compilation and the kernel
// cache are tested everywhere; the driver is tested for its failures here
// and, where a GPU is present, for a real launch (skipped otherwise).
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Compiler.h"
#include "moe/runtime/CudaApi.h"
#include "moe/runtime/Device.h"
#include "moe/runtime/KernelABI.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/Status.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

using namespace moe::runtime;
namespace fs = std::filesystem;

namespace {

/// Sets (or unsets, for null) an environment variable for one scope.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = std::getenv(name);
    hadOld_ = old != nullptr;
    if (old)
      old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (hadOld_)
      ::setenv(name_.c_str(), old_.c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

private:
  std::string name_, old_;
  bool hadOld_ = false;
};

/// A fresh empty folder, removed with its contents at the end.
class TempDir {
public:
  TempDir() {
    std::string pattern =
        (fs::temp_directory_path() / "moe-runtime-test-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

std::vector<std::string> filesIn(const std::string &dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto &entry : fs::directory_iterator(dir, ec))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string readBytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

bool contains(const std::string &haystack, const std::string &needle) {
  return haystack.find(needle) != std::string::npos;
}

/// NVRTC is part of the toolkit on every machine of the project; skip only
/// where no toolkit is installed at all, and fail if one is but cannot be
/// used.
#define REQUIRE_NVRTC()                                                        \
  do {                                                                         \
    Expected<std::shared_ptr<const NvrtcApi>> nvrtc_ = nvrtcApi();             \
    if (!nvrtc_) {                                                             \
      struct stat st_;                                                         \
      if (::stat("/usr/local/cuda/lib64/libnvrtc.so", &st_) != 0 &&            \
          !std::getenv("CUDA_HOME"))                                           \
        GTEST_SKIP() << "no CUDA toolkit: " << nvrtc_.message();               \
      FAIL() << nvrtc_.message();                                              \
    }                                                                          \
  } while (0)

// A templated bf16 kernel that includes cuda_bf16.h, a project header from
// the request, the kernel ABI header, and an extern "C" kernel taking
// MoEKernelArgs by value as every generated kernel does.
const char *kTemplatedSource = R"cuda(
#include <cuda_bf16.h>
#include "moe/runtime/KernelABI.h"
#include "tile.h"

namespace moe {
template <int Tile>
__global__ void scale(const __nv_bfloat16 *in, float *out, float factor) {
  __shared__ float staged[Tile];
  int i = blockIdx.x * Tile + threadIdx.x;
  staged[threadIdx.x] = __bfloat162float(in[i]);
  __syncthreads();
  out[i] = staged[(threadIdx.x + 1) % Tile] * factor;
}
} // namespace moe

extern "C" __global__ void moe_add_one(MoEKernelArgs args) {
  float *x = static_cast<float *>(args.buffers[0]);
  long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (i < args.num_tokens)
    x[i] = x[i] + 1.0f + (float)args.scalars[0];
}
)cuda";

CompileRequest templatedRequest() {
  CompileRequest r;
  r.source = kTemplatedSource;
  r.headers["tile.h"] = "#define MOE_TILE 64\n";
  r.arch = "sm_90a";
  r.nameExpressions = {"moe::scale<MOE_TILE>", "moe::scale<128>"};
  return r;
}

/// A compile function for cache tests that need no NVRTC: it records each
/// call and returns bytes that depend on the request.
struct FakeCompiler {
  std::shared_ptr<std::atomic<int>> calls =
      std::make_shared<std::atomic<int>>(0);
  int delayMs = 0;
  size_t cubinBytes = 4096;

  CompileFunction function() const {
    auto counter = calls;
    int delay = delayMs;
    size_t bytes = cubinBytes;
    return [counter, delay,
            bytes](const CompileRequest &r) -> Expected<CompiledModule> {
      ++*counter;
      if (delay)
        std::this_thread::sleep_for(std::chrono::milliseconds(delay));
      if (contains(r.source, "#error"))
        return Status::error("fake NVRTC: " + r.sourceName + "(1): error");
      CompiledModule m;
      m.arch = r.arch;
      m.cubin = std::string("\x7f" "ELF", 4) + std::string(bytes, 'c') + r.source;
      m.ptx = ".version 9.0\n" + r.source;
      m.log = "ptxas info    : Compiling entry function 'k' for '" + r.arch +
              "'\nptxas info    : Function properties for k\n"
              "ptxas         .     0 bytes stack frame, 0 bytes spill "
              "stores, 0 bytes spill loads\n"
              "ptxas info    : Used 12 registers, used 0 barriers\n";
      m.resources = parsePtxasReport(m.log);
      for (const std::string &e : r.nameExpressions)
        m.loweredNames[e] = "_lowered_" + e;
      return m;
    };
  }
};

KernelCacheOptions fakeOptions(const std::string &dir,
                               const FakeCompiler &fake) {
  KernelCacheOptions o;
  o.directory = dir;
  o.compile = fake.function();
  o.toolchainId = "fake-toolchain 1.0";
  return o;
}

CompileRequest smallRequest(const std::string &body = "x") {
  CompileRequest r;
  r.source = "extern \"C\" __global__ void k(float *p) { /*" + body + "*/ }\n";
  r.arch = "sm_90a";
  return r;
}

} // namespace

//===----------------------------------------------------------------------===//
// Status
//===----------------------------------------------------------------------===//

TEST(Status, CarriesMessagesAndContext) {
  Status ok = Status::success();
  EXPECT_TRUE(ok.ok());
  EXPECT_FALSE(static_cast<bool>(ok));
  Status failed = Status::error("cannot open 'x'").withContext("loading y");
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(failed.message(), "loading y: cannot open 'x'");

  Expected<int> value = 7;
  ASSERT_TRUE(value);
  EXPECT_EQ(*value, 7);
  Expected<int> error = Status::error("boom");
  EXPECT_FALSE(error);
  EXPECT_EQ(error.message(), "boom");
  EXPECT_EQ(error.takeError("while z").message(), "while z: boom");
}

//===----------------------------------------------------------------------===//
// SHA-256
//===----------------------------------------------------------------------===//

TEST(Sha256, MatchesTheStandardsTestVectors) {
  EXPECT_EQ(Sha256::hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256::hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the padding needs a second block.
  EXPECT_EQ(
      Sha256::hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256::hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijkl"
                        "mnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopq"
                        "rstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed in uneven pieces to cross block boundaries.
  Sha256 h;
  std::string piece(997, 'a');
  size_t left = 1000000;
  while (left) {
    size_t n = std::min(left, piece.size());
    h.update(piece.data(), n);
    left -= n;
  }
  EXPECT_EQ(Sha256::toHex(h.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

//===----------------------------------------------------------------------===//
// NVRTC compilation
//===----------------------------------------------------------------------===//

TEST(Compiler, CompilesTemplatedBf16KernelToCubinForSm90a) {
  REQUIRE_NVRTC();
  uint64_t before = nvrtcCompileCount();
  Expected<CompiledModule> m = compileKernels(templatedRequest());
  ASSERT_TRUE(m) << m.message();
  EXPECT_EQ(nvrtcCompileCount(), before + 1);
  EXPECT_FALSE(m->fromCache);
  EXPECT_GT(m->compileSeconds, 0);
  ASSERT_GT(m->cubin.size(), 4u);
  EXPECT_EQ(m->cubin.substr(0, 4), std::string("\x7f" "ELF", 4));
  EXPECT_TRUE(contains(m->ptx, ".target sm_90a"));

  // Both instantiations have lowered names and a ptxas report.
  ASSERT_EQ(m->loweredNames.size(), 2u);
  for (const char *expr : {"moe::scale<MOE_TILE>", "moe::scale<128>"}) {
    const KernelResources *r = m->findResources(expr);
    ASSERT_NE(r, nullptr) << expr << "\n" << m->log;
    EXPECT_TRUE(r->isEntry);
    EXPECT_EQ(r->arch, "sm_90a");
    EXPECT_GT(r->registers, 0);
    EXPECT_EQ(r->spillStoresBytes, 0);
    EXPECT_EQ(r->spillLoadsBytes, 0);
    EXPECT_GT(r->sharedBytes, 0); // The __shared__ staging array.
  }
  EXPECT_EQ(m->findResources("moe::scale<MOE_TILE>")->sharedBytes,
            64 * int64_t(sizeof(float)));
  EXPECT_EQ(m->findResources("moe::scale<128>")->sharedBytes,
            128 * int64_t(sizeof(float)));
  const KernelResources *plain = m->findResources("moe_add_one");
  ASSERT_NE(plain, nullptr) << m->log;
  EXPECT_TRUE(plain->isEntry);
  EXPECT_GT(plain->registers, 0);
  EXPECT_EQ(plain->spillStoresBytes + plain->spillLoadsBytes, 0);
}

TEST(Compiler, SyntaxErrorReturnsTheLogWithTheLine) {
  REQUIRE_NVRTC();
  CompileRequest r;
  r.sourceName = "broken.cu";
  r.source = "extern \"C\" __global__ void k(float *p) {\n"
             "  p[0] = 1.0f\n"
             "  p[1] = 2.0f;\n"
             "}\n";
  Expected<CompiledModule> m = compileKernels(r);
  ASSERT_FALSE(m);
  EXPECT_TRUE(contains(m.message(), "NVRTC could not compile broken.cu"))
      << m.message();
  EXPECT_TRUE(contains(m.message(), "NVRTC_ERROR_COMPILATION")) << m.message();
  // The log names the file and the line of the error.
  EXPECT_TRUE(contains(m.message(), "broken.cu(3): error")) << m.message();
}

TEST(Compiler, ValidatesTheArchitecture) {
  REQUIRE_NVRTC();
  for (const char *bad : {"", "sm90", "sm_9x", "sm_90ab", "gfx942", "SM_90"}) {
    Status s = validateArch(bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_TRUE(contains(s.message(), "invalid GPU architecture")) << bad;
  }
  // Architectures older than the kernels' instructions are refused with the
  // reason, before NVRTC runs.
  for (const char *old : {"sm_75", "compute_70", "sm_61"}) {
    Status s = validateArch(old);
    EXPECT_FALSE(s.ok()) << old;
    EXPECT_TRUE(contains(s.message(), "the kernels need sm_80 or newer"))
        << s.message();
  }
  EXPECT_TRUE(validateArch("sm_80").ok());
  EXPECT_TRUE(validateArch("sm_90a").ok());
  // A well-formed but unknown architecture names those NVRTC supports.
  CompileRequest r = smallRequest();
  r.arch = "sm_91";
  Expected<CompiledModule> m = compileKernels(r);
  ASSERT_FALSE(m);
  EXPECT_TRUE(contains(m.message(), "unknown GPU architecture 'sm_91'"))
      << m.message();
  EXPECT_TRUE(contains(m.message(), "sm_90")) << m.message();

  // Other real targets compile; compute_XX gives PTX and no cubin.
  for (const char *arch : {"sm_80", "sm_90", "sm_100a"}) {
    r.arch = arch;
    Expected<CompiledModule> ok = compileKernels(r);
    ASSERT_TRUE(ok) << arch << ": " << ok.message();
    EXPECT_FALSE(ok->cubin.empty()) << arch;
  }
  r.arch = "compute_90";
  Expected<CompiledModule> ptxOnly = compileKernels(r);
  ASSERT_TRUE(ptxOnly) << ptxOnly.message();
  EXPECT_TRUE(ptxOnly->cubin.empty());
  EXPECT_TRUE(contains(ptxOnly->ptx, ".entry k")) << ptxOnly->ptx;

  // The architecture belongs in the request, not in the options.
  r.arch = "sm_90a";
  r.extraOptions = {"--gpu-architecture=sm_80"};
  Expected<CompiledModule> dup = compileKernels(r);
  ASSERT_FALSE(dup);
  EXPECT_TRUE(contains(dup.message(), "CompileRequest::arch"));
}

TEST(Compiler, OptionsHoldTheRuntimesFlagsThenTheExtraOnes) {
  REQUIRE_NVRTC();
  CompileRequest r = smallRequest();
  r.extraOptions = {"-DMOE_TILE=32"};
  std::vector<std::string> o = nvrtcOptions(r);
  auto has = [&](const std::string &flag) {
    return std::find(o.begin(), o.end(), flag) != o.end();
  };
  EXPECT_EQ(o.front(), "--gpu-architecture=sm_90a");
  EXPECT_TRUE(has("-std=c++17"));
  EXPECT_TRUE(has("--ptxas-options=-v"));
  EXPECT_TRUE(has("-lineinfo"));
  EXPECT_FALSE(has("-default-device"));
  EXPECT_EQ(o.back(), "-DMOE_TILE=32");
  Expected<std::string> include = findCudaIncludeDir();
  ASSERT_TRUE(include) << include.message();
  EXPECT_TRUE(has("--include-path=" + *include));
  struct stat st;
  EXPECT_EQ(::stat((*include + "/cuda_bf16.h").c_str(), &st), 0);

  // An extra option reaches NVRTC.
  r.source = "#if MOE_TILE != 32\n#error no\n#endif\n" + r.source;
  Expected<CompiledModule> m = compileKernels(r);
  EXPECT_TRUE(m) << m.message();
}

TEST(Compiler, ParsesThePtxasReport) {
  const std::string log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Function properties for _Z6helperv\n"
      "ptxas         .     24 bytes stack frame, 8 bytes spill stores, 4 "
      "bytes spill loads\n"
      "ptxas info    : Compiling entry function '_Z4gemmILi128EEvPf' for "
      "'sm_90a'\n"
      "ptxas info    : Function properties for _Z4gemmILi128EEvPf\n"
      "ptxas         .     16 bytes stack frame, 40 bytes spill stores, 36 "
      "bytes spill loads\n"
      "ptxas info    : Used 255 registers, used 1 barriers, 16 bytes "
      "lmem, 49152 bytes smem, 904 bytes cmem[0]\n"
      "ptxas info    : Compile time = 3.7 ms\n"
      "ptxas info    : Compiling entry function 'plain' for 'sm_90a'\n"
      "ptxas info    : Function properties for plain\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 "
      "bytes spill loads\n"
      "ptxas info    : Used 8 registers, used 0 barriers\n";
  std::vector<KernelResources> r = parsePtxasReport(log);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].name, "_Z6helperv");
  EXPECT_FALSE(r[0].isEntry);
  EXPECT_EQ(r[0].stackFrameBytes, 24);
  EXPECT_EQ(r[0].spillStoresBytes, 8);
  EXPECT_EQ(r[0].spillLoadsBytes, 4);

  EXPECT_EQ(r[1].name, "_Z4gemmILi128EEvPf");
  EXPECT_TRUE(r[1].isEntry);
  EXPECT_EQ(r[1].arch, "sm_90a");
  EXPECT_EQ(r[1].registers, 255);
  EXPECT_EQ(r[1].barriers, 1);
  EXPECT_EQ(r[1].stackFrameBytes, 16);
  EXPECT_EQ(r[1].spillStoresBytes, 40);
  EXPECT_EQ(r[1].spillLoadsBytes, 36);
  EXPECT_EQ(r[1].localBytes, 16);
  EXPECT_EQ(r[1].sharedBytes, 49152);
  EXPECT_EQ(r[1].constantBytes, 904);

  EXPECT_EQ(r[2].name, "plain");
  EXPECT_EQ(r[2].registers, 8);
  EXPECT_EQ(r[2].sharedBytes, 0);
  EXPECT_EQ(r[2].spillStoresBytes, 0);
}

//===----------------------------------------------------------------------===//
// Kernel cache
//===----------------------------------------------------------------------===//

TEST(KernelCache, MissThenHitWithoutCallingNvrtc) {
  REQUIRE_NVRTC();
  TempDir dir;
  KernelCacheOptions options;
  options.directory = dir.path();
  Expected<std::unique_ptr<KernelCache>> cache = KernelCache::open(options);
  ASSERT_TRUE(cache) << cache.message();
  CompileRequest request = templatedRequest();

  uint64_t before = nvrtcCompileCount();
  Expected<CompiledModule> miss = (*cache)->getOrCompile(request);
  ASSERT_TRUE(miss) << miss.message();
  EXPECT_FALSE(miss->fromCache);
  EXPECT_TRUE(miss->warnings.empty());
  EXPECT_EQ(nvrtcCompileCount(), before + 1);
  std::string key = (*cache)->key(request);
  EXPECT_EQ(filesIn(dir.path()), std::vector<std::string>{key + ".moekc"});

  Expected<CompiledModule> hit = (*cache)->getOrCompile(request);
  ASSERT_TRUE(hit) << hit.message();
  EXPECT_TRUE(hit->fromCache);
  EXPECT_EQ(nvrtcCompileCount(), before + 1); // No compilation on a hit.
  EXPECT_EQ(hit->cubin, miss->cubin);
  EXPECT_EQ(hit->ptx, miss->ptx);
  EXPECT_EQ(hit->log, miss->log);
  EXPECT_EQ(hit->arch, "sm_90a");
  EXPECT_EQ(hit->loweredNames, miss->loweredNames);
  ASSERT_EQ(hit->resources.size(), miss->resources.size());
  const KernelResources *r = hit->findResources("moe::scale<128>");
  ASSERT_NE(r, nullptr);
  EXPECT_GT(r->registers, 0);

  // Another cache object on the same folder (another process, later) hits.
  Expected<std::unique_ptr<KernelCache>> again = KernelCache::open(options);
  ASSERT_TRUE(again) << again.message();
  Expected<CompiledModule> hit2 = (*again)->getOrCompile(request);
  ASSERT_TRUE(hit2) << hit2.message();
  EXPECT_TRUE(hit2->fromCache);
  EXPECT_EQ(nvrtcCompileCount(), before + 1);
  KernelCacheStats stats = (*cache)->stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
}

TEST(KernelCache, KeyChangesWithEveryInput) {
  REQUIRE_NVRTC();
  TempDir dir;
  FakeCompiler fake;
  auto cache = KernelCache::open(fakeOptions(dir.path(), fake));
  ASSERT_TRUE(cache) << cache.message();
  CompileRequest base = templatedRequest();
  std::string k = (*cache)->key(base);
  EXPECT_EQ(k.size(), 64u);
  EXPECT_EQ(k, (*cache)->key(templatedRequest())); // Deterministic.

  std::vector<std::pair<std::string, CompileRequest>> variants;
  auto vary = [&](const char *what, auto change) {
    CompileRequest r = base;
    change(r);
    variants.push_back({what, r});
  };
  vary("arch", [](CompileRequest &r) { r.arch = "sm_80"; });
  vary("arch suffix", [](CompileRequest &r) { r.arch = "sm_90"; });
  vary("options", [](CompileRequest &r) { r.extraOptions = {"-G"}; });
  vary("option order", [](CompileRequest &r) {
    r.extraOptions = {"-DA=1", "-DB=2"};
  });
  vary("option order 2", [](CompileRequest &r) {
    r.extraOptions = {"-DB=2", "-DA=1"};
  });
  vary("source", [](CompileRequest &r) { r.source += " "; });
  vary("source name", [](CompileRequest &r) { r.sourceName = "other.cu"; });
  vary("header text", [](CompileRequest &r) {
    r.headers["tile.h"] = "#define MOE_TILE 32\n";
  });
  vary("header name", [](CompileRequest &r) {
    r.headers["tile2.h"] = r.headers["tile.h"];
    r.headers.erase("tile.h");
  });
  vary("name expressions", [](CompileRequest &r) {
    r.nameExpressions.pop_back();
  });
  std::set<std::string> keys = {k};
  for (const auto &[what, r] : variants)
    EXPECT_TRUE(keys.insert((*cache)->key(r)).second) << what;

  // The compiler's identity (NVRTC's version) is part of the key.
  KernelCacheOptions other = fakeOptions(dir.path(), fake);
  other.toolchainId = "fake-toolchain 2.0";
  auto otherCache = KernelCache::open(other);
  ASSERT_TRUE(otherCache);
  EXPECT_NE((*otherCache)->key(base), k);

  // The default identity comes from NVRTC.
  KernelCacheOptions real;
  real.directory = dir.path();
  auto realCache = KernelCache::open(real);
  ASSERT_TRUE(realCache) << realCache.message();
  auto [major, minor] = (*nvrtcApi())->version();
  EXPECT_TRUE(contains((*realCache)->toolchainId(),
                       "nvrtc " + std::to_string(major) + "." +
                           std::to_string(minor)))
      << (*realCache)->toolchainId();

  // Different options or architectures make different entries.
  for (const char *arch : {"sm_90a", "sm_80"}) {
    CompileRequest r = smallRequest();
    r.arch = arch;
    ASSERT_TRUE((*cache)->getOrCompile(r));
  }
  EXPECT_EQ(filesIn(dir.path()).size(), 2u);
  EXPECT_EQ(*fake.calls, 2);
}

TEST(KernelCache, CorruptedEntriesAreReportedRecompiledAndRewritten) {
  TempDir dir;
  FakeCompiler fake;
  auto cache = KernelCache::open(fakeOptions(dir.path(), fake));
  ASSERT_TRUE(cache) << cache.message();
  CompileRequest request = smallRequest();
  request.nameExpressions = {"k"};
  ASSERT_TRUE((*cache)->getOrCompile(request));
  ASSERT_EQ(*fake.calls, 1);
  std::string path = (*cache)->entryPath((*cache)->key(request));
  const std::string good = readBytes(path);
  ASSERT_GT(good.size(), 144u + 4096u);

  struct Damage {
    const char *what;
    std::string bytes;
    const char *reason;
  };
  auto flip = [&](size_t at) {
    std::string b = good;
    b[at] = char(b[at] ^ 0x20);
    return b;
  };
  std::vector<Damage> damages = {
      {"magic", flip(2), "bad magic"},
      {"version", flip(8), "format version"},
      {"key", flip(20), "another key"},
      {"size", flip(88), "sizes"},
      {"checksum", flip(120), "checksum"},
      {"payload start", flip(144), "checksum"},
      {"cubin", flip(good.size() / 2), "checksum"},
      {"last byte", flip(good.size() - 1), "checksum"},
      {"truncated to nothing", "", "truncated"},
      {"truncated header", good.substr(0, 100), "truncated"},
      {"truncated payload", good.substr(0, good.size() - 7), "truncated"},
      {"extra bytes", good + "x", "sizes"},
  };
  int calls = *fake.calls;
  for (const Damage &d : damages) {
    SCOPED_TRACE(d.what);
    writeBytes(path, d.bytes);
    Expected<CompiledModule> m = (*cache)->getOrCompile(request);
    ASSERT_TRUE(m) << m.message();
    EXPECT_FALSE(m->fromCache);
    EXPECT_EQ(*fake.calls, ++calls); // Compiled again.
    ASSERT_EQ(m->warnings.size(), 1u);
    EXPECT_TRUE(contains(m->warnings[0], path)) << m->warnings[0];
    EXPECT_TRUE(contains(m->warnings[0], d.reason)) << m->warnings[0];
    EXPECT_TRUE(contains(m->warnings[0], "compiling again")) << m->warnings[0];
    // Rewritten: the same bytes as before, and the next request hits.
    EXPECT_EQ(readBytes(path), good);
    Expected<CompiledModule> hit = (*cache)->getOrCompile(request);
    ASSERT_TRUE(hit);
    EXPECT_TRUE(hit->fromCache);
    EXPECT_TRUE(hit->warnings.empty());
    EXPECT_EQ(hit->loweredNames.at("k"), "_lowered_k");
    EXPECT_EQ(*fake.calls, calls);
  }
  EXPECT_EQ((*cache)->stats().corruptEntries, damages.size());
  EXPECT_EQ(filesIn(dir.path()).size(), 1u);
}

TEST(KernelCache, EightThreadsCompilingOneKeyLeaveOneValidEntry) {
  REQUIRE_NVRTC();
  TempDir dir;
  KernelCacheOptions options;
  options.directory = dir.path();
  auto cache = KernelCache::open(options);
  ASSERT_TRUE(cache) << cache.message();
  CompileRequest request = templatedRequest();

  constexpr int kThreads = 8;
  std::vector<Expected<CompiledModule>> results(
      kThreads, Expected<CompiledModule>(Status::error("not run")));
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      // Separate cache objects, as separate processes would have.
      auto own = KernelCache::open(options);
      ++ready;
      while (ready.load() < kThreads)
        std::this_thread::yield();
      results[t] = own ? (*own)->getOrCompile(request)
                       : Expected<CompiledModule>(own.status());
    });
  for (std::thread &t : threads)
    t.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(results[t]) << results[t].message();
    EXPECT_TRUE(results[t]->warnings.empty());
    EXPECT_EQ(results[t]->cubin, results[0]->cubin);
  }
  std::string key = (*cache)->key(request);
  EXPECT_EQ(filesIn(dir.path()), std::vector<std::string>{key + ".moekc"});
  Expected<CompiledModule> entry =
      KernelCache::decodeEntry(readBytes((*cache)->entryPath(key)), key);
  ASSERT_TRUE(entry) << entry.message();
  EXPECT_EQ(entry->cubin, results[0]->cubin);
}

TEST(KernelCache, FourProcessesWritingTheSameKeysLeaveValidEntries) {
  TempDir dir;
  constexpr int kWriters = 4, kKeys = 8;
  // Writers start when `gate` closes; the reader stops when `stop` closes.
  int gate[2], stop[2];
  ASSERT_EQ(::pipe(gate), 0);
  ASSERT_EQ(::pipe(stop), 0);
  auto child = [&](int index) -> int {
    ::close(gate[1]);
    ::close(stop[1]);
    char c;
    while (::read(gate[0], &c, 1) > 0) {
    }
    if (index == kWriters) {
      // The reader: every entry that has its final name must be whole.
      ::fcntl(stop[0], F_SETFL, O_NONBLOCK);
      int wholeReads = 0;
      while (::read(stop[0], &c, 1) < 0) {
        for (const std::string &name : filesIn(dir.path())) {
          if (name[0] == '.')
            continue; // A writer's temporary file.
          std::string key = name.substr(0, name.find('.'));
          std::string bytes = readBytes(dir.path() + "/" + name);
          if (bytes.empty() && !fs::exists(dir.path() + "/" + name))
            continue;
          if (!KernelCache::decodeEntry(bytes, key))
            return 2;
          ++wholeReads;
        }
      }
      return wholeReads > 0 ? 0 : 3;
    }
    // Writers: staggered starts and compile times, large entries, so that
    // reads and writes of one key overlap.
    ::usleep(useconds_t(3000 * index));
    FakeCompiler fake;
    fake.delayMs = 5 + 4 * index;
    fake.cubinBytes = 1 << 20;
    auto cache = KernelCache::open(fakeOptions(dir.path(), fake));
    if (!cache)
      return 10;
    for (int k = 0; k < kKeys; ++k) {
      Expected<CompiledModule> m =
          (*cache)->getOrCompile(smallRequest(std::to_string(k)));
      if (!m || !m->warnings.empty() ||
          !contains(m->cubin, "/*" + std::to_string(k) + "*/"))
        return 20 + k;
    }
    return 0;
  };
  std::vector<pid_t> children;
  for (int p = 0; p <= kWriters; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0)
      ::_exit(child(p));
    children.push_back(pid);
  }
  ::close(gate[0]);
  ::close(gate[1]);
  for (int p = 0; p <= kWriters; ++p) {
    if (p == kWriters)
      ::close(stop[1]); // The writers are done: stop the reader.
    int status = 0;
    ASSERT_EQ(::waitpid(children[p], &status, 0), children[p]);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0)
        << (p == kWriters ? "reader" : "writer ") << p;
  }
  ::close(stop[0]);

  FakeCompiler fake;
  auto cache = KernelCache::open(fakeOptions(dir.path(), fake));
  ASSERT_TRUE(cache);
  std::vector<std::string> expected;
  for (int k = 0; k < kKeys; ++k) {
    std::string key = (*cache)->key(smallRequest(std::to_string(k)));
    expected.push_back(key + ".moekc");
    Expected<CompiledModule> entry =
        KernelCache::decodeEntry(readBytes((*cache)->entryPath(key)), key);
    EXPECT_TRUE(entry) << entry.message();
  }
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(filesIn(dir.path()), expected); // And no temporary files.
}

TEST(KernelCache, FolderComesFromTheEnvironment) {
  TempDir dir;
  std::string chosen = dir.path() + "/a/b/kernels";
  {
    ScopedEnv cacheDir("MOE_CACHE_DIR", chosen.c_str());
    Expected<std::string> d = defaultCacheDirectory();
    ASSERT_TRUE(d);
    EXPECT_EQ(*d, chosen);
    FakeCompiler fake;
    auto cache = KernelCache::open(fakeOptions("", fake));
    ASSERT_TRUE(cache) << cache.message();
    EXPECT_EQ((*cache)->directory(), chosen);
    EXPECT_TRUE(fs::is_directory(chosen)); // Created with its parents.
    ASSERT_TRUE((*cache)->getOrCompile(smallRequest()));
    EXPECT_EQ(filesIn(chosen).size(), 1u);
  }
  ScopedEnv noCacheDir("MOE_CACHE_DIR", nullptr);
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg/cache");
    EXPECT_EQ(*defaultCacheDirectory(), "/xdg/cache/moe-opt/kernels");
  }
  ScopedEnv noXdg("XDG_CACHE_HOME", nullptr);
  {
    ScopedEnv home("HOME", "/home/someone");
    EXPECT_EQ(*defaultCacheDirectory(), "/home/someone/.cache/moe-opt/kernels");
  }
  ScopedEnv noHome("HOME", nullptr);
  Expected<std::string> none = defaultCacheDirectory();
  ASSERT_FALSE(none);
  EXPECT_TRUE(contains(none.message(), "MOE_CACHE_DIR"));
}

TEST(KernelCache, StoringFailureIsAWarningAndErrorsAreNotCached) {
  TempDir dir;
  FakeCompiler fake;
  std::string sub = dir.path() + "/cache";
  auto cache = KernelCache::open(fakeOptions(sub, fake));
  ASSERT_TRUE(cache) << cache.message();

  CompileRequest broken = smallRequest();
  broken.source = "#error broken\n";
  Expected<CompiledModule> error = (*cache)->getOrCompile(broken);
  ASSERT_FALSE(error);
  EXPECT_TRUE(contains(error.message(), "fake NVRTC"));
  EXPECT_TRUE(filesIn(sub).empty());

  fs::remove_all(sub); // The folder disappears under the cache.
  Expected<CompiledModule> m = (*cache)->getOrCompile(smallRequest());
  ASSERT_TRUE(m) << m.message();
  ASSERT_EQ(m->warnings.size(), 1u);
  EXPECT_TRUE(contains(m->warnings[0], "cannot create a temporary file"))
      << m->warnings[0];
  EXPECT_EQ((*cache)->stats().writeFailures, 1u);
}

//===----------------------------------------------------------------------===//
// Missing libraries and the driver
//===----------------------------------------------------------------------===//

TEST(Libraries, MissingNvrtcNamesThePathAndTheVariable) {
  {
    ScopedEnv env("MOE_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so");
    Expected<std::shared_ptr<const NvrtcApi>> api = NvrtcApi::load();
    ASSERT_FALSE(api);
    EXPECT_TRUE(contains(api.message(), "cannot load NVRTC")) << api.message();
    EXPECT_TRUE(contains(api.message(), "/nonexistent/libnvrtc.so"));
    EXPECT_TRUE(contains(api.message(), "MOE_NVRTC_LIBRARY"));
    // The process-wide table follows the variable, and compiling says why
    // it cannot.
    Expected<CompiledModule> m = compileKernels(smallRequest().source, {},
                                                "sm_90a");
    ASSERT_FALSE(m);
    EXPECT_TRUE(contains(m.message(), "/nonexistent/libnvrtc.so"))
        << m.message();
  }
  {
    // A library that is not NVRTC.
    ScopedEnv env("MOE_NVRTC_LIBRARY", "libm.so.6");
    Expected<std::shared_ptr<const NvrtcApi>> api = NvrtcApi::load();
    ASSERT_FALSE(api);
    EXPECT_TRUE(contains(api.message(), "symbol 'nvrtcVersion' is missing"))
        << api.message();
  }
  REQUIRE_NVRTC(); // Usable again once the variable is gone.
}

TEST(Libraries, MissingDriverNamesThePathAndTheVariable) {
  ScopedEnv env("MOE_CUDA_DRIVER_LIBRARY", "/nonexistent/libcuda.so.1");
  Expected<std::shared_ptr<const DriverApi>> api = DriverApi::load();
  ASSERT_FALSE(api);
  EXPECT_TRUE(contains(api.message(), "cannot load the CUDA driver"))
      << api.message();
  EXPECT_TRUE(contains(api.message(), "/nonexistent/libcuda.so.1"));
  EXPECT_TRUE(contains(api.message(), "MOE_CUDA_DRIVER_LIBRARY"));

  Expected<Device> device = Device::open(0);
  ASSERT_FALSE(device);
  EXPECT_TRUE(contains(device.message(), "cannot open CUDA device 0"));
  EXPECT_TRUE(contains(device.message(), "/nonexistent/libcuda.so.1"));
}

TEST(Libraries, StubDriverSaysNoDriverIsInstalled) {
  std::string stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (const char *home = std::getenv("CUDA_HOME"))
    if (fs::exists(std::string(home) + "/lib64/stubs/libcuda.so"))
      stub = std::string(home) + "/lib64/stubs/libcuda.so";
  if (!fs::exists(stub))
    GTEST_SKIP() << "no driver stub at " << stub;
  ScopedEnv env("MOE_CUDA_DRIVER_LIBRARY", stub.c_str());
  Expected<std::shared_ptr<const DriverApi>> api = DriverApi::load();
  ASSERT_TRUE(api) << api.message(); // Every symbol is in the stub.
  Expected<Device> device = Device::open(*api, 0);
  ASSERT_FALSE(device);
  EXPECT_TRUE(contains(device.message(), "cuInit failed")) << device.message();
  EXPECT_TRUE(contains(device.message(), "CUDA_ERROR_STUB_LIBRARY (34)"))
      << device.message();
  EXPECT_TRUE(contains(device.message(), "no driver installed"))
      << device.message();
}

TEST(Device, OpeningWithoutAGpuFailsWithAClearMessage) {
  ScopedEnv env("MOE_CUDA_DRIVER_LIBRARY", nullptr);
  Expected<Device> device = Device::open(0);
  if (device)
    GTEST_SKIP() << "this machine has a GPU: " << device->info().name;
  const std::string &m = device.message();
  EXPECT_TRUE(contains(m, "cannot open CUDA device 0")) << m;
  EXPECT_TRUE(contains(m, "cannot load the CUDA driver") ||
              contains(m, "no driver installed") ||
              contains(m, "no CUDA device"))
      << m;
}

namespace {
/// A driver made of host functions, to test the Device layer's calls,
/// ownership and messages without a GPU.
struct FakeDriver {
  static inline CuResult initResult = kCudaSuccess;
  static inline CuResult allocResult = kCudaSuccess;
  static inline int retained = 0;
  static inline int liveAllocations = 0;
  static inline int liveModules = 0;
  static inline int liveStreams = 0;
  static inline int liveEvents = 0;
  static inline CuContext current = nullptr;
  static inline std::vector<MoEKernelArgs> launchedArgs;
  static inline std::vector<unsigned> launchedGeometry;
  static inline int functionAttribute = 0;

  static CuContext context() { return reinterpret_cast<CuContext>(0x1000); }

  static std::shared_ptr<const DriverApi> make() {
    initResult = allocResult = kCudaSuccess;
    retained = liveAllocations = liveModules = liveStreams = liveEvents = 0;
    current = nullptr;
    launchedArgs.clear();
    launchedGeometry.clear();
    auto api = std::make_shared<DriverApi>();
    api->library = "fake";
    api->cuInit = [](unsigned) { return initResult; };
    api->cuGetErrorString = [](CuResult r, const char **s) {
      *s = r == 2 ? "out of memory" : "fake error";
      return kCudaSuccess;
    };
    api->cuDriverGetVersion = [](int *v) {
      *v = 13000;
      return kCudaSuccess;
    };
    api->cuDeviceGetCount = [](int *n) {
      *n = 1;
      return kCudaSuccess;
    };
    api->cuDeviceGet = [](CuDevice *d, int ordinal) {
      *d = ordinal;
      return kCudaSuccess;
    };
    api->cuDeviceGetName = [](char *name, int len, CuDevice) {
      std::snprintf(name, size_t(len), "Fake H200");
      return kCudaSuccess;
    };
    api->cuDeviceGetAttribute = [](int *v, int attribute, CuDevice) {
      *v = attribute == kCuDeviceAttrComputeCapabilityMajor   ? 9
           : attribute == kCuDeviceAttrComputeCapabilityMinor ? 0
           : attribute == kCuDeviceAttrMultiprocessorCount    ? 132
                                                              : 232448;
      return kCudaSuccess;
    };
    api->cuDevicePrimaryCtxRetain = [](CuContext *c, CuDevice) {
      ++retained;
      *c = context();
      return kCudaSuccess;
    };
    api->cuDevicePrimaryCtxRelease = [](CuDevice) {
      --retained;
      return kCudaSuccess;
    };
    api->cuCtxSetCurrent = [](CuContext c) {
      current = c;
      return kCudaSuccess;
    };
    api->cuCtxSynchronize = []() { return kCudaSuccess; };
    api->cuModuleLoadData = [](CuModule *m, const void *) {
      ++liveModules;
      *m = reinterpret_cast<CuModule>(0x2000);
      return kCudaSuccess;
    };
    api->cuModuleUnload = [](CuModule) {
      --liveModules;
      return kCudaSuccess;
    };
    api->cuModuleGetFunction = [](CuFunction *f, CuModule, const char *name) {
      if (std::string(name) != "moe_add_one")
        return CuResult(500); // CUDA_ERROR_NOT_FOUND
      *f = reinterpret_cast<CuFunction>(0x3000);
      return kCudaSuccess;
    };
    api->cuLaunchKernel = [](CuFunction, unsigned gx, unsigned gy, unsigned gz,
                             unsigned bx, unsigned by, unsigned bz,
                             unsigned shared, CuStream, void **params,
                             void **extra) {
      if (current != context() || !params || extra)
        return CuResult(1);
      // The one parameter: the address of a MoEKernelArgs.
      launchedArgs.push_back(*static_cast<MoEKernelArgs *>(params[0]));
      launchedGeometry = {gx, gy, gz, bx, by, bz, shared};
      return kCudaSuccess;
    };
    api->cuFuncSetAttribute = [](CuFunction, int attribute, int value) {
      functionAttribute = attribute == kCuFuncAttrMaxDynamicSharedSizeBytes
                              ? value
                              : -1;
      return kCudaSuccess;
    };
    api->cuMemAlloc = [](CuDevicePtr *p, size_t bytes) {
      if (allocResult != kCudaSuccess)
        return allocResult;
      ++liveAllocations;
      *p = CuDevicePtr(reinterpret_cast<uintptr_t>(std::malloc(bytes)));
      return kCudaSuccess;
    };
    api->cuMemFree = [](CuDevicePtr p) {
      --liveAllocations;
      std::free(reinterpret_cast<void *>(uintptr_t(p)));
      return kCudaSuccess;
    };
    api->cuMemcpyHtoD = [](CuDevicePtr d, const void *s, size_t n) {
      std::memcpy(reinterpret_cast<void *>(uintptr_t(d)), s, n);
      return kCudaSuccess;
    };
    api->cuMemcpyDtoH = [](void *d, CuDevicePtr s, size_t n) {
      std::memcpy(d, reinterpret_cast<const void *>(uintptr_t(s)), n);
      return kCudaSuccess;
    };
    api->cuMemsetD8 = [](CuDevicePtr d, unsigned char v, size_t n) {
      std::memset(reinterpret_cast<void *>(uintptr_t(d)), v, n);
      return kCudaSuccess;
    };
    api->cuStreamCreate = [](CuStream *s, unsigned) {
      ++liveStreams;
      *s = reinterpret_cast<CuStream>(0x4000);
      return kCudaSuccess;
    };
    api->cuStreamDestroy = [](CuStream) {
      --liveStreams;
      return kCudaSuccess;
    };
    api->cuStreamSynchronize = [](CuStream) { return kCudaSuccess; };
    api->cuEventCreate = [](CuEvent *e, unsigned) {
      ++liveEvents;
      *e = reinterpret_cast<CuEvent>(0x5000 + liveEvents);
      return kCudaSuccess;
    };
    api->cuEventRecord = [](CuEvent, CuStream) { return kCudaSuccess; };
    api->cuEventSynchronize = [](CuEvent) { return kCudaSuccess; };
    api->cuEventElapsedTime = [](float *ms, CuEvent, CuEvent) {
      *ms = 1.5f;
      return kCudaSuccess;
    };
    api->cuEventDestroy = [](CuEvent) {
      --liveEvents;
      return kCudaSuccess;
    };
    return api;
  }
};
} // namespace

TEST(Device, InitFailuresAreSaidInPlainWords) {
  std::shared_ptr<const DriverApi> api = FakeDriver::make();
  FakeDriver::initResult = kCudaErrorNoDevice;
  Expected<Device> none = Device::open(api, 0);
  ASSERT_FALSE(none);
  EXPECT_TRUE(contains(none.message(), "cannot open CUDA device 0: cuInit "
                                       "failed: CUDA_ERROR_NO_DEVICE (100)"))
      << none.message();
  EXPECT_TRUE(contains(none.message(), "found no CUDA device"));

  FakeDriver::initResult = kCudaErrorInsufficientDriver;
  Expected<Device> old = Device::open(api, 0);
  ASSERT_FALSE(old);
  EXPECT_TRUE(contains(old.message(), "CUDA_ERROR_INSUFFICIENT_DRIVER (35)"))
      << old.message();
  EXPECT_TRUE(contains(old.message(), "driver is older"));

  FakeDriver::initResult = kCudaSuccess;
  Expected<Device> missing = Device::open(api, 3);
  ASSERT_FALSE(missing);
  EXPECT_TRUE(contains(missing.message(), "has 1 device(s)"))
      << missing.message();
  EXPECT_EQ(FakeDriver::retained, 0);
}

TEST(Device, CallsTheDriverAsDocumentedAndReleasesEverything) {
  std::shared_ptr<const DriverApi> api = FakeDriver::make();
  {
    Expected<Device> device = Device::open(api, 0);
    ASSERT_TRUE(device) << device.message();
    EXPECT_EQ(FakeDriver::retained, 1);
    EXPECT_EQ(device->info().name, "Fake H200");
    EXPECT_EQ(device->info().arch(), "sm_90a");
    EXPECT_EQ(device->info().multiprocessors, 132);
    EXPECT_EQ(device->info().maxSharedBytesPerBlockOptin, 232448);
    EXPECT_EQ(device->info().driverVersion, 13000);

    Expected<Module> module = device->loadModule("\x7f" "ELF...");
    ASSERT_TRUE(module) << module.message();
    EXPECT_FALSE(device->loadModule(""));
    Expected<Kernel> missing = module->kernel("nope");
    ASSERT_FALSE(missing);
    EXPECT_TRUE(contains(missing.message(),
                         "cuModuleGetFunction(nope) failed: "
                         "CUDA_ERROR_NOT_FOUND (500)"))
        << missing.message();
    Expected<Kernel> kernel = module->kernel("moe_add_one");
    ASSERT_TRUE(kernel) << kernel.message();
    ASSERT_TRUE(kernel->setMaxDynamicSharedMemory(200 * 1024).ok());
    EXPECT_EQ(FakeDriver::functionAttribute, 200 * 1024);

    std::vector<float> host = {1, 2, 3, 4};
    Expected<DeviceBuffer> buffer = device->allocate(sizeof(float) * 4);
    ASSERT_TRUE(buffer) << buffer.message();
    ASSERT_TRUE(buffer->copyFromHost(host.data(), 16).ok());
    std::vector<float> back(4);
    ASSERT_TRUE(buffer->copyToHost(back.data(), 8, 8).ok());
    EXPECT_EQ(back[0], 3.0f);
    Status outOfRange = buffer->copyToHost(back.data(), 16, 4);
    EXPECT_TRUE(contains(outOfRange.message(), "do not fit a buffer of 16"))
        << outOfRange.message();

    FakeDriver::allocResult = 2;
    Expected<DeviceBuffer> tooBig = device->allocate(size_t(1) << 40);
    ASSERT_FALSE(tooBig);
    EXPECT_TRUE(contains(tooBig.message(),
                         "cuMemAlloc_v2(1099511627776 bytes) failed: "
                         "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"))
        << tooBig.message();
    FakeDriver::allocResult = kCudaSuccess;

    Expected<Stream> stream = device->createStream();
    Expected<Event> start = device->createEvent();
    Expected<Event> stop = device->createEvent();
    ASSERT_TRUE(stream && start && stop);
    MoEKernelArgs args{};
    args.buffers[0] = buffer->pointer();
    args.buffers[31] = reinterpret_cast<void *>(uintptr_t(0xabc));
    args.num_tokens = 77;
    args.scalars[3] = -5;
    FakeDriver::current = nullptr; // The launch makes the context current.
    ASSERT_TRUE(start->record(&*stream).ok());
    Status launched = device->launch(*kernel, Dim3{3, 2, 1}, Dim3{128, 1, 1},
                                     4096, args, &*stream);
    ASSERT_TRUE(launched.ok()) << launched.message();
    ASSERT_TRUE(stop->record(&*stream).ok());
    ASSERT_EQ(FakeDriver::launchedArgs.size(), 1u);
    const MoEKernelArgs &seen = FakeDriver::launchedArgs[0];
    EXPECT_EQ(seen.buffers[0], buffer->pointer());
    EXPECT_EQ(seen.buffers[31], args.buffers[31]);
    EXPECT_EQ(seen.num_tokens, 77);
    EXPECT_EQ(seen.scalars[3], -5);
    EXPECT_EQ(FakeDriver::launchedGeometry,
              (std::vector<unsigned>{3, 2, 1, 128, 1, 1, 4096}));
    Expected<float> ms = Event::elapsedMs(*start, *stop);
    ASSERT_TRUE(ms);
    EXPECT_EQ(*ms, 1.5f);
    Status zero =
        device->launch(*kernel, Dim3{0, 1, 1}, Dim3{1, 1, 1}, 0, args);
    EXPECT_TRUE(contains(zero.message(), "cuLaunchKernel(moe_add_one, grid "
                                         "0x1x1"))
        << zero.message();
    EXPECT_EQ(FakeDriver::launchedArgs.size(), 1u);

    // Objects may outlive the Device: they keep the context.
    Expected<DeviceBuffer> kept = device->allocate(64);
    ASSERT_TRUE(kept);
    DeviceBuffer moved = std::move(*kept);
    EXPECT_EQ(kept->address(), 0u);
    device = Status::error("closed");
    EXPECT_EQ(FakeDriver::retained, 1);
    EXPECT_EQ(FakeDriver::liveAllocations, 2);
    ASSERT_TRUE(moved.fill(7).ok());
    ASSERT_TRUE(moved.release().ok());
    EXPECT_EQ(FakeDriver::liveAllocations, 1);
  }
  // Everything was freed, unloaded, destroyed and released.
  EXPECT_EQ(FakeDriver::liveAllocations, 0);
  EXPECT_EQ(FakeDriver::liveModules, 0);
  EXPECT_EQ(FakeDriver::liveStreams, 0);
  EXPECT_EQ(FakeDriver::liveEvents, 0);
  EXPECT_EQ(FakeDriver::retained, 0);
}

// Runs only where a GPU is present: the whole path from source to results.
TEST(Device, CompilesLoadsAndLaunchesAKernelWithKernelArgs) {
  Expected<Device> device = Device::open(0);
  if (!device)
    GTEST_SKIP() << "no GPU: " << device.message();
  REQUIRE_NVRTC();
  const DeviceInfo &info = device->info();
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_GT(info.computeMajor, 0);

  CompileRequest request = templatedRequest();
  request.arch = info.arch();
  Expected<CompiledModule> compiled = compileKernels(request);
  ASSERT_TRUE(compiled) << compiled.message();
  Expected<Module> module = device->loadModule(compiled->cubin);
  ASSERT_TRUE(module) << module.message();
  Expected<Kernel> kernel = module->kernel("moe_add_one");
  ASSERT_TRUE(kernel) << kernel.message();
  EXPECT_TRUE(kernel->setMaxDynamicSharedMemory(64 * 1024).ok());
  Expected<Kernel> missing = module->kernel("no_such_kernel");
  ASSERT_FALSE(missing);
  EXPECT_TRUE(contains(missing.message(), "cuModuleGetFunction(no_such_kernel)"));

  constexpr int kCount = 1000;
  std::vector<float> host(kCount);
  for (int i = 0; i < kCount; ++i)
    host[i] = float(i) * 0.5f;
  Expected<DeviceBuffer> buffer = device->allocate(kCount * sizeof(float));
  ASSERT_TRUE(buffer) << buffer.message();
  ASSERT_TRUE(buffer->copyFromHost(host.data(), kCount * sizeof(float)).ok());

  Expected<Stream> stream = device->createStream();
  ASSERT_TRUE(stream) << stream.message();
  Expected<Event> start = device->createEvent();
  Expected<Event> stop = device->createEvent();
  ASSERT_TRUE(start && stop);
  MoEKernelArgs args{};
  args.buffers[0] = buffer->pointer();
  args.num_tokens = kCount - 10; // The last 10 stay untouched.
  args.scalars[0] = 2;
  ASSERT_TRUE(start->record(&*stream).ok());
  Status launched = device->launch(*kernel, Dim3{(kCount + 127) / 128, 1, 1},
                                   Dim3{128, 1, 1}, 0, args, &*stream);
  ASSERT_TRUE(launched.ok()) << launched.message();
  ASSERT_TRUE(stop->record(&*stream).ok());
  Status synced = stream->synchronize();
  ASSERT_TRUE(synced.ok()) << synced.message();
  Expected<float> ms = Event::elapsedMs(*start, *stop);
  ASSERT_TRUE(ms) << ms.message();
  EXPECT_GE(*ms, 0.0f);

  std::vector<float> back(kCount);
  ASSERT_TRUE(buffer->copyToHost(back.data(), kCount * sizeof(float)).ok());
  for (int i = 0; i < kCount; ++i)
    EXPECT_EQ(back[i], i < kCount - 10 ? host[i] + 3.0f : host[i]) << i;

  // Range checks and zero dimensions fail without reaching the driver.
  EXPECT_FALSE(buffer->copyToHost(back.data(), 8, kCount * sizeof(float)).ok());
  EXPECT_FALSE(
      device->launch(*kernel, Dim3{0, 1, 1}, Dim3{128, 1, 1}, 0, args).ok());
  ASSERT_TRUE(buffer->fill(0).ok());
  ASSERT_TRUE(device->synchronize().ok());
}
