# -*- Python -*-
# lit configuration of the moe-opt test suite.

import os
import shutil
import subprocess

import lit.formats
from lit.llvm import llvm_config

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["lit.cfg.py", "lit.site.cfg.py", "CMakeLists.txt",
                   "Inputs", "oracle_lib"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

llvm_config.use_default_substitutions()
config.environment["FILECHECK_OPTS"] = (
    "-enable-var-scope --allow-unused-prefixes=false")

tool_dirs = [config.moe_tools_dir, config.llvm_tools_dir]
llvm_config.add_tool_substitutions(
    ["moe-opt", "moe-import", "moe-run", "moe-translate", "moe-compile",
     "moe-report"],
    tool_dirs)
llvm_config.with_environment("PATH", config.moe_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# Compiled kernels (NVRTC and the CPU emulation) are cached inside the build
# tree, not in the user's cache.
config.environment["MOE_CACHE_DIR"] = os.path.join(config.moe_obj_root,
                                                   "test", "kernel-cache")

# Test oracles use Debian's python3 with python3-numpy, never the code under
# test.
debian_python = "/usr/bin/python3"
config.substitutions.append(("%python", debian_python))
config.substitutions.append(("%moe_src", config.moe_src_root))
config.substitutions.append(("%moe_obj", config.moe_obj_root))
try:
    subprocess.run([debian_python, "-c", "import numpy"], check=True,
                   capture_output=True)
    config.available_features.add("numpy")
except Exception:
    pass

# torch (Debian's python3-torch, scripts/install-deps.sh) runs the
# expert-parallel runner's tests; every machine of the project has it, so a
# test that needs it and is skipped fails scripts/test.sh. Found, not
# imported (an import takes seconds); the tests check torch.distributed.
try:
    subprocess.run([debian_python, "-c",
                    "import importlib.util, sys; "
                    "sys.exit(importlib.util.find_spec('torch') is None)"],
                   check=True, capture_output=True)
    config.available_features.add("torch")
except Exception:
    pass

# Tests that make device nodes (mknod) run as root only, as CI does.
if hasattr(os, "geteuid") and os.geteuid() == 0:
    config.available_features.add("root")

# NVRTC compiles without a GPU; cuda-gpu needs a real device.
cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
if os.path.exists(os.path.join(cuda_home, "lib64", "libnvrtc.so")) or \
        os.path.exists(os.path.join(cuda_home, "lib64", "libnvrtc.so.13")):
    config.available_features.add("nvrtc")
if shutil.which("nvidia-smi"):
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                             timeout=20, text=True)
        if out.returncode == 0 and "GPU" in out.stdout:
            config.available_features.add("cuda-gpu")
            # moe_opt.torch's CUDA path needs a torch built with CUDA.
            try:
                subprocess.run([debian_python, "-c",
                                "import torch; "
                                "assert torch.cuda.is_available()"],
                               check=True, capture_output=True, timeout=120)
                config.available_features.add("torch-cuda")
            except Exception:
                pass
        # Expert-parallel runs over NCCL need two GPUs and a torch with
        # CUDA and NCCL (Debian's python3-torch has neither).
        if out.returncode == 0 and out.stdout.count("GPU ") >= 2:
            subprocess.run([debian_python, "-c",
                            "import torch, torch.distributed as d; "
                            "assert torch.cuda.device_count() >= 2 and "
                            "d.is_nccl_available()"],
                           check=True, capture_output=True, timeout=120)
            config.available_features.add("torch-nccl-2gpu")
    except Exception:
        pass
