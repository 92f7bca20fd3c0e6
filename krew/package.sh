#!/usr/bin/env bash
# Builds kubectl-berth for release and writes target/krew/kubectl-berth-linux-amd64.tar.gz and the krew
# manifest krew/berth.yaml with that archive's version and sha256 filled in.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
cargo build --release --locked -p kubectl-berth
target=${CARGO_TARGET_DIR:-$repo/target}
out=$target/krew
mkdir -p "$out"
archive=$out/kubectl-berth-linux-amd64.tar.gz
# Reproducible: fixed owner, order and times, so the same binary gives the same sha256.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$target/release" -cf - kubectl-berth |
  gzip -n >"$archive"
sum=$(sha256sum "$archive" | cut -d' ' -f1)
version=$(cargo metadata --no-deps --format-version 1 |
  sed -n 's/.*"name":"kubectl-berth","version":"\([^"]*\)".*/\1/p')
[ -n "$version" ] || { echo "cannot read the version of kubectl-berth" >&2; exit 1; }
# The header comment is for this template, not for the manifest it makes.
sed -e "/^#/d" -e "s/@SHA256@/$sum/" -e "s/@VERSION@/$version/g" krew/berth.yaml >"$out/berth.yaml"
echo "$out/berth.yaml"
