#!/usr/bin/env bash
# Builds the libFuzzer targets (native/fuzz/CMakeLists.txt, Clang) and runs each for a bounded time, starting from its
# committed corpus (native/fuzz/corpus/<target>: seeds from real engine dirs, banks and PNGs, and regression-* inputs
# of crashes found before, each run first). Fails on any crash, leak (LeakSanitizer), UB (UBSan), uncaught non-acsdk
# exception, timeout or out-of-memory, leaving the input under $ACSDK_FUZZ_BUILD/artifacts/<target>/.
#
#   native/fuzz/run.sh                          every target, 60 s each
#   ACSDK_FUZZ_SECONDS=600 native/fuzz/run.sh png bank
#
# Environment: ACSDK_FUZZ_SECONDS (per target, default 60), ACSDK_FUZZ_BUILD (default build-fuzz, relative to the
# repository root), ACSDK_FUZZ_JOBS (parallel compile jobs, default all cores), CXX (default clang++). New inputs the
# fuzzers find go to $ACSDK_FUZZ_BUILD/corpus/<target>, never into the committed corpus.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
fuzz="$root/native/fuzz"
seconds="${ACSDK_FUZZ_SECONDS:-60}"
build="${ACSDK_FUZZ_BUILD:-build-fuzz}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
jobs="${ACSDK_FUZZ_JOBS:-$(nproc)}"
all=(manifest safetensors bank scheduler png onnx)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz: unknown target '$t' (one of: ${all[*]})" >&2; exit 2; }
done

echo "::: fuzz: configure and build ($build)"
cmake -S "$fuzz" -B "$build" -DCMAKE_CXX_COMPILER="${CXX:-clang++}" >/dev/null
cmake --build "$build" -j "$jobs"

# UBSan's report with a stack; ASan's leak check at exit (libFuzzer's -detect_leaks=1 is its default as well).
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
failed=()
summary=()
total=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  dict="$build/$t.dict"
  case "$t" in  # the JSON readers' dictionaries start with JSON's own tokens
    png | onnx) cp "$fuzz/dict/$t.dict" "$dict" ;;
    *) cat "$fuzz/dict/json.dict" "$fuzz/dict/$t.dict" >"$dict" ;;
  esac
  log="$build/$t.log"
  echo "::: fuzz: $t for ${seconds}s (log: $log)"
  rc=0
  "$build/fuzz_$t" "$build/corpus/$t" "$fuzz/corpus/$t" -dict="$dict" -max_total_time="$seconds" -timeout=30 \
    -error_exitcode=77 -timeout_exitcode=78 -artifact_prefix="$build/artifacts/$t/" -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  # (none of these is there when an input crashed before the first run's statistics)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
  line=$(printf '%-12s %10s execs %8s exec/s  cov %s' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}")
  total=$((total + ${runs:-0}))
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    line="$line  FAILED (exit $rc)"
    echo "--- fuzz: $t failed; the end of its log:"
    tail -60 "$log"
    echo "--- the input is under $build/artifacts/$t/; once fixed, commit it as native/fuzz/corpus/$t/regression-<what>"
  fi
  summary+=("$line")
done
echo "::: fuzz: summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
echo "total: $total executions"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash, leak or undefined behaviour"
