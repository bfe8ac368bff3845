#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine lacks to build and test the module.
# Idempotent: does nothing that is already done. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
for p in kamailio kamailio-sqlite-modules kamailio-postgres-modules kamailio-lua-modules \
         sip-tester clang libclang-dev dpkg-dev build-essential binutils \
         postgresql sqlite3 python3; do
  want "$p"
done

# deb-src entry so that `apt-get source kamailio` works (headers are fetched from the source package)
if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/ ; then
  echo "setup: adding a deb-src entry for bookworm"
  $SUDO tee /etc/apt/sources.list.d/kamailio-rs-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  updated=0
else
  updated=1
fi

if [ "${#need_pkgs[@]}" -gt 0 ] || [ "${updated}" = 0 ]; then
  echo "setup: installing ${need_pkgs[*]:-(sources only)}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if [ "${#need_pkgs[@]}" -gt 0 ]; then
    $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  fi
  # the kamailio package starts a service on install; we never want a system instance on 5060
  $SUDO systemctl stop kamailio 2>/dev/null || true
  pkill -x kamailio 2>/dev/null || true
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  # the module needs Rust >= 1.82 (Debian bookworm's cargo is older): use rustup
  echo "setup: no Rust toolchain found; installing one with rustup"
  command -v curl >/dev/null 2>&1 || $SUDO apt-get install -y -qq curl ca-certificates >/dev/null
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
fi

# Kamailio headers of the installed version (git-ignored)
"$(dirname "$0")/../kamailio-headers/fetch.sh"
echo "setup: ok"
