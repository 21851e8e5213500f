#!/usr/bin/env bash
# Tests the CUDA library search of check.sh (benches/gpu/cuda_libs.sh) on fake trees in a temp
# directory, without a GPU or a toolkit: a stubs/ library is never chosen (even when it sorts
# last or is the only one), the toolkit's targets/x86_64-linux/lib beats lib64, which beats the
# pip wheels, dangling symlinks are skipped, and libnvrtc-builtins' directory lands on
# LD_LIBRARY_PATH. Run by .ci/run; takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp # the symlink directories of find_cuda_libs go away with it
failures=0

fail() {
    echo "test_cuda_libs: FAIL: $*" >&2
    failures=$((failures + 1))
}

# A file that looks like a shared library (the search never opens them).
lib() {
    mkdir -p "$(dirname "$1")"
    printf '\177ELF fake %s\n' "$(basename "$1")" >"$1"
}

# choice CASE LIB: the path `check.sh libs` chooses for LIB in the tree of CASE.
choice() {
    PS_CUDA_ROOTS="$tmp/$1/cuda" PS_CUDA_SITE_DIRS="$tmp/$1/site" LD_LIBRARY_PATH="" \
        bash benches/gpu/check.sh libs 2>/dev/null | awk -v l="$2" '$1 == l { print $2 }' || true
}

expect() {
    local got
    got=$(choice "$1" "$2")
    [ "$got" = "$3" ] || fail "$1: $2 is '$got', expected '$3'"
    case "/$got/" in */stubs/*) fail "$1: $2 is a stub: $got" ;; esac
}

# 1. The layout of the GPU machine: CUDA 13 in targets/x86_64-linux/lib with a stubs/ directory
#    whose names sort after the real ones.
t=$tmp/toolkit/cuda/targets/x86_64-linux/lib
lib "$t/libnvrtc.so.13.0.48"
ln -s libnvrtc.so.13.0.48 "$t/libnvrtc.so.13"
ln -s libnvrtc.so.13 "$t/libnvrtc.so"
lib "$t/libnvrtc-builtins.so.13.0.48"
ln -s libnvrtc-builtins.so.13.0.48 "$t/libnvrtc-builtins.so.13.0"
lib "$t/libcublas.so.13.0.0.19"
ln -s libcublas.so.13.0.0.19 "$t/libcublas.so.13"
lib "$t/libcublasLt.so.13.0.0.19"
lib "$t/stubs/libnvrtc.so"
lib "$t/stubs/libnvrtc.so.99"
lib "$t/stubs/libcublas.so"
lib "$t/stubs/libcublasLt.so.99"
# lib64 as a symlink into targets/, as the toolkit installs it.
ln -s targets/x86_64-linux/lib "$tmp/toolkit/cuda/lib64"
expect toolkit libnvrtc "$t/libnvrtc.so.13.0.48"
expect toolkit libnvrtc-builtins "$t/libnvrtc-builtins.so.13.0.48"
expect toolkit libcublas "$t/libcublas.so.13.0.0.19"
expect toolkit libcublasLt "$t/libcublasLt.so.13.0.0.19"
ldpath=$(PS_CUDA_ROOTS="$tmp/toolkit/cuda" PS_CUDA_SITE_DIRS="" LD_LIBRARY_PATH="" \
    bash -c '. benches/gpu/cuda_libs.sh; find_cuda_libs >/dev/null 2>&1; echo "$LD_LIBRARY_PATH"')
case ":$ldpath:" in *":$t:"*) ;; *) fail "toolkit: $t not on LD_LIBRARY_PATH ($ldpath)" ;; esac
case "$ldpath" in *stubs*) fail "toolkit: a stubs directory is on LD_LIBRARY_PATH ($ldpath)" ;; esac

# 2. Only stubs in the toolkit (and a symlink into stubs/): a pip wheel's library wins.
t=$tmp/onlystubs/cuda/targets/x86_64-linux/lib
lib "$t/stubs/libnvrtc.so"
mkdir -p "$t"
ln -s stubs/libnvrtc.so "$t/libnvrtc.so.13"
w=$tmp/onlystubs/site/nvidia/cuda_nvrtc/lib
lib "$w/libnvrtc.so.12"
lib "$w/libnvrtc-builtins.so.12.9"
expect onlystubs libnvrtc "$w/libnvrtc.so.12"
expect onlystubs libnvrtc-builtins "$w/libnvrtc-builtins.so.12.9"

# 3. Nothing but stubs: nothing is chosen, and the search says so with a failing status.
lib "$tmp/nothing/cuda/lib64/stubs/libnvrtc.so"
expect nothing libnvrtc NONE
if PS_CUDA_ROOTS="$tmp/nothing/cuda" PS_CUDA_SITE_DIRS="" \
    bash benches/gpu/check.sh libs >/dev/null 2>&1; then
    fail "nothing: 'check.sh libs' succeeded without libnvrtc"
fi

# 4. Order: targets/x86_64-linux/lib before lib64 before the wheels; a dangling symlink skipped.
lib "$tmp/order/cuda/lib64/libnvrtc.so.13"
lib "$tmp/order/cuda/lib64/libcublas.so.13"
lib "$tmp/order/site/nvidia/cublas/lib/libcublasLt.so.12"
t=$tmp/order/cuda/targets/x86_64-linux/lib
lib "$t/libnvrtc.so.13"
ln -s libcublas.so.13.9.9 "$t/libcublas.so.13"
expect order libnvrtc "$t/libnvrtc.so.13"
expect order libcublas "$tmp/order/cuda/lib64/libcublas.so.13"
expect order libcublasLt "$tmp/order/site/nvidia/cublas/lib/libcublasLt.so.12"

if [ "$failures" -ne 0 ]; then
    echo "test_cuda_libs: $failures failure(s)" >&2
    exit 1
fi
echo "test_cuda_libs: ok (stubs never chosen; toolkit, lib64, wheels in that order)"
