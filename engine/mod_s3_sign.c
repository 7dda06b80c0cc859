/* s3: b:presign and s3.sign (SigV4 from Lua). */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

/* --------------------------------------------------------------- presign */

/* Reads time= (epoch seconds or YYYYMMDDTHHMMSSZ) into date. */
static void opt_time(lua_State *L, int t, const char *fname, char date[SIGV4_DATE_LEN + 1])
{
	time_t when = time(NULL);
	int ty = t ? lua_getfield(L, t, "time") : LUA_TNIL;
	if (ty == LUA_TNUMBER && lua_isinteger(L, -1)) {
		when = (time_t)lua_tointeger(L, -1);
	} else if (ty == LUA_TSTRING) {
		if (sigv4_parse_date(lua_tostring(L, -1), &when) != 0)
			luaL_error(L, "s3.%s: option 'time' must read YYYYMMDDTHHMMSSZ", fname);
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.%s: option 'time' must be epoch seconds or YYYYMMDDTHHMMSSZ", fname);
	}
	if (t)
		lua_pop(L, 1);
	sigv4_format_date(when, date);
}

/* b:presign(method, key [, {expires=3600, time=}]) -> url */
int s3_b_presign(lua_State *L)
{
	s3_bucket *b = s3_check_bucket(L);
	const char *method = luaL_checkstring(L, 2);
	const char *key = luaL_checkstring(L, 3);
	luaL_argcheck(L, *key != '\0', 3, "the key must not be empty");
	static const char *const methods[] = {"GET", "PUT", "HEAD", "DELETE", NULL};
	int mok = 0;
	for (int i = 0; methods[i]; i++)
		mok |= strcmp(method, methods[i]) == 0;
	luaL_argcheck(L, mok, 2, "must be GET, PUT, HEAD or DELETE");
	int opts = 0;
	long expires = 3600;
	if (!lua_isnoneornil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		opts = 4;
		static const char *const keys[] = {"expires", "time", NULL};
		bgrun_check_options(L, 4, keys);
		if (lua_getfield(L, 4, "expires") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 604800)
				luaL_error(L, "s3.presign: option 'expires' must be an integer from 1 to 604800 seconds");
			expires = (long)lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
	}
	char cerr[1024];
	if (s3_refresh_creds(L, b, cerr, sizeof cerr) != 0) {
		bgrun_error_new(L, "s3", "presign", "CredentialsFailed", "%s", cerr);
		return bgrun_error_throw(L);
	}
	char date[SIGV4_DATE_LEN + 1];
	opt_time(L, opts, "presign", date);
	buf u = BUF_INIT;
	if (s3_object_url(b, &u, key) != 0) {
		buf_free(&u);
		return luaL_error(L, "s3: out of memory");
	}
	sigv4_params p = {method, u.data, NULL, 0, "UNSIGNED-PAYLOAD", date, b->region, "s3", b->access_key, b->secret_key};
	sigv4_result s = SIGV4_RESULT_INIT;
	char err[1024];
	int rc = sigv4_presign(&p, expires, b->session_token, &s, err, sizeof err);
	buf_free(&u);
	if (rc != 0) {
		sigv4_result_free(&s);
		return luaL_error(L, "s3.presign: %s", err);
	}
	lua_pushlstring(L, s.url.data, s.url.len);
	sigv4_result_free(&s);
	return 1;
}

/* ------------------------------------------------------------------ sign */

/* The x-amz-* headers s3.sign adds unless the caller gave them. */
struct given {
	int date, hash, tok;
};

/* Appends the caller's headers= (but Authorization) to the array at arr as
 * name, value, ...; notes which x-amz-* headers were given. Returns the
 * array's length. */
static int caller_headers(lua_State *L, int arr, struct given *given)
{
	int n = 0;
	int ty = lua_getfield(L, 1, "headers");
	if (ty == LUA_TTABLE) {
		int h = lua_gettop(L);
		lua_pushnil(L);
		while (lua_next(L, h)) {
			if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
				luaL_error(L, "s3.sign: headers must map names to strings");
			size_t kl;
			const char *k = lua_tolstring(L, -2, &kl);
			given->date |= httputil_name_is(k, kl, "x-amz-date");
			given->hash |= httputil_name_is(k, kl, "x-amz-content-sha256");
			given->tok |= httputil_name_is(k, kl, "x-amz-security-token");
			if (httputil_name_is(k, kl, "authorization")) {
				lua_pop(L, 1);
				continue;
			}
			lua_pushvalue(L, -2);
			lua_rawseti(L, arr, ++n);
			lua_pushstring(L, lua_tostring(L, -1));
			lua_rawseti(L, arr, ++n);
			lua_pop(L, 1);
		}
	} else if (ty != LUA_TNIL) {
		luaL_error(L, "s3.sign: option 'headers' must be a table");
	}
	lua_pop(L, 1);
	return n;
}

/* Appends a header to the array at arr (of length n) and to the result
 * table; returns the new length. */
static int add_header(lua_State *L, int arr, int n, int result, const char *name, const char *value)
{
	lua_pushstring(L, name);
	lua_rawseti(L, arr, ++n);
	lua_pushstring(L, value);
	lua_rawseti(L, arr, ++n);
	lua_pushstring(L, value);
	lua_setfield(L, result, name);
	return n;
}

static const char *const sign_keys[] = {
	"method", "url", "headers", "payload_hash", "time", "region", "access_key", "secret_key", "service",
	"session_token", NULL,
};

/* s3.sign{method=, url=, headers=, payload_hash=, time=, region=,
 *         access_key=, secret_key=, service="s3", session_token=}
 *   -> headers to add {Authorization=, ["x-amz-date"]=, ...}, details
 *      {canonical_request=, string_to_sign=, signature=, signed_headers=} */
int s3_sign(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	bgrun_check_options(L, 1, sign_keys);
	const char *method = bgrun_opt_string(L, 1, "method", NULL);
	const char *url = bgrun_opt_string(L, 1, "url", NULL);
	const char *hash = bgrun_opt_string(L, 1, "payload_hash", NULL);
	const char *region = bgrun_opt_string(L, 1, "region", NULL);
	const char *ak = bgrun_opt_string(L, 1, "access_key", NULL);
	const char *sk = bgrun_opt_string(L, 1, "secret_key", NULL);
	const char *service = bgrun_opt_string(L, 1, "service", NULL);
	const char *tok = bgrun_opt_string(L, 1, "session_token", NULL);
	if (!url)
		luaL_error(L, "s3.sign: option 'url' (a string) is required");
	if (!ak)
		ak = s3_env_first("AWS_ACCESS_KEY_ID", NULL);
	if (!sk)
		sk = s3_env_first("AWS_SECRET_ACCESS_KEY", NULL);
	if (!ak || !sk)
		luaL_error(L, "s3.sign: access_key and secret_key are required (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
	bgrun_secret(L, sk, strlen(sk));
	if (!region)
		region = s3_env_first("AWS_REGION", "AWS_DEFAULT_REGION");
	if (!region)
		region = "us-east-1";
	if (!service)
		service = "s3";
	if (!method)
		method = "GET";
	if (!hash)
		hash = strcmp(service, "s3") == 0 ? "UNSIGNED-PAYLOAD" : EMPTY_SHA256;
	char date[SIGV4_DATE_LEN + 1];
	opt_time(L, 1, "sign", date);
	int is_s3 = strcmp(service, "s3") == 0;

	/* headers: the caller's plus x-amz-date (and for S3 the payload hash,
	 * and the session token), unless given; strings anchored in a table */
	lua_newtable(L);
	int arr = lua_gettop(L);
	struct given given = {0, 0, 0};
	int n = caller_headers(L, arr, &given);
	lua_newtable(L);
	int result = lua_gettop(L);
	if (!given.date)
		n = add_header(L, arr, n, result, "x-amz-date", date);
	if (is_s3 && !given.hash)
		n = add_header(L, arr, n, result, "x-amz-content-sha256", hash);
	if (tok && !given.tok) {
		bgrun_secret(L, tok, strlen(tok));
		n = add_header(L, arr, n, result, "x-amz-security-token", tok);
	}
	const char **h = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *h, 0);
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, arr, i + 1);
		h[i] = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	sigv4_params p = {method, url, h, (size_t)n / 2, hash, date, region, service, ak, sk};
	sigv4_result s = SIGV4_RESULT_INIT;
	char err[1024];
	if (sigv4_sign(&p, &s, err, sizeof err) != 0) {
		sigv4_result_free(&s);
		return luaL_error(L, "s3.sign: %s", err);
	}
	/* copy to Lua strings in a protected way: on OOM s leaks otherwise,
	 * so the pushes are few and small; accept that risk as http does */
	lua_pushlstring(L, s.authorization.data, s.authorization.len);
	lua_setfield(L, result, "Authorization");
	lua_pushvalue(L, result);
	lua_createtable(L, 0, 4);
	lua_pushlstring(L, s.canonical_request.data, s.canonical_request.len);
	lua_setfield(L, -2, "canonical_request");
	lua_pushlstring(L, s.string_to_sign.data, s.string_to_sign.len);
	lua_setfield(L, -2, "string_to_sign");
	lua_pushstring(L, s.signature);
	lua_setfield(L, -2, "signature");
	lua_pushlstring(L, s.signed_headers.data, s.signed_headers.len);
	lua_setfield(L, -2, "signed_headers");
	sigv4_result_free(&s);
	return 2;
}
