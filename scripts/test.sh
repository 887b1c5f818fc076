#!/usr/bin/env bash
# The tests: install what is missing, then run the whole suite (unit, gradient checks, CLI end to
# end, mpirun, multi-host over network namespaces when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --build-tests 2>&1 | tail -1
log=$(mktemp)
set +e
# The suite is XCTest only; passing test cases are dropped from the output to keep it short.
swift test --skip-build --disable-swift-testing 2>&1 | tee "$log" | grep --line-buffered -vE "^Test Case .* (started|passed)"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -cE "^Test Case .* passed" "$log" || true)
failed=$(grep -cE "^Test Case .* failed" "$log" || true)
skipped=$(grep -cE "^Test Case .* skipped" "$log" || true)
rm -f "$log"
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
