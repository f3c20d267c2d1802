#!/usr/bin/env bash
# Opens a run's report.html in headless Chromium (Debian's `chromium`) and saves a full-page
# screenshot, to look at the page as a person does:
#   bash Tests/report-screenshot.sh RUN [OUT.png]     default OUT: RUN/report-screenshot.png
# Installs chromium with apt-get when it is missing (as root, or with sudo).
set -euo pipefail
run=${1:?usage: bash Tests/report-screenshot.sh RUN [OUT.png]}
out=${2:-$run/report-screenshot.png}
[ -f "$run/report.html" ] || { echo "no $run/report.html: run dino report $run first" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
  S=$([ "$(id -u)" = 0 ] || echo sudo)
  $S apt-get update -qq && DEBIAN_FRONTEND=noninteractive $S apt-get install -y -qq chromium
fi
# Tall enough for the whole page; --allow-file-access-from-files is not needed: every picture is inline.
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,${HEIGHT:-6000} \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$run")/report.html" 2>/dev/null
echo "screenshot: $out"
