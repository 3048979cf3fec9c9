#!/usr/bin/env bash
# Installs the Debian packages that Ferry's tests and `ferry dev` need, when they are missing:
#   setpriv   (util-linux) makes test control planes die with the process that started them
#   git       the git server (git http-backend) of the tests and of ferry dev
#   chromium  the UI's tests and the end-to-end test drive Debian's headless Chromium (plus a font)
#   python3   the python-web example's steps run on this machine under the local executor
#   debootstrap  the real base images (internal/baseimage): debootstrap and Debian's archive keyring,
#             which authenticates the packages; also mount (util-linux) for the chroot mounts
#   real-nodes  real nodes of test clusters and `ferry dev`: containerd, runc, the CNI plugins,
#             iptables, iproute2 (ip) and util-linux (nsenter); busybox-static for Tekton's shell image
# Usage: hack/deps.sh setpriv git chromium python3 real-nodes debootstrap. Prints what it installs; does nothing
# when all are present.
set -euo pipefail

need=()
for what in "$@"; do
  case "$what" in
    setpriv) command -v setpriv >/dev/null || need+=(util-linux) ;;
    git) command -v git >/dev/null || need+=(git) ;;
    chromium)
      if [ -z "${FERRY_CHROMIUM:-}" ]; then
        command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
        [ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
      fi
      ;;
    python3) command -v python3 >/dev/null || need+=(python3) ;;
    debootstrap)
      # /usr/sbin is not on every user's PATH.
      command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
      [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
      command -v mount >/dev/null || [ -x /usr/bin/mount ] || need+=(mount)
      ;;
    real-nodes)
      # Only where real nodes can run at all: Linux, as root.
      if [ "$(uname -s)" = Linux ] && [ "$(id -u)" = 0 ]; then
        command -v containerd >/dev/null || need+=(containerd)
        command -v runc >/dev/null || need+=(runc)
        [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
        command -v iptables >/dev/null || need+=(iptables)
        command -v ip >/dev/null || need+=(iproute2)
        command -v nsenter >/dev/null || need+=(util-linux)
        # static: it runs alone in its image (Debian's plain busybox package is dynamically linked)
        { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
      fi
      ;;
    *) echo "hack/deps.sh: unknown dependency $what" >&2; exit 2 ;;
  esac
done
((${#need[@]})) || exit 0

echo "Installing Debian packages: ${need[*]} (first time only)" >&2
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "Missing Debian packages: ${need[*]}. Install them as root: apt-get install ${need[*]}" >&2
  exit 1
fi
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
