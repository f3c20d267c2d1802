#!/usr/bin/env bash
# Runs every configuration through dino-bench and the PyTorch reference, one after the other, and
# prints both and their ratio. Usage: bash Benchmarks/compare.sh [threads] [config...]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}; shift || true
configs=("$@"); [ ${#configs[@]} -gt 0 ] || configs=(fmnist-tiny cifar-tiny features-tiny4 features-small16 in-small16)
swift build -c release --product dino-bench >/dev/null
printf '%-17s %12s %12s %7s %9s %9s %10s %10s\n' config dino_img/s torch_img/s ratio dino_peak torch_peak dino_MiB torch_MiB
for c in "${configs[@]}"; do
  d=$(.build/release/dino-bench --config "$c" --threads "$threads" --json)
  t=$(python3 Benchmarks/pytorch_bench.py --config "$c" --threads "$threads" --json)
  python3 - "$d" "$t" <<'PY'
import json, sys
d, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{d['config']:<17} {d['images_per_s']:12.1f} {t['images_per_s']:12.1f} {d['images_per_s']/t['images_per_s']:6.2f}x "
      f"{100*d['share_of_peak']:8.0f}% {100*t['share_of_peak']:8.0f}% {d['peak_rss_mib']:10.0f} {t['peak_rss_mib']:10.0f}")
PY
done
