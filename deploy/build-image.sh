#!/usr/bin/env bash
# Builds the pageserver-controller image FROM scratch, without pulling any base image:
# a statically linked binary (glibc, rustls; no OpenSSL) built on this machine, packed
# by deploy/Dockerfile.scratch with an unprivileged numeric user and the entrypoint
# `pageserver-controller serve`.
#
#   deploy/build-image.sh [--tag NAME:TAG] [--profile release|image-test]
#
# --profile release (the default) is what to ship. image-test (Cargo.toml) skips
# optimizations and debug info so that the Docker test builds it quickly.
# The static build's target dir is target/static, so a rerun is incremental.
set -euo pipefail

tag=pageserver-controller:dev
profile=release
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
triple=x86_64-unknown-linux-gnu
case "$profile" in
    dev) out=debug ;;
    *) out="$profile" ;;
esac

echo "build-image.sh: building a static binary (profile $profile)" >&2
# --target keeps build scripts and proc macros dynamic; only the binary is static.
RUSTFLAGS='-C target-feature=+crt-static' "${CARGO:-cargo}" build --locked \
    --profile "$profile" --target "$triple" --target-dir "$root/target/static" \
    --manifest-path "$root/Cargo.toml" --bin pageserver-controller
binary="$root/target/static/$triple/$out/pageserver-controller"

# A dynamically linked binary names its loader in an INTERP program header; scratch
# has no loader, so such a binary would not even start.
if readelf -l "$binary" | grep -q INTERP; then
    echo "build-image.sh: $binary is dynamically linked; the scratch image needs a static binary" >&2
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
install -D -m 0755 "$binary" "$context/rootfs/usr/local/bin/pageserver-controller"
strip --strip-debug "$context/rootfs/usr/local/bin/pageserver-controller"
mkdir -p "$context/rootfs/etc" "$context/state"
echo 'nonroot:x:65532:65532:pageserver-controller:/var/lib/pageserver-controller:/sbin/nologin' \
    > "$context/rootfs/etc/passwd"
echo 'nonroot:x:65532:' > "$context/rootfs/etc/group"
cp "$root/deploy/Dockerfile.scratch" "$context/Dockerfile"

revision="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "build-image.sh: building image $tag" >&2
docker build --quiet \
    --label org.opencontainers.image.title=pageserver-controller \
    --label org.opencontainers.image.revision="$revision" \
    --tag "$tag" "$context" >/dev/null
echo "$tag"
