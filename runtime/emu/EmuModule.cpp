//===- EmuModule.cpp - Kernels compiled for the CPU emulation -------------===//
//
// Part of moe-opt. See include/moe/runtime/EmuModule.h. Plain C++17 and
// POSIX (posix_spawn, dlopen): no LLVM, no MLIR, no CUDA.
//
//===----------------------------------------------------------------------===//

#include "EmuModule.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace moe::runtime {
namespace {

//===----------------------------------------------------------------------===//
// SHA-256 (FIPS 180-4)
//===----------------------------------------------------------------------===//

class Sha256 {
public:
  Sha256() { reset(); }
  void update(const void *data, size_t size) {
    const auto *p = static_cast<const uint8_t *>(data);
    length_ += size;
    while (size > 0) {
      size_t n = std::min(size, sizeof buffer_ - buffered_);
      std::memcpy(buffer_ + buffered_, p, n);
      buffered_ += n;
      p += n;
      size -= n;
      if (buffered_ == sizeof buffer_) {
        block(buffer_);
        buffered_ = 0;
      }
    }
  }
  void update(const std::string &s) { update(s.data(), s.size()); }
  /// A length-prefixed field: concatenations of fields stay unambiguous.
  void field(const std::string &s) {
    uint64_t n = s.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<uint8_t>(n >> (8 * i));
    update(len, 8);
    update(s);
  }
  std::string hex() {
    uint64_t bits = length_ * 8;
    uint8_t pad = 0x80;
    update(&pad, 1);
    uint8_t zero = 0;
    while (buffered_ != 56)
      update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i)
      len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (uint32_t w : state_)
      for (int i = 28; i >= 0; i -= 4)
        out += digits[(w >> i) & 0xf];
    return out;
  }

private:
  void reset() {
    static const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                     0xa54ff53a, 0x510e527f, 0x9b05688c,
                                     0x1f83d9ab, 0x5be0cd19};
    std::memcpy(state_, init, sizeof state_);
  }
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void block(const uint8_t *p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
        0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
        0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
        0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
        0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) |
             (uint32_t(p[4 * i + 2]) << 8) | uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3],
             e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) +
                    ((e & f) ^ (~e & g)) + k[i] + w[i];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) +
                    ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
  }

  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

std::atomic<uint64_t> gCompilations{0}, gCacheHits{0};

std::string errnoText() { return std::strerror(errno); }

Status makeDirs(const std::string &path) {
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty())
      continue;
    if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
      return Status::error("cannot create folder " + cur + ": " +
                           errnoText());
  }
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::error(path + " is not a folder");
  return Status::success();
}

Status writeFile(const std::string &path, const std::string &data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out)
    return Status::error("cannot write " + path + ": " + errnoText());
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out)
    return Status::error("cannot write " + path + ": " + errnoText());
  return Status::success();
}

std::string readFile(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string &path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

/// Removes `path` and, for a folder, everything in it.
void removeTree(const std::string &path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0)
    return;
  if (S_ISDIR(st.st_mode)) {
    if (DIR *d = opendir(path.c_str())) {
      while (dirent *e = readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..")
          removeTree(path + "/" + n);
      }
      closedir(d);
    }
    rmdir(path.c_str());
  } else {
    unlink(path.c_str());
  }
}

/// Removes temporary folders that writers left behind over an hour ago.
void removeStaleTemporaries(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (!d)
    return;
  const time_t now = time(nullptr);
  std::vector<std::string> stale;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("tmp-", 0) != 0)
      continue;
    struct stat st;
    std::string p = dir + "/" + n;
    if (lstat(p.c_str(), &st) == 0 && now - st.st_mtime > 3600)
      stale.push_back(p);
  }
  closedir(d);
  for (const std::string &p : stale)
    removeTree(p);
}

/// An include name must stay inside its folder.
bool validIncludeName(const std::string &name) {
  if (name.empty() || name.front() == '/' || name.back() == '/')
    return false;
  std::stringstream ss(name);
  std::string part;
  while (std::getline(ss, part, '/'))
    if (part.empty() || part == "." || part == "..")
      return false;
  return true;
}

Status writeHeaders(const std::string &root,
                    const std::map<std::string, std::string> &headers) {
  for (const auto &[name, contents] : headers) {
    if (!validIncludeName(name))
      return Status::error("invalid header name '" + name +
                           "' (a relative path without '.' or '..' parts)");
    std::string path = root + "/" + name;
    size_t slash = path.rfind('/');
    if (Status s = makeDirs(path.substr(0, slash)))
      return s;
    if (Status s = writeFile(path, contents))
      return s;
  }
  return Status::success();
}

std::vector<std::string> splitWords(const std::string &s) {
  std::vector<std::string> words;
  std::stringstream ss(s);
  std::string w;
  while (ss >> w)
    words.push_back(w);
  return words;
}

std::vector<std::string> compilerWords() {
  const char *env = std::getenv("MOE_EMU_CXX");
  std::vector<std::string> words = splitWords(env ? env : "");
  if (words.empty())
    words.push_back("c++");
  return words;
}

std::vector<std::string> extraFlags() {
  const char *env = std::getenv("MOE_EMU_CXXFLAGS");
  return splitWords(env ? env : "");
}

/// Runs `argv` with stdout and stderr into `logPath`; returns the exit
/// status, or an error when it cannot start.
Expected<int> run(const std::vector<std::string> &argv,
                  const std::string &logPath) {
  std::vector<char *> args;
  for (const std::string &a : argv)
    args.push_back(const_cast<char *>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, logPath.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(),
                        environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    return Status::error("cannot run '" + argv[0] + "': " +
                         std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      return Status::error("waiting for '" + argv[0] + "': " + errnoText());
  }
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/// A temporary folder under `dir` (mkdtemp).
Expected<std::string> makeTempDir(const std::string &dir) {
  std::string tmpl = dir + "/tmp-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    return Status::error("cannot create a temporary folder in " + dir + ": " +
                         errnoText());
  return std::string(buf.data());
}

/// `<cxx> --version` of the compiler in use, asked once per process.
Expected<std::string> compilerIdentity(const std::string &cacheDir) {
  static std::mutex mu;
  static std::map<std::string, std::string> known;
  const std::vector<std::string> cxx = compilerWords();
  std::string command;
  for (const std::string &w : cxx)
    command += w + " ";
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find(command);
  if (it != known.end())
    return it->second;
  Expected<std::string> tmp = makeTempDir(cacheDir);
  if (!tmp)
    return tmp.status();
  std::vector<std::string> argv = cxx;
  argv.push_back("--version");
  std::string log = *tmp + "/version.txt";
  Expected<int> rc = run(argv, log);
  std::string out = readFile(log);
  removeTree(*tmp);
  if (!rc)
    return rc.status().withContext("emu: the host compiler");
  if (*rc != 0)
    return Status::error("emu: '" + command + "--version' failed:\n" + out);
  known[command] = out;
  return out;
}

std::string defaultCacheDir() {
  if (const char *d = std::getenv("MOE_CACHE_DIR"); d && *d)
    return d;
  if (const char *d = std::getenv("XDG_CACHE_HOME"); d && *d)
    return std::string(d) + "/moe-opt/kernels";
  if (const char *d = std::getenv("HOME"); d && *d)
    return std::string(d) + "/.cache/moe-opt/kernels";
  return "/tmp/moe-opt-" + std::to_string(getuid()) + "/kernels";
}

/// The embedded headers, written once per content hash into
/// <emuDir>/include-<hash>/ (complete before it is renamed into place).
Expected<std::string> emulationIncludeDir(const std::string &emuDir,
                                          const std::string &hash) {
  std::string dir = emuDir + "/include-" + hash.substr(0, 16);
  if (exists(dir + "/.complete"))
    return dir;
  Expected<std::string> tmp = makeTempDir(emuDir);
  if (!tmp)
    return tmp.status();
  if (Status s = writeHeaders(*tmp, EmuModule::embeddedHeaders())) {
    removeTree(*tmp);
    return s;
  }
  if (Status s = writeFile(*tmp + "/.complete", "")) {
    removeTree(*tmp);
    return s;
  }
  if (rename(tmp->c_str(), dir.c_str()) != 0) {
    // Another writer got there first (or a stale incomplete folder).
    removeTree(*tmp);
    if (!exists(dir + "/.complete")) {
      removeTree(dir);
      return Status::error("emu: cannot install the emulation headers in " +
                           dir);
    }
  }
  return dir;
}

std::string embeddedHash() {
  static const std::string hash = [] {
    Sha256 h;
    for (const auto &[name, contents] : EmuModule::embeddedHeaders()) {
      h.field(name);
      h.field(contents);
    }
    return h.hex();
  }();
  return hash;
}

std::vector<std::string> fixedFlags() {
  return {"-std=c++17", "-O2", "-g0", "-shared", "-fPIC", "-DMOE_EMU"};
}

} // namespace

const std::map<std::string, std::string> &EmuModule::embeddedHeaders() {
  static const std::map<std::string, std::string> headers = [] {
    std::map<std::string, std::string> m;
    size_t count = 0;
    const emu_detail::EmbeddedHeader *table =
        emu_detail::embeddedHeaderTable(count);
    for (size_t i = 0; i < count; ++i)
      m[table[i].name] = std::string(table[i].contents, table[i].size);
    return m;
  }();
  return headers;
}

EmuStats EmuModule::stats() {
  EmuStats s;
  s.compilations = gCompilations.load();
  s.cacheHits = gCacheHits.load();
  return s;
}

std::string EmuModule::compilerCommand() {
  std::string command;
  for (const std::string &w : compilerWords())
    command += (command.empty() ? "" : " ") + w;
  return command;
}

Expected<std::unique_ptr<EmuModule>>
EmuModule::compile(const std::string &source,
                   const std::map<std::string, std::string> &headers,
                   const std::string &cacheDir) {
  const std::string emuDir =
      (cacheDir.empty() ? defaultCacheDir() : cacheDir) + "/emu";
  if (Status s = makeDirs(emuDir))
    return s.withContext("emu");
  for (const auto &entry : headers)
    if (!validIncludeName(entry.first))
      return Status::error("emu: invalid header name '" + entry.first +
                           "' (a relative path without '.' or '..' parts)");

  Expected<std::string> identity = compilerIdentity(emuDir);
  if (!identity)
    return identity.status();
  const std::vector<std::string> flags = fixedFlags();
  const std::vector<std::string> extra = extraFlags();

  Sha256 h;
  h.field("moe-emu-module-v1");
  h.field(compilerCommand());
  h.field(*identity);
  for (const std::string &f : flags)
    h.field(f);
  h.field("extra");
  for (const std::string &f : extra)
    h.field(f);
  h.field(embeddedHash());
  h.field(std::to_string(headers.size()));
  for (const auto &[name, contents] : headers) {
    h.field(name);
    h.field(contents);
  }
  h.field(source);
  const std::string key = h.hex();
  const std::string libPath = emuDir + "/" + key + ".so";

  auto load = [&](bool hit) -> Expected<std::unique_ptr<EmuModule>> {
    void *handle = dlopen(libPath.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char *e = dlerror();
      return Status::error("emu: cannot load " + libPath + ": " +
                           (e ? e : "unknown error"));
    }
    std::unique_ptr<EmuModule> m(new EmuModule());
    m->handle_ = handle;
    m->path_ = libPath;
    m->key_ = key;
    m->cacheHit_ = hit;
    return Expected<std::unique_ptr<EmuModule>>(std::move(m));
  };

  if (exists(libPath)) {
    Expected<std::unique_ptr<EmuModule>> m = load(true);
    if (m) {
      ++gCacheHits;
      return std::move(m);
    }
    unlink(libPath.c_str()); // unusable entry: compile it again
  }

  removeStaleTemporaries(emuDir);
  Expected<std::string> includeDir = emulationIncludeDir(emuDir, embeddedHash());
  if (!includeDir)
    return includeDir.status();
  Expected<std::string> work = makeTempDir(emuDir);
  if (!work)
    return work.status().withContext("emu");
  struct Cleanup {
    std::string dir;
    ~Cleanup() { removeTree(dir); }
  } cleanup{*work};

  const std::string headerDir = *work + "/include";
  if (Status s = makeDirs(headerDir))
    return s.withContext("emu");
  if (Status s = writeHeaders(headerDir, headers))
    return s.withContext("emu");
  const std::string sourcePath = *work + "/kernel.cpp";
  if (Status s = writeFile(sourcePath, source))
    return s.withContext("emu");
  const std::string outPath = *work + "/kernel.so";

  std::vector<std::string> argv = compilerWords();
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back("-I" + *includeDir);
  argv.push_back("-I" + headerDir);
  // Messages (deadlock reports, asserts) name files without the temporary
  // folders: "kernel.cpp:42", "include/moe_route.cuh:7".
  argv.push_back("-ffile-prefix-map=" + *work + "/=");
  argv.push_back("-ffile-prefix-map=" + *includeDir + "/=");
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back("-o");
  argv.push_back(outPath);
  argv.push_back(sourcePath);
  argv.push_back("-lboost_context");
  std::string command;
  for (const std::string &a : argv)
    command += (command.empty() ? "" : " ") + a;

  ++gCompilations;
  const std::string logPath = *work + "/compiler.log";
  Expected<int> rc = run(argv, logPath);
  if (!rc)
    return rc.status().withContext("emu");
  if (*rc != 0) {
    std::string log = readFile(logPath);
    if (log.size() > 32768)
      log = log.substr(0, 32768) + "\n[... compiler output truncated]";
    return Status::error("emu: the host compiler failed (exit status " +
                         std::to_string(*rc) + "): " + command + "\n" + log);
  }
  if (rename(outPath.c_str(), libPath.c_str()) != 0)
    return Status::error("emu: cannot store " + libPath + ": " + errnoText());
  return load(false);
}

EmuModule::~EmuModule() {
  if (handle_)
    dlclose(handle_);
}

Expected<MoEEmuLaunchFn> EmuModule::entry(const std::string &kernel) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(kernel);
  if (it != entries_.end())
    return it->second;
  const std::string symbol = "moe_emu_launch_" + kernel;
  void *p = dlsym(handle_, symbol.c_str());
  if (!p)
    return Status::error("emu: no kernel '" + kernel + "' in " + path_ +
                         " (no symbol " + symbol +
                         "; is MOE_EMU_EXPORT_KERNEL(" + kernel +
                         ") after it?)");
  auto fn = reinterpret_cast<MoEEmuLaunchFn>(p);
  entries_[kernel] = fn;
  return fn;
}

Status EmuModule::launch(const std::string &kernel, const MoEKernelArgs &args,
                         EmuDim3 grid, EmuDim3 block,
                         unsigned dynamicSharedBytes) const {
  Expected<MoEEmuLaunchFn> fn = entry(kernel);
  if (!fn)
    return fn.status();
  char error[8192];
  error[0] = '\0';
  int rc = (*fn)(&args, grid.x, grid.y, grid.z, block.x, block.y, block.z,
                 dynamicSharedBytes, error, sizeof error);
  if (rc != 0)
    return Status::error(error[0] ? std::string(error)
                                  : "kernel " + kernel + " failed");
  return Status::success();
}

} // namespace moe::runtime
