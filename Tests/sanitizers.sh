#!/usr/bin/env bash
# The test suite under sanitizers (not part of every CI run; see README, "Reliability").
#   bash Tests/sanitizers.sh [address|thread|all]      default: all
# address: the whole suite built with AddressSanitizer (Swift and C) and UndefinedBehaviorSanitizer
#          (the C kernels: Swift has no UBSan, its own checks trap), in .build-asan; the
#          command-line tests run the sanitized `dino` too.
# thread:  ThreadSanitizer on the tests that drive the thread pool, the batch shards and the
#          background loader, in .build-tsan.
# A sanitizer report fails the run (halt_on_error); reports go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
export SWIFT_BACKTRACE=enable=no   # the runtime's own crash handler confuses the sanitizers' reports

if [ "$which" = address ] || [ "$which" = all ]; then
  export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  ubsan=(-Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined -Xswiftc -Xclang-linker -Xswiftc -fsanitize=undefined)
  swift build -c release --build-tests --scratch-path .build-asan --sanitize=address "${ubsan[@]}"
  swift test -c release --skip-build --scratch-path .build-asan --sanitize=address "${ubsan[@]}"
fi

if [ "$which" = thread ] || [ "$which" = all ]; then
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
  filter='OptimizedKernelTests/testParallel|OptimizedKernelTests/testChangingTheThreadCount|OptimizedKernelTests/testOneAndTwoThreads'
  filter+='|OptimizedKernelTests/testGEMMPieces|ResumeTests/testTrainingStepIsBitIdenticalOnOneAndTwoThreads|ResumeTests/testBatchShards'
  filter+='|ResumeTests/testResumeGivesIdenticalLosses|AugmentationTests/testLoaderBatchesAreDeterministicAndViewsMajor'
  filter+='|AugmentationTests/testUnreadableImagesAreSkippedAndCountedOrFail|KNNTests'
  swift build -c release --build-tests --scratch-path .build-tsan --sanitize=thread
  swift test -c release --skip-build --scratch-path .build-tsan --sanitize=thread --filter "$filter"
fi
