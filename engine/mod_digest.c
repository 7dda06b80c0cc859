/* digest: SHA-256 of strings and files, for migration checksums, backup
 * metadata and S3 payload hashes. The hashing itself is in digest.c. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
#include "digest.h"

#include <errno.h>
#include <string.h>

/* digest.sha256(s) -> hex string */
static int digest_sha256(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	char hex[SHA256_HEX_LEN + 1];
	if (sha256_hex(s, len, hex) != 0)
		return luaL_error(L, "digest.sha256: OpenSSL failed (out of memory?)");
	lua_pushlstring(L, hex, SHA256_HEX_LEN);
	return 1;
}

/* digest.sha256_file(path) -> hex string, size */
static int digest_sha256_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	char hex[SHA256_HEX_LEN + 1];
	long long size = 0;
	int rc = sha256_file_hex(path, hex, &size, bgrun_interrupted);
	int err = errno;
	if (rc == -3)
		bgrun_throw_interrupted(L, "digest", "sha256_file");
	if (rc == -1) {
		bgrun_error_new(L, "digest", "sha256_file", err == ENOENT ? "NotFound" : "IOError",
		                "cannot read %s: %s", path, strerror(err));
		bgrun_error_set_str(L, "code", err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : "EIO");
		bgrun_error_set_str(L, "path", path);
		bgrun_error_throw(L);
	}
	if (rc != 0)
		return luaL_error(L, "digest.sha256_file: OpenSSL failed (out of memory?)");
	lua_pushlstring(L, hex, SHA256_HEX_LEN);
	lua_pushinteger(L, (lua_Integer)size);
	return 2;
}

static const luaL_Reg digest_funcs[] = {
	{"sha256", digest_sha256},
	{"sha256_file", digest_sha256_file},
	{NULL, NULL},
};

int luaopen_digest(lua_State *L)
{
	luaL_newlib(L, digest_funcs);
	return 1;
}
