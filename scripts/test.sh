#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test
# (lit + FileCheck regression tests, GoogleTest units, numpy oracles) and
# fails when a test fails or a whole test group ran nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${MOE_BUILD_DIR:-$root/build}

bash "$root/scripts/build.sh"

report="$build/test-results.xml"
rm -f "$report"
status=0
/usr/lib/llvm-22/bin/lit -sv --xunit-xml-output "$report" "$build/test" || status=$?
/usr/bin/python3 "$root/scripts/check-test-groups.py" "$report" "$root/test" || status=1
exit $status
