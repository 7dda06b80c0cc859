#!/bin/sh
# stage.sh SRC DEST: lays bgrun's files out under DEST as the image holds
# them, from a source tree SRC where `make` has run:
#   /usr/local/bin/bgrun (and whatever else `make install` installs)
#   /opt/bgrun/playbooks, /opt/bgrun/examples (the image's working
#   directory: environments.lua's relative paths resolve from there)
# The Dockerfile's build stage runs it into /stage and copies that over the
# runtime stage's /; build-rootfs.sh runs it into the root filesystem.
set -eu
[ $# -eq 2 ] || { echo "usage: stage.sh SRC DEST" >&2; exit 2; }
src=$1
dest=$2
make -s -C "$src" install DESTDIR="$dest" PREFIX=/usr/local
install -d -m 0755 "$dest/opt/bgrun"
for d in playbooks examples; do
	rm -rf "${dest:?}/opt/bgrun/$d"
	cp -R "$src/$d" "$dest/opt/bgrun/$d"
	chmod -R u=rwX,go=rX "$dest/opt/bgrun/$d"
done
