#!/usr/bin/env bash
# The C ABI's checks (called by .ci/run; needs gcc, g++, valgrind, pkg-config, the pinned cbindgen,
# Go, and the test venv that tests/run.sh makes):
#   the header is fresh (a new cbindgen run gives the checked-in one), C99- and C++17-clean;
#   libcrx580.so exports only crx_ symbols and has the ABI's soname; its stripped size <= 5 MB
#   (issue 15);
#   tests/capi/test_capi.c passes plain, under valgrind memcheck, and with ASan+UBSan;
#   the C, C++ and Go examples build and classify the demo images; the C++ and Go tests pass.
set -euo pipefail
# The C and Go tests check the path of a host without OpenCL (an unsupported-device error), so the
# OpenCL loader is pointed at a library that does not exist.
export CRX580_OPENCL_LIB=libcrx580-no-such-opencl.so.1
cd "$(dirname "$0")/../.."
root=$PWD
venv=${CRX580_VENV:-.venv}
out=$root/target/capi-tests
prefix=$root/target/prefix
CBINDGEN_VERSION=0.29.0
mkdir -p "$out"
step() { printf '\n== capi: %s\n' "$*"; }
die() { echo "tests/capi/run.sh: $*" >&2; exit 1; }

step "header is what cbindgen $CBINDGEN_VERSION generates"
have=$(cbindgen --version 2>/dev/null || true)
[ "$have" = "cbindgen $CBINDGEN_VERSION" ] || die "needs cbindgen $CBINDGEN_VERSION (have: '${have:-none}'): cargo install cbindgen --version $CBINDGEN_VERSION --locked"
cbindgen --quiet --config cbindgen.toml --output "$out/crx580.h" src/capi/mod.rs
diff -u include/crx580.h "$out/crx580.h" || die "include/crx580.h is stale: regenerate it with cbindgen --config cbindgen.toml --output include/crx580.h src/capi/mod.rs"

step "headers compile as C99 and C++17"
gcc -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/crx580.h
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/crx580.h
g++ -std=c++17 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/crx580.hpp

step "build and install into $prefix"
make -s -C bindings/c install PREFIX="$prefix"
so=$prefix/lib/libcrx580.so
for f in bin/crx580 share/man/man1/crx580.1 share/man/man1/crx580-bench.1 \
    share/bash-completion/completions/crx580 share/zsh/site-functions/_crx580 \
    share/fish/vendor_completions.d/crx580.fish; do
    [ -s "$prefix/$f" ] || die "make install did not install $f"
done
"$prefix/bin/crx580" --version | grep -q "^crx580 " || die "the installed crx580 does not run"
grep -q -- "--shape" "$prefix/share/bash-completion/completions/crx580" || die "the bash completions lack --shape"
grep -q '^\.TH crx580-bench 1' "$prefix/share/man/man1/crx580-bench.1" || die "crx580-bench.1 is not a man page"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
export LD_LIBRARY_PATH=$prefix/lib

step "exports and soname"
abi=$(sed -n 's/^#define CRX_ABI_VERSION \([0-9]*\)/\1/p' include/crx580.h)
soname=$(readelf -d "$so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libcrx580.so.$abi" ] || die "soname is '$soname', want libcrx580.so.$abi"
exported=$(nm -D --defined-only "$so" | awk '{print $3}')
others=$(echo "$exported" | grep -v '^crx_' || true)
[ -z "$others" ] || die "libcrx580.so exports symbols without the crx_ prefix: $others"
declared=$(grep -o '\bcrx_[a-z_0-9]*(' include/crx580.h | tr -d '(' | sort -u)
[ "$(echo "$exported" | sort -u)" = "$declared" ] || die "exported symbols differ from the header's functions:
$(diff <(echo "$exported" | sort -u) <(echo "$declared"))"
size=$(stat -c %s "$(readlink -f "$so")")
echo "libcrx580.so: soname $soname, $(echo "$exported" | wc -l) crx_ functions, $size bytes stripped"
# Issue 15 asks for at most 5 MB; it is about 4.99 MB (4,994,120 bytes at a003798, 6 KB of
# room), 0.65 MB of it the HTTP server that crx_server_start reaches (README, "Embedding", says
# what dominates). Kernels that monomorphise per dtype, or per constant (a kernel instance per
# tile width and stride cost 39 KB; the row depthwise kernel's tail tiles, unrolled, 32 KB),
# are what grows it: see ir::words and dispatch_words!.
[ "$size" -le 5000000 ] || die "stripped libcrx580.so is $size bytes, over issue 15's 5 MB (5000000 bytes)"

step "reference outputs (onnxruntime)"
[ -x "$venv/bin/python" ] || die "needs the test venv at $venv: run bash tests/run.sh first"
"$venv/bin/python" tests/capi/make_reference.py "$out"
accuracy=$(cat "$out/accuracy.txt")
test_args=(examples/digits/digits.onnx "$out/samples.f32" "$out/probabilities.f32")
cflags="-std=c99 -O1 -g -Wall -Wextra -Werror -pedantic -pthread"

step "C tests"
gcc $cflags tests/capi/test_capi.c -o "$out/test_capi" $(pkg-config --cflags --libs crx580) -lm
"$out/test_capi" "${test_args[@]}"

step "C tests on the OpenCL device (PoCL in CI): fp16_storage and cache_dir"
rm -rf "$out/opencl-cache"
env -u CRX580_OPENCL_LIB "$out/test_capi" "${test_args[@]}" "$out/opencl-cache"

step "C tests under valgrind memcheck"
# On the unstripped library, so that reports have stacks (and the suppressions can match them).
mkdir -p "$out/unstripped"
ln -sf "$root/target/capi/libcrx580.so" "$out/unstripped/libcrx580.so.$abi"
CRX_TEST_RUNS_PER_THREAD=4 LD_LIBRARY_PATH=$out/unstripped valgrind -q --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite,indirect,possible --show-leak-kinds=definite,indirect,possible \
    --suppressions=tests/capi/valgrind.supp "$out/test_capi" "${test_args[@]}"

step "C tests with AddressSanitizer and UndefinedBehaviorSanitizer"
gcc $cflags -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
    tests/capi/test_capi.c -o "$out/test_capi_asan" $(pkg-config --cflags --libs crx580) -lm
ASAN_OPTIONS=detect_leaks=1 "$out/test_capi_asan" "${test_args[@]}"

step "C example"
make -s -C examples/c digits PREFIX="$prefix"
examples/c/digits examples/digits/digits.onnx examples/digits/samples.npy examples/digits/labels.npy | tee "$out/c_example.txt"
grep -q "^accuracy: $accuracy " "$out/c_example.txt" || die "the C example's accuracy is not onnxruntime's $accuracy"

step "C example linked statically (libcrx580.a and crx580.pc's Libs.private)"
gcc -std=c99 -pthread examples/c/digits.c -o "$out/digits_static" $(pkg-config --cflags crx580) \
    "$prefix/lib/libcrx580.a" $(pkg-config --static --libs-only-l crx580 | sed 's/-lcrx580//')
! ldd "$out/digits_static" | grep -q crx580 || die "the static example still needs libcrx580.so"
LD_LIBRARY_PATH= "$out/digits_static" examples/digits/digits.onnx examples/digits/samples.npy \
    examples/digits/labels.npy | grep -q "^accuracy: $accuracy " || die "the static C example's accuracy is not $accuracy"

step "README's C and C++ programs (section Embedding) build and run"
for lang in c cpp; do
    awk -v lang="$lang" '/^## Embedding/ {on = 1} /^## Layout/ {on = 0}
        on && $0 == "```" lang {code = 1; next} code && /^```$/ {code = 0} code' README.md > "$out/readme.$lang"
    [ -s "$out/readme.$lang" ] || die "README.md's Embedding section has no $lang program"
done
gcc -std=c99 -Wall -Wextra -Werror -pedantic -x c "$out/readme.c" -o "$out/readme_c" $(pkg-config --cflags --libs crx580)
g++ -std=c++17 -Wall -Wextra -Werror -x c++ "$out/readme.cpp" -o "$out/readme_cpp" $(pkg-config --cflags --libs crx580)
"$out/readme_c" && "$out/readme_cpp"

step "C++ wrapper tests (C++17 and C++20) and example"
for std in c++17 c++20; do
    g++ -std=$std -O1 -g -Wall -Wextra -Werror -pedantic -pthread tests/capi/test_cpp.cpp -o "$out/test_cpp_$std" \
        $(pkg-config --cflags --libs crx580)
    "$out/test_cpp_$std" "${test_args[@]}"
done
make -s -C examples/cpp digits PREFIX="$prefix"
examples/cpp/digits examples/digits/digits.onnx | tee "$out/cpp_example.txt"
grep -q '^image 1: predicted' "$out/cpp_example.txt" || die "the C++ example printed no predictions"

step "Go bindings (go test, plain and -tags debug) and example"
command -v go >/dev/null || die "needs Go (Debian golang-go)"
export CRX580_TEST_REFERENCE=$out GOPROXY=off GOFLAGS=-count=1
export GOCACHE=${GOCACHE:-$root/target/go-cache} GOPATH=${GOPATH:-$root/target/go-path}
(cd bindings/go && go vet ./... && go test ./... && go test -tags debug ./...)
# The one Go test that needs a device, on the real OpenCL loader (PoCL in CI).
(cd bindings/go && env -u CRX580_OPENCL_LIB CRX580_GO_OPENCL=1 go test -v -run '^TestOpenCLRunMatchesOnnxruntime$' ./... | tee "$out/go_opencl.txt")
grep -q -- '--- PASS: TestOpenCLRunMatchesOnnxruntime' "$out/go_opencl.txt" || die "the Go OpenCL test did not pass"
(cd examples/go && go build -o "$out/go_example" . )
"$out/go_example" examples/digits/digits.onnx | tee "$out/go_example.txt"
grep -q '^predicted' "$out/go_example.txt" || die "the Go example printed no prediction"

echo
echo "capi: all checks passed"
