#!/usr/bin/env bash
# Builds the Debian base image CI builds the service images on (BASE_IMAGE=localhost/delinkcious-base:<release>)
# without Docker and without pulling from a container registry: debootstrap a minimal root file system
# (python3 with venv, CA certificates) of this machine's release from this machine's apt mirror, and import
# it with buildah. Cached twice: nothing is done when the image exists, and the root file system tarball is
# kept under ${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/ so a removed image is re-imported in seconds.
#   services/build-base-image.sh [RELEASE]      (or ./build.sh base-image); prints the image name last.
# Needs root (debootstrap), debootstrap and buildah.
set -euo pipefail

release=${1:-$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")}
image=${BASE_IMAGE_REPOSITORY:-localhost/delinkcious-base}:$release
cache=${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/base-$release-$(dpkg --print-architecture)
packages=python3,python3-venv,ca-certificates

if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image exists (buildah rmi $image to rebuild)" >&2
  echo "$image"
  exit 0
fi

mkdir -p "$cache"
if [[ ! -s $cache/rootfs.tar ]]; then
  mirror=${DEBIAN_MIRROR:-$("$(dirname "$0")/../k8s/apt-mirror.sh" "$release")}
  [[ -n $mirror ]] || { echo "no deb source for $release in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2; exit 1; }
  echo "debootstrap $release from $mirror" >&2
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$packages" "$release" "$rootfs" "$mirror" >&2
  # Nothing of the building machine in the image (its name, resolver, apt lists), and no documentation:
  # the image is a runtime; the copyright files stay.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/var/log/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/doc-base
  find "$rootfs"/usr/share/doc -type f ! -name copyright -delete
  : >"$rootfs"/etc/resolv.conf
  echo localhost >"$rootfs"/etc/hostname
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$cache/rootfs.tar.partial" .
  mv "$cache/rootfs.tar.partial" "$cache/rootfs.tar"
  rm -rf "$rootfs"
  trap - EXIT
fi

# ADD unpacks a local tarball; FROM scratch keeps the image to exactly that root file system.
cat >"$cache/Containerfile" <<CONTAINERFILE
FROM scratch
ADD rootfs.tar /
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
CONTAINERFILE
buildah bud --isolation chroot --layers=false -f "$cache/Containerfile" -t "$image" "$cache" >&2
echo "$image"
