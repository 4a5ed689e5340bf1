"""What README.md and docs/*.md cite must be inside the repository (issue
15: the README cited documents outside it, and docs/optimize.md an option,
-mlir-pass-diagnostics, that does not exist):

  * every path under one of the repository's top folders (docs/...,
    test/..., runtime/..., a glob such as runtime/kernels/*.cuh) names
    files that exist; placeholders (<dir>, PKG, X.mlir) are skipped;
  * nothing names a folder outside the tree (shared/reference, /work/);
  * every -mlir-* option is one that moe-opt accepts (--help-hidden).

Prints one line per problem, then a count; exit 1 when there is any.

  check_citations.py ROOT HELP_TEXT_FILE
"""
import glob
import os
import re
import sys

TOPS = ("docs", "test", "bench", "scripts", "runtime", "include", "lib",
        "tools", "examples", "dialects", "passes", "codegen", "cmake")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*{}<>,-]*[\w*}])"
                  % "|".join(TOPS))
OUTSIDE = re.compile(r"shared/reference|/work/")
OPTION = re.compile(r"(?<![\w-])(--?mlir-[a-z0-9-]+)")
PLACEHOLDER = re.compile(r"^[A-Z_]+(\.\w+)?$")


def main():
    root, help_file = sys.argv[1], sys.argv[2]
    known = set(re.findall(r"^\s+(--?mlir-[a-z0-9-]+)",
                           open(help_file, encoding="utf-8").read(),
                           re.MULTILINE))
    known |= {o.lstrip("-") for o in known}
    files = [os.path.join(root, "README.md")] + sorted(
        glob.glob(os.path.join(root, "docs", "*.md")))
    problems = []
    for f in files:
        text = open(f, encoding="utf-8").read()
        name = os.path.relpath(f, root)

        def where(m):
            return "%s:%d" % (name, text.count("\n", 0, m.start()) + 1)

        for m in PATH.finditer(text):
            ref = m.group(1).rstrip(".,")
            last = ref.rsplit("/", 1)[-1]
            if (any(c in ref for c in "<>{}") or
                    PLACEHOLDER.match(last)):
                continue
            if not glob.glob(os.path.join(root, ref)):
                problems.append("%s: %s: no such file in the repository"
                                % (where(m), ref))
        for m in OUTSIDE.finditer(text):
            problems.append("%s: %s: outside the repository"
                            % (where(m), m.group(0)))
        for m in OPTION.finditer(text):
            if m.group(1).lstrip("-") not in known:
                problems.append("%s: %s: not an option of moe-opt"
                                % (where(m), m.group(1)))
    for p in problems:
        print(p)
    print("%d files checked, %d problems" % (len(files), len(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
