#!/usr/bin/env bash
# packaging/Dockerfile checked without a container engine (issue 8): this
# machine has none and cannot reach a registry, so the image itself is not
# built here. What can break it is checked instead: every package both
# stages install exists in Debian 12; the build stage's exact meson commands
# build tandem from a clean tree; every shared library tandem needs comes
# from a package the runtime stage installs (or one every Debian image has);
# the runtime user, volume, port and health check are what the README says.
source "$(dirname "$0")/lib.sh"
SRC=${TANDEM_SRC:?TANDEM_SRC not set}
DF="$SRC/packaging/Dockerfile"
# packages of the n-th "apt-get install" (1 build stage, 2 runtime stage)
stage_pkgs() {
  # the n-th RUN with "apt-get install", continuation lines joined, the
  # words between "install" and the next "&&"
  sed ':a; /\\$/ { N; s/\\\n/ /; ba }' "$DF" | grep 'apt-get install' | sed -n "${1}p" |
    sed 's/.*apt-get install//; s/&&.*//' | tr ' ' '\n' | grep -E '^[a-z0-9][a-z0-9.+-]+$' || true
}
build_pkgs=$(stage_pkgs 1)
run_pkgs=$(stage_pkgs 2)
check "the build stage installs packages" test -n "$build_pkgs"
check "the runtime stage installs packages" test -n "$run_pkgs"
missing=""
for p in $build_pkgs $run_pkgs; do
  apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || missing="$missing $p"
done
expect_eq "every package the Dockerfile installs exists in this Debian" "" "$missing"

# The build stage's commands, on a copy of the tree without build dirs.
mkdir -p "$WORK/src"
( cd "$SRC" && git ls-files -z 2>/dev/null | xargs -0 -I{} cp --parents {} "$WORK/src/" ) ||
  cp -r "$SRC/." "$WORK/src/"
setup=$(grep -o 'meson setup /build /src [^\\&]*' "$DF" | sed 's|/build|'"$WORK"'/build|; s|/src| '"$WORK"'/src|')
compile=$(grep -o 'meson compile -C /build tandem' "$DF" | sed 's|/build|'"$WORK"'/build|')
check "the Dockerfile's meson commands are found" test -n "$setup" -a -n "$compile"
check "the build stage's meson setup succeeds" bash -c "$setup >'$WORK/setup.log' 2>&1"
check "the build stage's meson compile builds tandem" bash -c "$compile >'$WORK/compile.log' 2>&1"
check "the binary runs" "$WORK/build/tandem" version

# Direct shared-library needs against the runtime stage's packages.
unprovided=""
for lib in $(readelf -d "$WORK/build/tandem" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
  path=$(ldconfig -p | awk -v l="$lib" '$1 == l && /x86-64/ { print $NF; exit }' || true)
  pkg=$( { dpkg -S "$(readlink -f "$path")" 2>/dev/null || dpkg -S "$path" 2>/dev/null || true; } |
         head -1 | cut -d: -f1)
  case " $(echo $run_pkgs) libc6 libgcc-s1 " in *" $pkg "*) ;; *) unprovided="$unprovided $lib($pkg)" ;; esac
done
expect_eq "every library tandem links comes from a runtime-stage package" "" "$unprovided"

check "runs as a non-root user" grep -qE '^USER 10001' "$DF"
check "state is a volume" grep -q 'VOLUME \["/var/lib/tandem"\]' "$DF"
check "health check probes /healthz with a tool the image has" \
  bash -c "grep -q 'HEALTHCHECK.*curl.*/healthz' '$DF' && echo '$run_pkgs' | grep -qx curl"
check "multi-stage on debian:bookworm-slim" bash -c "[ \$(grep -c '^FROM debian:bookworm-slim' '$DF') = 2 ]"
finish
