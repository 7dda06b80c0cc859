/* yaml: read YAML (manifests, configuration) into Lua tables, typed by the
 * YAML 1.2 core schema, through libyaml. */
#include "bgrun.h"
#include "yamlconv.h"

#include <stdlib.h>

static json_t *parse_or_raise(lua_State *L, const char *text, size_t len, const char *what)
{
	char err[512];
	json_t *docs = yaml_to_json_all(text, len, err, sizeof err);
	if (docs == NULL) {
		bgrun_error_new(L, "yaml", "decode", "InvalidYAML", "%s: %s", what, err);
		bgrun_error_set_str(L, "code", "invalid");
		bgrun_error_throw(L);
	}
	return docs;
}

/* yaml.decode(text) -> value of the first document (nil when empty) */
static int yaml_decode(lua_State *L)
{
	size_t len;
	const char *text = luaL_checklstring(L, 1, &len);
	json_t *docs = parse_or_raise(L, text, len, "YAML text");
	if (json_array_size(docs) == 0)
		lua_pushnil(L);
	else
		bgrun_json_push(L, json_array_get(docs, 0));
	json_decref(docs);
	return 1;
}

/* yaml.decode_all(text) -> array of the documents */
static int yaml_decode_all(lua_State *L)
{
	size_t len;
	const char *text = luaL_checklstring(L, 1, &len);
	json_t *docs = parse_or_raise(L, text, len, "YAML text");
	bgrun_json_push(L, docs);
	json_decref(docs);
	return 1;
}

/* yaml.load_file(path) -> array of the documents in the file */
static int yaml_load_file(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		bgrun_error_new(L, "yaml", "load", "NotFound", "cannot open %s", path);
		bgrun_error_set_str(L, "code", "open");
		bgrun_error_set_str(L, "path", path);
		bgrun_error_throw(L);
	}
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		luaL_addlstring(&b, chunk, n);
	fclose(f);
	luaL_pushresult(&b);
	size_t len;
	const char *text = lua_tolstring(L, -1, &len);
	json_t *docs = parse_or_raise(L, text, len, path);
	bgrun_json_push(L, docs);
	json_decref(docs);
	return 1;
}

static const luaL_Reg yaml_funcs[] = {
	{"decode", yaml_decode},
	{"decode_all", yaml_decode_all},
	{"load_file", yaml_load_file},
	{NULL, NULL},
};

int luaopen_yaml(lua_State *L)
{
	luaL_newlib(L, yaml_funcs);
	return 1;
}
