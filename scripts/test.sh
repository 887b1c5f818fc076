#!/usr/bin/env bash
# The tests: install what is missing, then run the whole suite (unit, gradient checks, CLI end to
# end, mpirun, multi-host over network namespaces and a one-node Slurm when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --scaling
# The Slurm tests (deploy/slurm.sbatch: time limits, signals, requeue) need a running Slurm. As
# root, start a one-node one (installing Debian's slurm-wlm and munge if missing); otherwise, or
# with ORTHOHASH_TEST_SLURM=0, those tests are skipped and say why.
if [ "$(id -u)" -eq 0 ] && [ "${ORTHOHASH_TEST_SLURM:-1}" != 0 ]; then
  scripts/slurm-local.sh up || echo "test: Slurm did not start; its tests will be skipped"
fi
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
