#!/bin/sh
# Builds lifeboat-agent_<version>_<arch>.deb with dpkg-deb: the agent under /opt/lifeboat (its
# TypeScript sources, run by tsx, and its production node_modules), /usr/bin/lifeboat-agent, the
# systemd unit infra/systemd/lifeboat-agent.service, and maintainer scripts that make the system user
# lifeboat and the state directory /var/lib/lifeboat-agent (postinst) and remove them on purge (postrm).
#
#   infra/deb/build.sh [--out DIR] [--node-modules ci|copy|none] [--compress xz|gzip|zstd|none]
#
#   --out DIR            where the .deb is written (default: dist/ in the repository)
#   --node-modules ci    npm ci --omit=dev in the staging tree (the default; needs the npm registry)
#   --node-modules copy  copy the production packages from the repository's node_modules (offline;
#                        `npm ls --omit=dev` names them), for a tree where npm ci already ran
#   --node-modules none  no node_modules: a package that cannot run, to check the packaging alone
#                        (lintian takes minutes over the 16,000 files of node_modules)
#   --compress           dpkg-deb's compressor (default xz)
# Prints the path of the .deb on stdout; everything else goes to stderr. Needs dpkg-deb and npm.
# Runtime dependency: nodejs >= 20.19 (NodeSource or a backport: Debian 12's nodejs is 18).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$repo/dist"
modules=ci
compress=xz

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --node-modules) modules=${2:?--node-modules needs ci, copy or none}; shift 2 ;;
    --compress) compress=${2:?--compress needs xz, gzip, zstd or none}; shift 2 ;;
    -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$modules" in ci|copy|none) ;; *) echo "build.sh: --node-modules must be ci, copy or none, not $modules" >&2; exit 2 ;; esac
case "$compress" in xz|gzip|zstd|none) ;; *) echo "build.sh: --compress must be xz, gzip, zstd or none, not $compress" >&2; exit 2 ;; esac
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found (apt-get install dpkg-dev)" >&2; exit 1; }

version=$(node -p "require('$repo/package.json').version")
arch=$(dpkg --print-architecture)
pkg=lifeboat-agent
stage=$(mktemp -d "${TMPDIR:-/tmp}/lifeboat-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
root="$stage/root"
opt="$root/opt/lifeboat"

# The agent's sources: agent/ and shared/ without tests, its bin, package.json for "type": "module".
mkdir -p "$opt/bin"
(cd "$repo" && tar -cf - --exclude='*.test.ts' --exclude='__snapshots__' agent shared) | tar -xf - -C "$opt"
cp "$repo/bin/lifeboat-agent.js" "$opt/bin/"
cp "$repo/package.json" "$repo/package-lock.json" "$repo/tsconfig.json" "$opt/"
chmod 0755 "$opt/bin/lifeboat-agent.js"

if [ "$modules" = ci ]; then
  (cd "$opt" && npm ci --omit=dev --no-audit --no-fund >&2)
elif [ "$modules" = copy ]; then
  [ -d "$repo/node_modules" ] || { echo "build.sh: $repo/node_modules is missing: run npm ci, or use --node-modules ci" >&2; exit 1; }
  # Production packages only (`npm ls --omit=dev`); a package's nested node_modules come with it.
  (cd "$repo" && npm ls --omit=dev --all --parseable 2>/dev/null) | tail -n +2 | sed "s|^$repo/||" \
    | grep -v '^node_modules/.*/node_modules/' | sort -u > "$stage/modules"
  [ -s "$stage/modules" ] || { echo "build.sh: npm ls named no production packages in $repo/node_modules" >&2; exit 1; }
  (cd "$repo" && tar -cf - --files-from="$stage/modules") | tar -xf - -C "$opt"
fi
rm -f "$opt/package-lock.json"
mkdir -p "$opt/node_modules"
# What npm leaves that a package needs not: caches, build intermediates of native addons, the
# musl builds of addons (this is a glibc system), package tooling files and HTML documentation.
find "$opt/node_modules" -depth \( -name '.cache' -o -name 'obj.target' -o -name '*.tsbuildinfo' \) -exec rm -rf {} +
find "$opt/node_modules" \( -name '*musl*.node' -o -name '.eslintrc*' -o -name '.npmignore' -o -name '.gitattributes' \
  -o -name '.travis.yml' -o -name '*.html' \) -type f -delete
# Native addons are shared objects: not executable, stripped of debugging symbols.
find "$opt/node_modules" -name '*.node' -type f -exec chmod 0644 {} + -exec strip --strip-unneeded {} +
# Files npm marked executable that are no programs; and a hard link dpkg would keep as one.
find "$opt/node_modules" -type f \( -name '*.json' -o -path '*/fast-xml-parser/src/*' -o -path '*/rc/index.js' \) -perm /111 -exec chmod 0644 {} +
for f in "$opt"/node_modules/esbuild/bin/esbuild; do [ -f "$f" ] && cp --remove-destination "$f" "$f.copy" && mv "$f.copy" "$f"; done

mkdir -p "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/$pkg" "$root/usr/share/lintian/overrides"
ln -s /opt/lifeboat/bin/lifeboat-agent.js "$root/usr/bin/lifeboat-agent"
install -m 0644 "$repo/infra/systemd/lifeboat-agent.service" "$root/lib/systemd/system/"
cat > "$root/usr/share/doc/$pkg/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: lifeboat
Source: https://github.com/lifeboat/lifeboat

Files: *
Copyright: 2025-2026 lifeboat authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
printf '%s (%s) unstable; urgency=medium\n\n  * Package built by infra/deb/build.sh.\n\n -- lifeboat <packaging@lifeboat.invalid>  %s\n' \
  "$pkg" "$version" "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}")" | gzip -9n > "$root/usr/share/doc/$pkg/changelog.gz"
install -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/$pkg"

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: lifeboat <packaging@lifeboat.invalid>
Installed-Size: $size
Depends: nodejs (>= 20.19), adduser, libc6 (>= 2.34), libgcc-s1, libstdc++6
Recommends: qemu-utils
Section: admin
Priority: optional
Homepage: https://github.com/lifeboat/lifeboat
Description: lifeboat agent: replicates virtual disks to a disaster-recovery hoster
 The tenant side of lifeboat. It tracks the changes of protected VM disks (raw,
 VHD, VHDX) on a KVM/qemu host and ships them, sealed, to the hoster's service.
 Enroll with lifeboat-agent enroll, protect VMs with lifeboat-agent protect,
 then systemctl enable --now lifeboat-agent.
CONTROL
for script in postinst prerm postrm; do install -m 0755 "$here/$script" "$root/DEBIAN/$script"; done

mkdir -p "$out"
deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$deb" >&2
echo "$deb"
