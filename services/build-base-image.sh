#!/usr/bin/env bash
# Builds the Debian base image CI builds the service images on (BASE_IMAGE=localhost/delinkcious-base:<release>)
# without Docker and without pulling from a container registry: debootstrap a minimal root file system
# (python3 with venv, CA certificates) of this machine's release from this machine's apt mirror, trim what a
# container never uses (trim_rootfs below), and import it with buildah. Cached twice: nothing is done when the
# image exists, and the bootstrapped root file system tarball is kept under
# ${XDG_CACHE_HOME:-$HOME/.cache}/delinkcious/ so a removed image is re-made in seconds. The trim is applied on
# import, not to the cached tarball, so a changed trim list needs no new debootstrap (buildah rmi the image).
#   services/build-base-image.sh [RELEASE]      (or ./build.sh base-image); prints the image name last.
# Needs root (debootstrap, chroot), debootstrap and buildah.
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

# What a container built on this base never uses. The base stays a working Debian system: apt, dpkg, debconf
# and perl work (the stand-in images apt-get install their servers on it), python3 -m venv works (build stages
# make their venvs on it); removed packages are purged through dpkg, so its database stays true.
trim_rootfs() {
  local root=$1
  # File system tools for block devices (e2fsck, mke2fs...; about 2 MB): a container has none to check. Debian
  # marks them required only because an installed system boots from such a disk. First: dpkg logs it.
  chroot "$root" dpkg --purge e2fsprogs logsave libext2fs2 libss2 >/dev/null
  # Nothing of the building machine (its name, resolver, apt lists, logs).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/log/*
  : >"$root"/etc/resolv.conf
  echo localhost >"$root"/etc/hostname
  # Documentation, manual pages and translations (about 9 MB); the copyright files stay.
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/doc-base
  find "$root"/usr/share/doc -type f ! -name copyright -delete
  # glibc's iconv(3) character-set modules (about 8 MB). Python decodes with its own codecs, and UTF-8 and the
  # C.UTF-8 locale are built into glibc; only a program calling iconv_open for another character set needs them.
  rm -rf "$root"/usr/lib/*-linux-gnu/gconv
  # Parts of Python's standard library no program runs (about 3 MB with their bytecode): the regression test
  # package, the 2to3 tool, help()'s topic texts, and turtle (it needs tkinter, which is not installed).
  local stdlib
  for stdlib in "$root"/usr/lib/python3.*; do
    rm -rf "$stdlib"/test "$stdlib"/lib2to3 "$stdlib"/pydoc_data "$stdlib"/turtle.py "$stdlib"/__pycache__/turtle.*
  done
  # debconf's backups of its databases (it writes them anew on its next run) and the leap-second time zones
  # (TZ=right/...; the usual zones stay).
  rm -f "$root"/var/cache/debconf/*-old
  rm -rf "$root"/usr/share/zoneinfo/right
}

mkdir -p "$cache"
if [[ ! -s $cache/rootfs.tar ]]; then
  mirror=${DEBIAN_MIRROR:-$("$(dirname "$0")/../k8s/apt-mirror.sh" "$release")}
  [[ -n $mirror ]] || { echo "no deb source for $release in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2; exit 1; }
  echo "debootstrap $release from $mirror" >&2
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include="$packages" "$release" "$rootfs" "$mirror" >&2
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  tar --numeric-owner --xattrs -C "$rootfs" -cf "$cache/rootfs.tar.partial" .
  mv "$cache/rootfs.tar.partial" "$cache/rootfs.tar"
  rm -rf "$rootfs"
  trap - EXIT
fi

# The image's root file system: the cached one, trimmed, in a build context of its own. ADD unpacks a local
# tarball; FROM scratch keeps the image to exactly that root file system.
work=$(mktemp -d "$cache/import.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/rootfs" "$work/context"
tar --numeric-owner --xattrs -C "$work/rootfs" -xpf "$cache/rootfs.tar"
trim_rootfs "$work/rootfs"
tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/context/rootfs.tar" .
rm -rf "$work/rootfs"
cat >"$work/context/Containerfile" <<CONTAINERFILE
FROM scratch
ADD rootfs.tar /
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
CONTAINERFILE
buildah bud --isolation chroot --layers=false -f "$work/context/Containerfile" -t "$image" "$work/context" >&2
rm -rf "$work"
trap - EXIT
echo "$image"
