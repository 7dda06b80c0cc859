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

int luaopen_s3(lua_State *L)
{
	if (luaL_newmetatable(L, BUCKET_MT)) {
		luaL_newlib(L, bucket_methods);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, s3_bucket_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, s3_bucket_close);
		lua_setfield(L, -2, "__close");
		lua_pushcfunction(L, bucket_tostring);
		lua_setfield(L, -2, "__tostring");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, REQ_MT)) {
		lua_pushcfunction(L, s3_req_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, XML_MT)) {
		lua_pushcfunction(L, s3_xml_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, UPLOAD_MT)) {
		lua_newtable(L);
		luaL_setfuncs(L, s3_upload_methods, 0);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, s3_upload_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, s3_upload_close);
		lua_setfield(L, -2, "__close");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, BGRUN_SINK_FIELD);
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, READER_MT)) {
		lua_newtable(L);
		luaL_setfuncs(L, s3_reader_methods, 0);
		lua_setfield(L, -2, "__index");
		lua_pushcfunction(L, s3_reader_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, s3_reader_close);
		lua_setfield(L, -2, "__close");
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, BGRUN_SOURCE_FIELD);
	}
	lua_pop(L, 1);
	if (luaL_newmetatable(L, OP_MT)) {
		lua_pushcfunction(L, s3_op_close);
		lua_setfield(L, -2, "__gc");
		lua_pushcfunction(L, s3_op_close);
		lua_setfield(L, -2, "__close");
	}
	lua_pop(L, 1);
	luaL_newlib(L, s3_funcs);
	return 1;
}
