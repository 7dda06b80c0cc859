#!/bin/sh
# Run as root inside the image's filesystem, after packages.txt is
# installed: by the Dockerfile (RUN) and by build-rootfs.sh (an mmdebstrap
# customize hook), so both create the same user and folders.
#   - user and group `bgrun`, uid/gid 10001 (numeric, so Kubernetes'
#     runAsNonRoot can check it), home /home/bgrun (run journals go to
#     ~/.local/state/bgrun/journal), no login shell;
#   - /opt/bgrun/backups, where environments.lua's relative `backups`
#     folders land when bgrun runs from /opt/bgrun, writable by bgrun only.
set -eu
groupadd --gid 10001 bgrun
useradd --no-log-init --uid 10001 --gid 10001 --home-dir /home/bgrun --create-home \
	--shell /usr/sbin/nologin --comment "bgrun playbooks" bgrun
install -d -o 10001 -g 10001 -m 0750 /opt/bgrun/backups
