#!/usr/bin/env bash
# Install the Debian packages xbarlab's tests and data need, when missing and when possible.
# Usage: scripts/sysdeps.sh [package ...]   (default: ngspice dataset-fashion-mnist)
set -u
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(ngspice dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  case "$p" in
    ngspice) command -v ngspice >/dev/null 2>&1 || missing+=("$p") ;;
    dataset-fashion-mnist) [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || missing+=("$p") ;;
    *) dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "sysdeps: missing Debian packages ${missing[*]} and not root: install them with apt-get" >&2; exit 1; fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: missing ${missing[*]} and apt-get is not available on this system" >&2; exit 1
fi
echo "sysdeps: installing ${missing[*]}"
$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
