#!/bin/sh
# Build repro.c against a capisan variant: ./build.sh [asan|pydebug|valgrind]  ->  ./repro-VARIANT
set -e
cd "$(dirname "$0")"
VARIANT=${1:-asan}
# The CPython version the finding was made on (campaign.env), unless CAPISAN_VERSION names one;
# else capisan's default line (capisan_build::versions::default_line; a unit test keeps them equal).
[ -n "$CAPISAN_VERSION" ] || CAPISAN_VERSION=$(sed -n 's/^CAPISAN_VERSION=//p' campaign.env 2>/dev/null)
CAPISAN_VERSION=${CAPISAN_VERSION:-3.13}
# Variant directories are <variant>-<X.Y.Z>-<key>: the exact version, or any of the X.Y line.
V="${CAPISAN_CACHE:-$HOME/.cache/capisan}/variants/$VARIANT-$CAPISAN_VERSION"
M=$(ls -t "$V"-*/manifest.json "$V".*/manifest.json 2>/dev/null | head -n 1)
[ -f "$M" ] || { echo "no $VARIANT variant${CAPISAN_VERSION:+ of CPython $CAPISAN_VERSION} built: run cargo xtask${CAPISAN_VERSION:+ --version $CAPISAN_VERSION} build-$VARIANT" >&2; exit 2; }
eval "$(python3 - "$M" <<'PY'
import json, shlex, sys
m = json.load(open(sys.argv[1]))
san = "-fsanitize=address,undefined -fno-sanitize=function" if m["variant"] == "asan" else "-gdwarf-4"
print("CC=%s" % shlex.quote(m["compiler"]["cc"]))
print("CFLAGS=%s" % shlex.quote(san + " " + " ".join("-I" + d for d in m["include_dirs"])))
print("LIB=%s" % shlex.quote(m["libpython_static"]))
print("LIBS=%s" % shlex.quote(" ".join(m["link_libs"])))
PY
)"
$CC -g -O0 $CFLAGS repro.c -o "repro-$VARIANT" -Wl,--whole-archive "$LIB" -Wl,--no-whole-archive $LIBS -lm -Wl,--export-dynamic
echo "built ./repro-$VARIANT"
