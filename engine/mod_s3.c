/* s3: objects in an S3-compatible store (AWS, MinIO, SeaweedFS) through
 * the engine's transfer layer (httpc.c), signed with engine/sigv4.c in a
 * pre-send hook. Each bucket handle keeps a pool, so connections are
 * reused across calls; every transfer runs in httpc's loop, which looks at
 * the interrupt flag and the transfer's deadline. Lua values and errors
 * are made after libcurl returns. S3's XML answers are read with expat
 * (s3xml.c). */
#define _POSIX_C_SOURCE 200809L
#include "mod_s3_int.h"

/* b:__tostring() */
static int bucket_tostring(lua_State *L)
{
	s3_bucket *b = luaL_checkudata(L, 1, BUCKET_MT);
	if (b->pool == NULL)
		lua_pushliteral(L, "s3.bucket (closed)");
	else
		lua_pushfstring(L, "s3.bucket %s at %s", b->bucket, b->endpoint);
	return 1;
}

static const luaL_Reg bucket_methods[] = {
	{"put_file", s3_b_put_file},
	{"get_file", s3_b_get_file},
	{"head", s3_b_head},
	{"list", s3_b_list},
	{"delete", s3_b_delete},
	{"presign", s3_b_presign},
	{"upload", s3_b_upload},
	{"abort_upload", s3_b_abort_upload},
	{"open", s3_b_open},
	{"close", s3_bucket_close},
	{NULL, NULL},
};

static const luaL_Reg s3_funcs[] = {
	{"bucket", s3_bucket_new},
	{"sign", s3_sign},
	{NULL, NULL},
};

/* Sets field (a stream marker: BGRUN_SINK_FIELD...) to true in the
 * metatable name. */
static void mark_class(lua_State *L, const char *name, const char *field)
{
	luaL_getmetatable(L, name);
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, field);
	lua_pop(L, 1);
}

int luaopen_s3(lua_State *L)
{
	static const luaL_Reg bucket_meta[] = {
		{"__gc", s3_bucket_close}, {"__close", s3_bucket_close}, {"__tostring", bucket_tostring}, {NULL, NULL}};
	static const luaL_Reg upload_meta[] = {{"__gc", s3_upload_close}, {"__close", s3_upload_close}, {NULL, NULL}};
	static const luaL_Reg reader_meta[] = {{"__gc", s3_reader_close}, {"__close", s3_reader_close}, {NULL, NULL}};
	bgrun_newclass(L, BUCKET_MT, bucket_methods, bucket_meta);
	bgrun_newclass(L, UPLOAD_MT, s3_upload_methods, upload_meta);
	mark_class(L, UPLOAD_MT, BGRUN_SINK_FIELD);
	bgrun_newclass(L, READER_MT, s3_reader_methods, reader_meta);
	mark_class(L, READER_MT, BGRUN_SOURCE_FIELD);
	luaL_newlib(L, s3_funcs);
	return 1;
}
