#!/bin/bash
# The container image's filesystem, built from Debian packages alone
# (deploy/image/build-rootfs.sh: mmdebstrap + the shared package list),
# checked against the Dockerfile and used for real: bgrun takes a backup
# from inside it (chroot, as the image's non-root user, S3 credentials by
# web identity as in CI) against the sandbox, and the backup lands in the
# bucket and verifies. Reuses the sandbox named by SANDBOX_DIR when its
# variables are set, else starts its own. Needs root (chroot, mounts).
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
sandbox=$here/sandbox
image=$repo/deploy/image
work=$(mktemp -d -t bgrun-rootfs-XXXXXX)
root=$work/rootfs
passed=0
failed=0
started=()
uploaded=""

ok() { echo "ok - $1"; passed=$((passed + 1)); }
notok() {
	echo "not ok - $1"
	[ $# -ge 2 ] && printf '%s\n' "$2" | tail -n 20 | sed 's/^/#   /'
	failed=$((failed + 1))
}
# check NAME COMMAND...: the command's exit status decides.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}
finish() {
	local dir
	[ -n "$uploaded" ] && aws s3 rm --only-show-errors "s3://$SANDBOX_S3_BUCKET/$uploaded" >/dev/null 2>&1
	for dir in "${started[@]}"; do "$sandbox" down "$dir" >/dev/null 2>&1; done
	rm -rf "$work"
	echo "rootfs: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
	notok "runs as root (chroot and mounts need it; make test runs as root)"
	exit 1
fi

# ---- the sandbox ---------------------------------------------------------

if [ -z "${SANDBOX_DIR:-}" ] || [ -z "${PGHOST:-}" ] || [ -z "${AWS_ENDPOINT_URL_S3:-}" ] || [ -z "${SANDBOX_STS_URL:-}" ]; then
	if ! "$here/build.sh" >"$work/build.log" 2>&1 || ! "$sandbox" up "$work/sb" >"$work/up.out" 2>"$work/up.err"; then
		notok "sandbox up" "$(cat "$work/build.log" "$work/up.err" 2>/dev/null)"
		exit 1
	fi
	started+=("$work/sb")
	set -a
	# shellcheck disable=SC1091
	. "$work/up.out"
	set +a
fi

# ---- build the root filesystem ------------------------------------------

t0=$(date +%s)
if out=$("$image/build-rootfs.sh" "$root" 2>&1); then
	ok "build-rootfs.sh builds the root filesystem ($(($(date +%s) - t0)) s)"
else
	notok "build-rootfs.sh builds the root filesystem" "$out"
	exit 1
fi
echo "# $(printf '%s\n' "$out" | tail -n 1)"
echo "# size: $(du -sh "$root" | cut -f1)"

check "it is Debian bookworm" grep -qx 'VERSION_CODENAME=bookworm' "$root/etc/os-release"

packages=$(sed 's/#.*//' "$image/packages.txt" | tr -s ' \t\n' '\n' | grep -v '^$')
installed() {
	local p missing=""
	for p in $packages; do
		dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}\n' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing="$missing $p"
	done
	[ -z "$missing" ] || { echo "not installed:$missing"; return 1; }
}
check "every package of deploy/image/packages.txt is installed" installed
no_build_tools() {
	local extra
	extra=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Package}\n' |
		grep -E -- '-dev$|^(gcc|cpp|g\+\+)(-[0-9]+)?$|^binutils|^make$|^build-essential$|^pkg-config$|^lua5\.4$')
	[ -z "$extra" ] || { echo "build packages in the runtime filesystem: $extra"; return 1; }
}
check "no compiler or -dev package in it (the build stage's stay out)" no_build_tools
check "/usr/local/bin/bgrun is the freshly built binary" cmp "$repo/bgrun" "$root/usr/local/bin/bgrun"
check "the playbooks are at /opt/bgrun/playbooks" diff -r "$repo/playbooks" "$root/opt/bgrun/playbooks"
check "the examples are at /opt/bgrun/examples" diff -r "$repo/examples" "$root/opt/bgrun/examples"
check "user bgrun is uid/gid 10001 with home /home/bgrun" \
	bash -c "chroot '$root' getent passwd bgrun | grep -qx 'bgrun:x:10001:10001:[^:]*:/home/bgrun:/usr/sbin/nologin'"
check "/opt/bgrun/backups belongs to bgrun, 0750" \
	bash -c "[ \"\$(stat -c '%u:%g %a' '$root/opt/bgrun/backups')\" = '10001:10001 750' ]"

# The Dockerfile's runtime stage (after its last FROM) builds the same
# filesystem: same base, same package list, same setup and layout, same user.
runtime_stage=$(awk '/^FROM /{n++} {print n "\t" $0}' "$repo/Dockerfile" |
	awk -F'\t' -v last="$(grep -c '^FROM ' "$repo/Dockerfile")" '$1 == last {print $2}')
stage_has() { printf '%s\n' "$runtime_stage" | grep -Eq -- "$1" || { echo "Dockerfile's runtime stage lacks: $1"; return 1; }; }
check "Dockerfile: the runtime stage is debian:bookworm-slim" stage_has '^FROM debian:bookworm-slim *$'
check "Dockerfile: the runtime stage copies deploy/image/packages.txt" stage_has '^COPY deploy/image/packages.txt '
check "Dockerfile: the runtime stage apt-get installs that list" stage_has 'packages.txt \| xargs apt-get install'

check "Dockerfile: the runtime stage runs deploy/image/setup.sh" stage_has 'sh /tmp/image/setup.sh'
check "Dockerfile: the build stage lays out with deploy/image/stage.sh" grep -q 'deploy/image/stage.sh /src /stage' "$repo/Dockerfile"
check "Dockerfile: runs as 10001:10001" stage_has '^USER 10001:10001$'
check "Dockerfile: from /opt/bgrun" stage_has '^WORKDIR /opt/bgrun$'

# ---- inside the root filesystem -----------------------------------------

mkdir -p "$work/tmp" "$work/backups"
chmod 1777 "$work/tmp"
chown 10001:10001 "$work/backups"
chmod 0750 "$work/backups"
cp "$SANDBOX_WEB_IDENTITY_TOKEN_FILE" "$work/tmp/web-identity-token"
chmod 0644 "$work/tmp/web-identity-token"

# inroot USERSPEC COMMAND...: runs COMMAND chrooted in the root filesystem
# from /opt/bgrun, in a private mount namespace (proc mounted, this run's
# /tmp and backups folder bound in), with only the variables a CI job
# would set. Loopback is shared: the sandbox is reachable.
inroot() {
	local user=$1
	shift
	unshare --mount --propagation private --fork -- sh -c '
		root=$1 work=$2 user=$3; shift 3
		mount -t proc proc "$root/proc" &&
		mount --bind "$work/tmp" "$root/tmp" &&
		mount --bind "$work/backups" "$root/opt/bgrun/backups" &&
		exec chroot --userspec="$user" "$root" /usr/bin/env -i \
			HOME=/home/bgrun PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
			"$@"' _ "$root" "$work" "$user" \
		PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER="$PGUSER" PGPASSWORD="$PGPASSWORD" PGDATABASE="$PGDATABASE" \
		AWS_REGION="$AWS_REGION" AWS_ENDPOINT_URL_S3="$AWS_ENDPOINT_URL_S3" \
		AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/web-identity-token AWS_ROLE_ARN=arn:aws:iam::000000000000:role/bgrun-ci \
		AWS_ROLE_SESSION_NAME=rootfs AWS_ENDPOINT_URL_STS="$SANDBOX_STS_URL" AWS_EC2_METADATA_DISABLED=true \
		sh -c 'cd /opt/bgrun && exec "$@"' _ "$@"
}

# ldd_clean NAME LDD_OUTPUT LIB...: every library resolved, inside the
# root filesystem, and the named ones among them.
ldd_clean() {
	local out=$2 lib
	shift 2
	if printf '%s\n' "$out" | grep -q 'not found'; then
		printf '%s\n' "$out" | grep 'not found'
		return 1
	fi
	for lib in "$@"; do
		printf '%s\n' "$out" | grep -q "^[[:space:]]*${lib}[^ ]* => /" || { echo "no $lib in:"; echo "$out"; return 1; }
	done
	local path
	for path in $(printf '%s\n' "$out" | sed -n 's/.* => \(\/[^ ]*\) (.*/\1/p'); do
		[ -e "$root$path" ] || { echo "$path is not in the root filesystem"; return 1; }
	done
}
out=$(inroot 0:0 ldd /usr/local/bin/bgrun 2>&1)
check "ldd in the chroot: bgrun resolves all its libraries from the root filesystem" \
	ldd_clean bgrun "$out" liblua5.4 libjansson libyaml
echo "$out" | sed 's/^/#   /'
# The modules with heavy libraries are a shared object embedded in the
# binary (loaded on first require); the same object, built beside it:
cp "$repo/build/bgrun-lazy.so" "$work/tmp/bgrun-lazy.so"
out=$(inroot 0:0 ldd /tmp/bgrun-lazy.so 2>&1)
check "ldd in the chroot: its embedded modules resolve libcurl, libpq, libcrypto, libarchive, libexpat" \
	ldd_clean lazy "$out" libcurl libpq libcrypto libarchive libexpat
rm -f "$work/tmp/bgrun-lazy.so"

check "bgrun --version runs as bgrun in the chroot" inroot 10001:10001 bgrun --version
out=$(inroot 10001:10001 id 2>&1)
check "the non-root user is bgrun ($out)" bash -c "[[ '$out' == 'uid=10001(bgrun) gid=10001(bgrun)'* ]]"
out=$(inroot 10001:10001 touch /opt/bgrun/playbooks/deploy.lua 2>&1)
check "bgrun cannot change the playbooks" bash -c "[[ '$out' == *'Permission denied'* ]]"

# A bare chroot, without /proc: the embedded modules cannot be reached as
# a memory file, so they load from a private temporary file, removed after.
cat >"$root/tmp/modules.lua" <<'EOF'
return playbook {
  description = "load the embedded network and database modules",
  params = {},
  run = function()
    for _, m in ipairs({ "http", "k8s", "postgres", "s3", "archive", "digest" }) do require(m) end
    print("modules loaded")
  end,
}
EOF
chmod 0644 "$root/tmp/modules.lua"
out=$(chroot --userspec=10001:10001 "$root" /usr/bin/env -i HOME=/home/bgrun PATH=/usr/local/bin:/usr/bin:/bin \
	bgrun /tmp/modules.lua 2>&1)
check "without /proc (a bare chroot) bgrun loads its modules from a temporary file" \
	bash -c "[[ \"\$1\" == 'modules loaded'* ]] || { printf '%s\n' \"\$1\"; exit 1; }" _ "$out"
check "and leaves no temporary file behind" \
	bash -c "! ls '$root/tmp' | grep -q '^bgrun-'"
rm -f "$root/tmp/modules.lua"

sts_count() {
	curl -s --max-time 5 "$SANDBOX_AWS_FAKE_URL/counts" | jq -r '."sts:AssumeRoleWithWebIdentity" // 0'
}
sts_before=$(sts_count)
inroot 10001:10001 bgrun playbooks/backup.lua env=local label=rootfs --log-format json \
	>"$work/backup.out" 2>"$work/backup.err"
rc=$?
check "bgrun playbooks/backup.lua env=local runs in the chroot as bgrun (exit $rc)" \
	bash -c "[ $rc -eq 0 ] || { cat '$work/backup.err'; exit 1; }"
check "its S3 credentials came by web identity (one AssumeRoleWithWebIdentity)" \
	test "$(sts_count)" -eq $((sts_before + 1))
check "its log is JSON lines" bash -c "[ -s '$work/backup.err' ] && jq -e -s 'all(.[]; .level and .message)' '$work/backup.err' >/dev/null"
check "no secret in its output" bash -c "! grep -qF -e '$PGPASSWORD' -e \"\$(cat '$work/tmp/web-identity-token')\" '$work/backup.out' '$work/backup.err'"

path=$(tail -n 1 "$work/backup.out")
key=$(sed -n "s|^uploaded: s3://$SANDBOX_S3_BUCKET/||p" "$work/backup.out")
name=${path##*/}
check "it prints the backup's path under /opt/bgrun/backups/local ($path)" \
	bash -c "[[ '$path' == /opt/bgrun/backups/local/*-local-rootfs.tar.gz ]]"
check "the archive is in the backups folder, owned by bgrun" \
	bash -c "[ \"\$(stat -c %u '$work/backups/local/$name')\" = 10001 ]"
check "it names the bucket key local/$name" test "$key" = "local/$name"
[ -n "$key" ] && uploaded=$key

if aws s3 cp --only-show-errors "s3://$SANDBOX_S3_BUCKET/$key" "$work/tmp/fetched.tar.gz" >"$work/aws.out" 2>&1; then
	ok "the backup is in the bucket (aws s3 cp fetches it)"
else
	notok "the backup is in the bucket (aws s3 cp fetches it)" "$(cat "$work/aws.out")"
fi
check "the bucket's copy is the local archive, byte for byte" cmp "$work/tmp/fetched.tar.gz" "$work/backups/local/$name"

cat >"$work/tmp/verify.lua" <<'EOF'
return playbook {
  description = "verify a backup archive's checksums",
  params = { path = { required = true } },
  run = function(args)
    require("backup").verify(args.path)
    print("verified " .. args.path)
  end,
}
EOF
chmod 0644 "$work/tmp/verify.lua" "$work/tmp/fetched.tar.gz"
inroot 10001:10001 bgrun /tmp/verify.lua path=/tmp/fetched.tar.gz >"$work/verify.out" 2>"$work/verify.err"
rc=$?
check "the bucket's copy verifies in the chroot (checksums of metadata.json)" \
	bash -c "[ $rc -eq 0 ] && [ \"\$(tail -n 1 '$work/verify.out')\" = 'verified /tmp/fetched.tar.gz' ] || { cat '$work/verify.out' '$work/verify.err'; exit 1; }"
# A copy with a byte changed in the middle must fail that same verification.
cp "$work/tmp/fetched.tar.gz" "$work/tmp/bad.tar.gz"
size=$(stat -c %s "$work/tmp/bad.tar.gz")
printf 'X' | dd of="$work/tmp/bad.tar.gz" bs=1 seek=$((size / 2)) conv=notrunc status=none
chmod 0644 "$work/tmp/bad.tar.gz"
inroot 10001:10001 bgrun /tmp/verify.lua path=/tmp/bad.tar.gz >"$work/bad.out" 2>&1
rc=$?
check "a damaged copy fails verification in the chroot (exit $rc, want 2)" \
	bash -c "[ $rc -eq 2 ] || { cat '$work/bad.out'; exit 1; }"

mkdir -p "$work/x"
tar -xzf "$work/tmp/fetched.tar.gz" -C "$work/x" 2>/dev/null
meta=$(find "$work/x" -name metadata.json | head -n 1)
pgv=$(inroot 10001:10001 pg_dump --version 2>&1)
check "pg_dump of the root filesystem made it ($pgv)" \
	bash -c "[ -n '$meta' ] && [ \"\$(jq -r '.tools.pg_dump' '$meta')\" = '$pgv' ]"

# ---- the Dockerfile's build stage ---------------------------------------
# Its filesystem from deploy/image/build-packages.txt, the source copied as
# `COPY . .` copies it (.dockerignore's patterns left out), `make` and
# stage.sh run inside it as the Dockerfile's RUN does; its /stage then
# replaces bgrun and the playbooks in the runtime filesystem, as
# `COPY --from=build /stage/ /` does, and that binary takes a backup too.

buildfs=$work/buildfs
t0=$(date +%s)
if out=$("$image/build-rootfs.sh" --build "$buildfs" 2>&1); then
	ok "build-rootfs.sh --build builds the build stage's filesystem ($(($(date +%s) - t0)) s)"
else
	notok "build-rootfs.sh --build builds the build stage's filesystem" "$out"
	exit 1
fi
excludes=()
while IFS= read -r pat; do
	pat=${pat%%#*}
	pat=$(printf '%s' "$pat" | tr -d '[:space:]')
	[ -n "$pat" ] || continue
	case $pat in
	'**/'*) excludes+=("--exclude=${pat#'**/'}") ;;
	*) excludes+=("--exclude=./$pat") ;;
	esac
done <"$repo/.dockerignore"
mkdir -p "$buildfs/src"
tar -C "$repo" "${excludes[@]}" -cf - . | tar -C "$buildfs/src" -xf -
check "the build context leaves out build products (.dockerignore)" \
	bash -c "[ ! -e '$buildfs/src/bgrun' ] && [ ! -e '$buildfs/src/build' ] && [ -f '$buildfs/src/Makefile' ]"
t0=$(date +%s)
unshare --mount --propagation private --fork -- sh -c '
	mount -t proc proc "$1/proc" &&
	exec chroot "$1" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
		sh -c "cd /src && make -j\"\$(nproc)\" all && deploy/image/stage.sh /src /stage"' _ "$buildfs" \
	>"$work/make.log" 2>&1
rc=$?
check "make and stage.sh run in the build stage with build-packages.txt alone ($(($(date +%s) - t0)) s)" \
	bash -c "[ $rc -eq 0 ] || { tail -n 30 '$work/make.log'; exit 1; }"
if [ "$rc" -eq 0 ]; then
	cp -a "$buildfs/stage/." "$root/"
	check "its playbooks are the same as the repository's" diff -r "$repo/playbooks" "$root/opt/bgrun/playbooks"
	out=$(inroot 0:0 ldd /usr/local/bin/bgrun 2>&1)
	check "ldd in the chroot: the build stage's bgrun resolves all its libraries" \
		ldd_clean bgrun "$out" liblua5.4 libjansson libyaml
	cp "$buildfs/src/build/bgrun-lazy.so" "$work/tmp/bgrun-lazy.so"
	out=$(inroot 0:0 ldd /tmp/bgrun-lazy.so 2>&1)
	check "ldd in the chroot: the build stage's embedded modules resolve theirs" \
		ldd_clean lazy "$out" libcurl libpq libcrypto libarchive libexpat
	rm -f "$work/tmp/bgrun-lazy.so"
	inroot 10001:10001 bgrun playbooks/backup.lua env=local label=dockerfile --log-format json \
		>"$work/backup2.out" 2>"$work/backup2.err"
	rc=$?
	key2=$(sed -n "s|^uploaded: s3://$SANDBOX_S3_BUCKET/||p" "$work/backup2.out")
	check "the build stage's bgrun takes a backup as bgrun in the runtime filesystem (exit $rc)" \
		bash -c "[ $rc -eq 0 ] && [[ '$key2' == local/*-local-dockerfile.tar.gz ]] || cat '$work/backup2.err'"
	[ -n "$key2" ] && aws s3 rm --only-show-errors "s3://$SANDBOX_S3_BUCKET/$key2" >/dev/null 2>&1
fi

exit 0
