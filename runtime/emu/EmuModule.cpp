//===- EmuModule.cpp - Kernels compiled for the CPU emulation -------------===//
//
// Part of moe-opt. See include/moe/runtime/EmuModule.h. Plain C++17 and
// POSIX (posix_spawn, dlopen): no LLVM, no MLIR, no CUDA.
//
//===----------------------------------------------------------------------===//

#include "EmuModule.h"
#include "moe/runtime/CacheFolder.h"
#include "moe/runtime/KernelCache.h"

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
// Cache keys: length-prefixed fields hashed with the runtime's SHA-256
//===----------------------------------------------------------------------===//

class KeyHash {
public:
  /// Adds one field; the length prefix keeps ("ab", "c") and ("a", "bc")
  /// apart.
  void field(std::string_view data) {
    uint64_t n = data.size();
    hash_.update(&n, sizeof n);
    hash_.update(data);
  }
  std::string hex() {
    static const char *digits = "0123456789abcdef";
    std::string out;
    for (uint8_t b : hash_.finish()) {
      out.push_back(digits[b >> 4]);
      out.push_back(digits[b & 15]);
    }
    return out;
  }

private:
  ::moe::runtime::Sha256 hash_;
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

/// Reads a whole file into `out`; false when it cannot be read (`out` is
/// then empty).
bool readFile(const std::string &path, std::string &out) {
  out.clear();
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::stringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return static_cast<bool>(in) || in.eof();
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
  // Asked in this process's private folder: the cache may be read-only.
  (void)cacheDir;
  Expected<std::string> privateDir = processPrivateFolder();
  if (!privateDir)
    return privateDir.status().withContext("emu");
  Expected<std::string> tmp = makeTempDir(*privateDir);
  if (!tmp)
    return tmp.status();
  std::vector<std::string> argv = cxx;
  argv.push_back("--version");
  std::string log = *tmp + "/version.txt";
  Expected<int> rc = run(argv, log);
  std::string out;
  readFile(log, out); // A log that cannot be read reads as empty.
  removeTree(*tmp);
  if (!rc)
    return rc.status().withContext("emu: the host compiler");
  if (*rc != 0)
    return Status::error("emu: '" + command + "--version' failed:\n" + out);
  known[command] = out;
  return out;
}

/// The record beside a cached library: its key, size and SHA-256, checked
/// before the library is loaded.
std::string libraryRecord(const std::string &key, const std::string &bytes) {
  return "moe-emu-library 1\nkey " + key + "\nsize " +
         std::to_string(bytes.size()) + "\nsha256 " + Sha256::hex(bytes) +
         "\n";
}


/// Loads library bytes that were checked: they are copied to a file of
/// their own in this process's private folder and loaded from there, so
/// that nothing can change them between the check and dlopen (and no two
/// loads share a file name, which dlopen would take for the same library).
Expected<void *> loadCheckedLibrary(const std::string &bytes,
                                    const std::string &key) {
  static std::atomic<uint64_t> counter{0};
  Expected<std::string> dir = processPrivateFolder();
  if (!dir)
    return dir.status().withContext("emu");
  std::string path = *dir + "/" + key.substr(0, 16) + "-" +
                     std::to_string(counter++) + ".so";
  if (Status s = writeFile(path, bytes))
    return s.withContext("emu");
  void *handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  const char *e = handle ? nullptr : dlerror();
  unlink(path.c_str()); // The mapping stays; the file is not needed.
  if (!handle)
    return Status::error(std::string("emu: cannot load the kernel library: ") +
                         (e ? e : "unknown error"));
  return handle;
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
    KeyHash h;
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
  // Only a folder that no other user can write (CacheFolder.h).
  std::vector<std::string> warnings;
  CacheFolder folder = chooseCacheFolder(cacheDir);
  if (!folder.warning.empty())
    warnings.push_back("emu: " + folder.warning);
  std::string emuDir = folder.path + "/emu";
  if (Status s = makeDirs(emuDir))
    return s.withContext("emu");
  if (Status s = checkCacheFolder(emuDir); s && !folder.isPrivate) {
    Expected<std::string> own = processPrivateFolder();
    if (!own)
      return own.status().withContext("emu");
    warnings.push_back("emu: kernel cache: not using " + emuDir + ": " +
                       s.message() + "; using a private folder instead");
    emuDir = *own + "/kernels/emu";
    if (Status made = makeDirs(emuDir))
      return made.withContext("emu");
  }
  for (const auto &entry : headers)
    if (!validIncludeName(entry.first))
      return Status::error("emu: invalid header name '" + entry.first +
                           "' (a relative path without '.' or '..' parts)");

  Expected<std::string> identity = compilerIdentity(emuDir);
  if (!identity)
    return identity.status();
  const std::vector<std::string> flags = fixedFlags();
  const std::vector<std::string> extra = extraFlags();

  KeyHash h;
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
  const std::string recordPath = emuDir + "/" + key + ".record";

  // Loads library bytes whose record was checked.
  auto load = [&](const std::string &bytes,
                  bool hit) -> Expected<std::unique_ptr<EmuModule>> {
    Expected<void *> handle = loadCheckedLibrary(bytes, key);
    if (!handle)
      return handle.status();
    std::unique_ptr<EmuModule> m(new EmuModule());
    m->handle_ = *handle;
    m->path_ = libPath;
    m->key_ = key;
    m->cacheHit_ = hit;
    m->warnings_ = warnings;
    return Expected<std::unique_ptr<EmuModule>>(std::move(m));
  };

  // A cached library is loaded only when its record names this key and
  // its bytes have the recorded size and SHA-256.
  if (exists(libPath) || exists(recordPath)) {
    std::string bytes, record;
    std::string problem;
    if (!readFile(libPath, bytes))
      problem = "the library cannot be read";
    else if (!readFile(recordPath, record))
      problem = "it has no record of its key and SHA-256";
    else if (record != libraryRecord(key, bytes))
      problem = "its bytes or key do not match its record";
    if (problem.empty()) {
      Expected<std::unique_ptr<EmuModule>> m = load(bytes, true);
      if (m) {
        ++gCacheHits;
        return std::move(m);
      }
      problem = m.message();
    }
    warnings.push_back("emu: kernel cache: unusable entry " + libPath + " (" +
                       problem + "); compiling again");
    unlink(libPath.c_str());
    unlink(recordPath.c_str());
  }

  // A read-only cache still works: the library is compiled in the private
  // folder and not stored.
  std::string workRoot = emuDir;
  bool store = access(emuDir.c_str(), W_OK) == 0;
  if (!store) {
    Expected<std::string> own = processPrivateFolder();
    if (!own)
      return own.status().withContext("emu");
    warnings.push_back("emu: kernel cache: " + emuDir +
                       " is not writable; compiling without storing");
    workRoot = *own;
  }
  if (store)
    removeStaleTemporaries(emuDir);
  Expected<std::string> includeDir =
      emulationIncludeDir(workRoot, embeddedHash());
  if (!includeDir)
    return includeDir.status();
  Expected<std::string> work = makeTempDir(workRoot);
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
    std::string log;
    readFile(logPath, log);
    if (log.size() > 32768)
      log = log.substr(0, 32768) + "\n[... compiler output truncated]";
    return Status::error("emu: the host compiler failed (exit status " +
                         std::to_string(*rc) + "): " + command + "\n" + log);
  }
  std::string bytes;
  if (!readFile(outPath, bytes))
    return Status::error("emu: cannot read the compiled library " + outPath);
  if (store) {
    // The record first: a library without one is never loaded.
    const std::string recordTemp = *work + "/kernel.record";
    Status stored = writeFile(recordTemp, libraryRecord(key, bytes));
    if (stored.ok() && rename(recordTemp.c_str(), recordPath.c_str()) != 0)
      stored = Status::error("cannot store " + recordPath + ": " + errnoText());
    if (stored.ok() && rename(outPath.c_str(), libPath.c_str()) != 0)
      stored = Status::error("cannot store " + libPath + ": " + errnoText());
    if (!stored.ok())
      warnings.push_back("emu: kernel cache: " + stored.message());
  }
  return load(bytes, false);
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
