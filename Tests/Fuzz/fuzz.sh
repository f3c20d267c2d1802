#!/usr/bin/env bash
# Coverage-guided fuzzing of the readers with libFuzzer (and AddressSanitizer).
#   bash Tests/Fuzz/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s each, every target
# Builds dino-fuzz with -sanitize=fuzzer,address into .build-fuzz, then runs each target from a copy of
# its committed seed corpus (Tests/Fuzz/Corpus/TARGET) for the given time or FUZZ_RUNS executions,
# whichever ends first. New inputs go to .build-fuzz/corpus/TARGET; a crash leaves
# .build-fuzz/crash-TARGET-* (replay it: .build/release/dino-fuzz replay TARGET FILE) and fails the script.
# Summary lines (target, executions, seconds, result) go to .build-fuzz/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(safetensors torch idx npy recipe jpeg png)
runs=${FUZZ_RUNS:--1}

swift build -c release --product dino-fuzz --scratch-path .build-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -DLIBFUZZER -Xswiftc -use-ld=lld >&2
binary=.build-fuzz/release/dino-fuzz
status=0
for target in "${targets[@]}"; do
  corpus=.build-fuzz/corpus/$target
  mkdir -p "$corpus"
  cp -n Tests/Fuzz/Corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  log=.build-fuzz/fuzz-$target.log
  started=$(date +%s)
  if SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 "$binary" "$target" -max_total_time="$seconds" -runs="$runs" \
       -rss_limit_mb=4096 -malloc_limit_mb=3072 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix=.build-fuzz/crash-"$target"- "$corpus" >"$log" 2>&1; then result=ok; else result=CRASH; status=1; fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  line="$target executions=$execs seconds=$(( $(date +%s) - started )) corpus=$(ls "$corpus" | wc -l) result=$result"
  echo "$line" | tee -a .build-fuzz/summary.txt
  [ "$result" = ok ] || tail -n 40 "$log" >&2
done
exit $status
