#!/usr/bin/env bash
# Runs every configuration through dino-bench and the PyTorch reference, alternating ROUNDS times
# (default 3), and prints the medians and their ratio. On a shared or virtual machine throughput
# drifts from minute to minute; alternating the two programs and taking medians keeps the ratio fair.
# dino_peak, torch_peak: the official model's FLOPs per second as a share of the sgemm peak (the same
# count for both programs); dino_exec: the FLOPs this project computes (the class-token-only last
# block, drop path's skipped branches) per second, as a share of the peak: how busy the cores are.
# pair_ratio: the median over rounds of each round's dino / PyTorch ratio (the two runs of a round
# are minutes apart, so slow drift cancels within a pair). blas: the OpenBLAS kernel set dino ran
# (OpenBLAS picks it from the CPU, or from OPENBLAS_CORETYPE; AVX-512 ones can double GEMM speed).
# PRECISION=bfloat16: dino-bench with --matmul-precision bfloat16 against PyTorch under
# torch.autocast("cpu", dtype=torch.bfloat16) (both need AVX-512 BF16 to gain anything; both use AMX
# where the CPU has it). BF16_KERNEL=avx512 keeps dino's bfloat16 products off AMX, for comparison.
# Usage: [ROUNDS=3] [PRECISION=float32|bfloat16] [BF16_KERNEL=auto|avx512] bash Benchmarks/compare.sh [threads] [config...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}; shift || true
rounds=${ROUNDS:-3}
precision=${PRECISION:-float32}
dino_precision=(--matmul-precision "$precision" --bfloat16-kernel "${BF16_KERNEL:-auto}"); torch_precision=()
[ "$precision" = float32 ] || torch_precision=(--autocast-bf16)
configs=("$@"); [ ${#configs[@]} -gt 0 ] || configs=(fmnist-tiny cifar-tiny features-tiny4 features-small16 in-small16)
swift build -c release --product dino-bench >/dev/null
printf '%-17s %12s %12s %7s %10s %9s %9s %9s %10s %10s  %s %s\n' config dino_img/s torch_img/s ratio pair_ratio dino_peak torch_peak dino_exec dino_MiB torch_MiB blas matmuls
for c in "${configs[@]}"; do
  results=()
  for ((r = 0; r < rounds; r++)); do
    results+=("$(.build/release/dino-bench --config "$c" --threads "$threads" --json "${dino_precision[@]}")")
    results+=("$(python3 Benchmarks/pytorch_bench.py --config "$c" --threads "$threads" --json "${torch_precision[@]}")")
  done
  python3 - "${results[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
d = [r for r in runs if r["program"] == "dino"]
t = [r for r in runs if r["program"] != "dino"]
def med(rs, key): return statistics.median(r[key] for r in rs)
di, ti = med(d, "images_per_s"), med(t, "images_per_s")
pairs = statistics.median(a["images_per_s"] / b["images_per_s"] for a, b in zip(d, t))
print(f"{d[0]['config']:<17} {di:12.1f} {ti:12.1f} {di/ti:6.2f}x {pairs:9.2f}x "
      f"{100*med(d, 'share_of_peak'):8.0f}% {100*med(t, 'share_of_peak'):8.0f}% {100*med(d, 'executed_share_of_peak'):8.0f}% "
      f"{max(r['peak_rss_mib'] for r in d):10.0f} {max(r['peak_rss_mib'] for r in t):10.0f}  {d[0].get('blas_core', '?')} "
      f"{d[0].get('matmul_precision', 'float32')}"
      + (f" ({d[0]['bfloat16_kernel']})" if d[0].get('matmul_precision') == 'bfloat16' else ""))
PY
done
