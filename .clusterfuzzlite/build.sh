#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build. base-builder provides $SRC, $OUT, $WORK, $CC, $CXX, $CFLAGS,
# $LIB_FUZZING_ENGINE and $SANITIZER. CPython is configured by capisan with its own sanitizer
# flags (ASan + UBSan + -fsanitize=fuzzer-no-link; $CFLAGS would not give CPython's
# --with-address-sanitizer settings), built with $CC, and the Rust target links its libFuzzer
# from libfuzzer-sys, as cargo-fuzz targets do on OSS-Fuzz. Set CPYTHON_SRC to build a given
# CPython checkout instead of Debian's source package.
cd "$SRC/capisan"
if [ "${SANITIZER:-address}" != "address" ]; then
  echo "capisan's fuzz targets need SANITIZER=address (got $SANITIZER)" >&2
  exit 1
fi
export CAPISAN_CACHE="${CAPISAN_CACHE:-$WORK/capisan-cache}"
export CAPISAN_CC="${CC:-clang}"
export CC CXX
cargo xtask build-asan
cargo xtask fuzz-build capi_sequences --variant asan --out "$OUT"
