#!/usr/bin/env bash
# What the language toolchains need beyond Debian's packages, prepared once (idempotent) in
# /usr/local/lib/vmpool-toolchains (under /usr: every sandbox sees it, read-only):
#   rust/      the crates HumanEval-X's Rust declarations use (rand, regex, md5), built from
#              Debian's crate sources with Debian's cargo, and rustc-args (the -L/--extern flags
#              rewards' Rust builds pass)
#   go-cache/  a Go build cache holding testify and its dependencies (HumanEval-X's Go tests):
#              each Go build starts from a copy, so it compiles only the program (0.3 s, not 6 s)
#   node/      node_modules with js-md5 (one HumanEval-X JavaScript task requires it; NODE_PATH)
# Without them, builds still run: a Rust program that uses these crates does not compile, and
# a Go test build compiles testify itself.
set -euo pipefail
DEST=${VMPOOL_TOOLCHAINS:-/usr/local/lib/vmpool-toolchains}
export PATH=/usr/bin:/bin  # Debian's rustc/cargo/go, whatever else the user has on PATH
stamp="$DEST/.stamp"
want="$(dpkg-query -W -f='${Version} ' rustc cargo golang-go golang-github-stretchr-testify-dev \
        librust-rand-dev librust-regex-dev librust-md5-dev npm 2>/dev/null || true)v2"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if [ ! -w "$(dirname "$DEST")" ] && [ ! -w "$DEST" ]; then
    echo "prepare-toolchains: cannot write $DEST (run as root); Rust crates and the Go test cache are skipped" >&2
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST"

if command -v cargo >/dev/null && [ -d /usr/share/cargo/registry ]; then
    mkdir -p "$work/crates/src" "$work/crates/.cargo"
    cat > "$work/crates/Cargo.toml" <<'EOF'
[package]
name = "vmpool-crates"
version = "0.1.0"
edition = "2021"
[dependencies]
rand = "0.8"
regex = { version = "1", default-features = false, features = ["std", "unicode"] }
md5 = "0.7"
[profile.release]
debug = false
EOF
    echo 'pub fn unused() {}' > "$work/crates/src/lib.rs"
    cat > "$work/crates/.cargo/config.toml" <<'EOF'
[source.crates-io]
replace-with = "debian"
[source.debian]
directory = "/usr/share/cargo/registry"
[net]
offline = true
EOF
    (cd "$work/crates" && CARGO_HOME="$work/cargo-home" cargo build --release --quiet)
    rm -rf "$DEST/rust.new" && mkdir -p "$DEST/rust.new"
    cp "$work"/crates/target/release/deps/lib*.rlib "$DEST/rust.new/"
    rm -f "$DEST"/rust.new/libvmpool_crates-*.rlib
    args="-L dependency=$DEST/rust"
    for crate in rand regex md5; do
        rlib=$(cd "$DEST/rust.new" && ls lib"$crate"-*.rlib | head -1)
        args="$args --extern $crate=$DEST/rust/$rlib"
    done
    echo "$args" > "$DEST/rust.new/rustc-args"
    rm -rf "$DEST/rust" && mv "$DEST/rust.new" "$DEST/rust"
fi

if command -v go >/dev/null && [ -d /usr/share/gocode/src/github.com/stretchr/testify ]; then
    mkdir -p "$work/go"
    cat > "$work/go/warm_test.go" <<'EOF'
package main

import (
    "testing"
    "github.com/stretchr/testify/assert"
)

func TestWarm(t *testing.T) { assert.Equal(t, 1, 1) }
EOF
    (cd "$work/go" && GO111MODULE=off GOPATH="$work/gopath:/usr/share/gocode" GOCACHE="$work/go-cache" \
        CGO_ENABLED=0 GOFLAGS=-buildvcs=false go test -c -o warm.test warm_test.go)
    rm -rf "$DEST/go-cache" && cp -r "$work/go-cache" "$DEST/go-cache"
fi
if command -v npm >/dev/null; then
    rm -rf "$DEST/node.new" && mkdir -p "$DEST/node.new"
    if npm install --silent --no-audit --no-fund --prefix "$DEST/node.new" js-md5@0.8.3 >/dev/null 2>&1; then
        rm -rf "$DEST/node" && mv "$DEST/node.new" "$DEST/node"
    else
        echo "prepare-toolchains: npm could not install js-md5 (no registry?): HumanEval-X JavaScript/162 cannot pass" >&2
        rm -rf "$DEST/node.new"
    fi
fi
chmod -R a+rX "$DEST"
echo "$want" > "$stamp"
echo "prepare-toolchains: $DEST ready"
