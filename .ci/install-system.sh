#!/usr/bin/env bash
# System packages the harness needs, installed only when missing (idempotent).
#   bubblewrap  - the namespace sandbox
#   python3     - the interpreter programs run on inside the sandbox (/usr/bin/python3)
#   python3-venv, python3-pip - to build the project's virtual environment
#   libseccomp2 - compiles the sandbox's seccomp filter (through pyseccomp)
#   uidmap      - newuidmap/newgidmap: sandbox uids of their own for an ordinary user (subordinate ranges)
#   qemu-system-x86, lz4 - the microvm backend: QEMU, and unpacking the Debian kernel for the guest image
#   python3-numpy, -pandas, -pil, -matplotlib - what E2B's default template offers sessions (harness serve)
#   gcc, g++, openjdk-17-jdk-headless, nodejs, golang-go, rustc, cargo - the other languages programs
#       are graded in (rewards' languages); golang-github-stretchr-testify-dev and the librust-*-dev
#       crates (rand, regex, md5) - what HumanEval-X's Go tests and Rust declarations use;
#       libboost-dev, libssl-dev - headers three HumanEval-X C++ tasks include; npm - js-md5 for one
#       JavaScript task (.ci/prepare-toolchains.sh)
set -euo pipefail
need=()
for pkg in bubblewrap uidmap python3 python3-venv python3-pip libseccomp2 make qemu-system-x86 lz4 \
           python3-numpy python3-pandas python3-pil python3-matplotlib \
           gcc g++ openjdk-17-jdk-headless nodejs golang-go golang-github-stretchr-testify-dev rustc cargo \
           librust-rand-dev librust-regex-dev librust-md5-dev libboost-dev libssl-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# Debian's npm only where no npm came with the installed Node.js (a NodeSource nodejs carries its own).
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
