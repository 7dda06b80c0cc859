/* digest: SHA-256 of strings and files, for migration checksums, backup
 * metadata and S3 payload hashes (the hashing itself is in digest.c), and
 * base64 for HTTP basic credentials. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"
#include "digest.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/evp.h>

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

/* digest.base64(s) -> standard base64 with padding, one line */
static int digest_base64(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	if (len > (size_t)INT_MAX / 4 * 3 - 3)
		return luaL_argerror(L, 1, "too long");
	/* the buffer belongs to Lua: nothing to free if it raises */
	luaL_Buffer b;
	char *out = luaL_buffinitsize(L, &b, 4 * ((len + 2) / 3) + 1);
	int n = EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
	luaL_pushresultsize(&b, (size_t)n);
	return 1;
}

static const luaL_Reg digest_funcs[] = {
	{"sha256", digest_sha256},
	{"sha256_file", digest_sha256_file},
	{"base64", digest_base64},
	{NULL, NULL},
};

int luaopen_digest(lua_State *L)
{
	luaL_newlib(L, digest_funcs);
	return 1;
}
