# Finds the CUDA libraries the GPU check needs (sourced by check.sh and by test_cuda_libs.sh).
#
#   find_cuda_libs   chooses libnvrtc, libcublas and libcublasLt (and the directory of
#                    libnvrtc-builtins, which NVRTC dlopens by itself), prints each choice as
#                    "cuda-libs: libX -> PATH", and puts them on LD_LIBRARY_PATH: a private
#                    directory of symlinks named libX.so first (cudarc dlopens libnvrtc.so before
#                    .so.13 / .so.12), then the directories the libraries live in.
#
# Search order, best first, and the first directory that holds a usable library wins:
#   1. each toolkit root's targets/x86_64-linux/lib, then its lib64. Roots: $PS_CUDA_ROOTS when
#      set (space-separated), else $CUDA_HOME, /usr/local/cuda, then /usr/local/cuda-* newest first;
#   2. pip wheels: nvidia/*/lib under each site-packages directory: $PS_CUDA_SITE_DIRS when set,
#      else python3's site and user-site directories.
# Nothing under a "stubs" directory is ever chosen, before or after following symlinks: the
# toolkit's stubs/ libraries only answer CUDA_ERROR_STUB_LIBRARY. A dangling symlink is skipped.
#
# Sets CUDA_LIBS_CHOSEN (one "libX PATH" line each, "libX NONE" when missing) and CUDA_LIBS_SHIM
# (the symlink directory), and returns 1 when libnvrtc or libnvrtc-builtins is missing.

# True when a path has a component named "stubs".
cuda_path_is_stub() {
    case "/$1/" in
        */stubs/*) return 0 ;;
        *) return 1 ;;
    esac
}

# The candidate library directories, best first, one a line (existing ones only).
cuda_lib_dirs() {
    local roots root site dir
    if [ -n "${PS_CUDA_ROOTS+set}" ]; then
        roots=$PS_CUDA_ROOTS
    else
        # shellcheck disable=SC2012
        roots="${CUDA_HOME:-} /usr/local/cuda $(ls -d /usr/local/cuda-* 2>/dev/null | sort -rV)"
    fi
    for root in $roots; do
        for dir in "$root/targets/x86_64-linux/lib" "$root/lib64"; do
            [ -d "$dir" ] && echo "$dir"
        done
    done
    if [ -n "${PS_CUDA_SITE_DIRS+set}" ]; then
        site=$PS_CUDA_SITE_DIRS
    else
        site=$(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    fi
    for root in $site; do
        for dir in "$root"/nvidia/*/lib; do
            [ -d "$dir" ] && echo "$dir"
        done
    done
}

# The best usable file named PATTERN in DIR (highest version), or nothing.
cuda_pick_in_dir() {
    local dir=$1 pattern=$2 f real
    cuda_path_is_stub "$dir" && return 0
    for f in "$dir"/$pattern; do
        [ -e "$f" ] || continue # no match, or a dangling symlink
        real=$(readlink -f "$f") || continue
        cuda_path_is_stub "$real" && continue
        echo "$f"
    done | sort -V | tail -n 1
}

find_cuda_libs() {
    local shim dirs="" dir lib found builtins nvrtc_dir="" missing=0
    local -a candidates
    mapfile -t candidates < <(cuda_lib_dirs | awk '!seen[$0]++')
    shim=$(mktemp -d "${TMPDIR:-/tmp}/cuda-libs.XXXXXX")
    CUDA_LIBS_SHIM=$shim
    CUDA_LIBS_CHOSEN=""
    for lib in nvrtc cublas cublasLt; do
        found=""
        for dir in "${candidates[@]}"; do
            found=$(cuda_pick_in_dir "$dir" "lib$lib.so*")
            [ -n "$found" ] && break
        done
        if [ -n "$found" ]; then
            ln -sf "$found" "$shim/lib$lib.so"
            dirs="$dirs:$(dirname "$found")"
            [ "$lib" = nvrtc ] && nvrtc_dir=$(dirname "$found")
            echo "cuda-libs: lib$lib -> $found ($(readlink -f "$found"))"
            CUDA_LIBS_CHOSEN="${CUDA_LIBS_CHOSEN}lib$lib $found"$'\n'
        else
            echo "cuda-libs: lib$lib NOT FOUND in: ${candidates[*]:-(no candidate directory)}" >&2
            CUDA_LIBS_CHOSEN="${CUDA_LIBS_CHOSEN}lib$lib NONE"$'\n'
            [ "$lib" = nvrtc ] && missing=1
        fi
    done
    # NVRTC opens libnvrtc-builtins.so.MAJOR.MINOR itself, through the loader's search path: the
    # one beside the chosen libnvrtc, else the first found in the candidate order.
    builtins=""
    for dir in ${nvrtc_dir:+"$nvrtc_dir"} "${candidates[@]}"; do
        builtins=$(cuda_pick_in_dir "$dir" "libnvrtc-builtins.so*")
        [ -n "$builtins" ] && break
    done
    if [ -n "$builtins" ]; then
        dirs="$dirs:$(dirname "$builtins")"
        echo "cuda-libs: libnvrtc-builtins -> $builtins ($(readlink -f "$builtins"))"
        CUDA_LIBS_CHOSEN="${CUDA_LIBS_CHOSEN}libnvrtc-builtins $builtins"$'\n'
    else
        echo "cuda-libs: libnvrtc-builtins NOT FOUND: NVRTC will fail to compile" >&2
        CUDA_LIBS_CHOSEN="${CUDA_LIBS_CHOSEN}libnvrtc-builtins NONE"$'\n'
        missing=1
    fi
    dirs=$(echo "${dirs#:}" | tr ':' '\n' | awk 'NF && !seen[$0]++' | paste -sd: -)
    export LD_LIBRARY_PATH="$shim${dirs:+:$dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "cuda-libs: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    return $missing
}
