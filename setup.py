"""Builds the extension moe_opt._moe_opt for `pip install .` and
`pip wheel .` (pyproject.toml has the rest of the package's description).

The extension is the CMake target `moe_opt` (runtime/python/CMakeLists.txt).
It is built in one of two CMake build folders:

  * MOE_OPT_CMAKE_BUILD_DIR, when set: an existing build of the project or
    of runtime/ (e.g. `build`, made by scripts/build.sh), whose target is
    brought up to date;
  * otherwise build/python-runtime: a standalone build of runtime/ (no
    MLIR or LLVM needed), configured for the interpreter that runs pip.

Nothing is downloaded: run pip with --no-build-isolation --no-index (the
build needs Debian's python3-setuptools, python3-wheel, pybind11-dev,
python3-dev, cmake and a C++ compiler; scripts/install-deps.sh installs
them).
"""
import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def cmake_build_dir():
    given = os.environ.get("MOE_OPT_CMAKE_BUILD_DIR")
    if given:
        given = os.path.abspath(given)
        if not os.path.isfile(os.path.join(given, "CMakeCache.txt")):
            sys.exit("MOE_OPT_CMAKE_BUILD_DIR=%s: not a CMake build folder "
                     "(no CMakeCache.txt); build the project first "
                     "(scripts/build.sh) or unset it" % given)
        return given, False
    return os.path.join(ROOT, "build", "python-runtime"), True


class CMakeExtension(Extension):
    """An extension that CMake builds: setuptools compiles nothing."""

    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir, standalone = cmake_build_dir()
        if standalone and not os.path.isfile(
                os.path.join(build_dir, "CMakeCache.txt")):
            cmd = ["cmake", "-S", os.path.join(ROOT, "runtime"), "-B",
                   build_dir, "-DCMAKE_BUILD_TYPE=Release",
                   "-DMOE_PYTHON_EXECUTABLE=" + sys.executable]
            if shutil.which("ninja"):
                cmd += ["-G", "Ninja"]
            subprocess.check_call(cmd)
        jobs = os.environ.get("MOE_JOBS", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", "--build", build_dir, "--target",
                               "moe_opt", "-j", jobs])
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = os.path.join(build_dir, "python", "moe_opt",
                             "_moe_opt" + suffix)
        if not os.path.isfile(built):
            sys.exit("%s: not built; the CMake build in %s is for another "
                     "Python than %s (%s), or it found no pybind11-dev or "
                     "python3-dev (see its configure output)"
                     % (built, build_dir, sys.executable, suffix))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(built, target)


# setuptools' own intermediate folders go next to the CMake build, not
# into the source tree; emptied first, so that a file no longer in the
# package does not stay in its wheel.
_scratch = os.path.join(cmake_build_dir()[0], "setuptools")
shutil.rmtree(_scratch, ignore_errors=True)
os.makedirs(_scratch)

setup(
    ext_modules=[CMakeExtension("moe_opt._moe_opt")],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": _scratch},
             "egg_info": {"egg_base": _scratch}},
)
