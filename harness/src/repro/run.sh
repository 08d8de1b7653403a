#!/bin/sh
# Run a reproducer with the variant's run-time environment:
#   ./run.sh [asan|pydebug|valgrind] [c|py]     (EXT_PATH: directory of the extension built for it)
set -e
cd "$(dirname "$0")"
VARIANT=${1:-asan}; KIND=${2:-c}
# The CPython version the finding was made on (campaign.env), unless CAPISAN_VERSION names one;
# else capisan's default line (capisan_build::versions::default_line; a unit test keeps them equal).
[ -n "$CAPISAN_VERSION" ] || CAPISAN_VERSION=$(sed -n 's/^CAPISAN_VERSION=//p' campaign.env 2>/dev/null)
CAPISAN_VERSION=${CAPISAN_VERSION:-3.13}
# Variant directories are <variant>-<X.Y.Z>-<key>: the exact version, or any of the X.Y line.
V="${CAPISAN_CACHE:-$HOME/.cache/capisan}/variants/$VARIANT-$CAPISAN_VERSION"
M=$(ls -t "$V"-*/manifest.json "$V".*/manifest.json 2>/dev/null | head -n 1)
eval "$(python3 - "$M" <<'PY'
import json, shlex, sys
m = json.load(open(sys.argv[1]))
for k, v in m["runtime_env"].items():
    print("export %s=%s" % (k, shlex.quote(v)))
if m.get("symbolizer"):
    print("export ASAN_SYMBOLIZER_PATH=%s" % shlex.quote(m["symbolizer"]))
print("PY=%s" % shlex.quote(m["python"]))
PY
)"
[ -n "$PYTHONMALLOC_OVERRIDE" ] && export PYTHONMALLOC="$PYTHONMALLOC_OVERRIDE"
[ -n "$EXT_PATH" ] && export PYTHONPATH="$EXT_PATH:$PYTHONPATH"
if [ "$KIND" = py ]; then exec "$PY" repro.py; else exec "./repro-$VARIANT"; fi
