/* JSON <-> Lua conversion: an engine service under every native module
 * (json, yaml, k8s, http, postgres, log). jansson values on one side, Lua
 * tables on the other; arrays and objects keep their kind across a round
 * trip through the json.array / json.object metatables, integers stay
 * integers, and JSON null is one light userdata (json.null). Depends on
 * nothing but Lua and jansson; never raises but for Lua's own memory and
 * stack errors. */
#ifndef BGRUN_JSONCONV_H
#define BGRUN_JSONCONV_H

#include <stddef.h>

#include <jansson.h>
#include <lua.h>

#define BGRUN_JSON_ARRAY_MT "bgrun.json.array"
#define BGRUN_JSON_OBJECT_MT "bgrun.json.object"
/* Deeper Lua tables are refused (a cycle, most likely). */
/* jansson's own parser limit: whatever json.decode reads, encode writes back */
#define BGRUN_JSON_MAX_DEPTH 2048

/* Pushes the Lua value of j: objects and arrays become tables marked with
 * the json.object / json.array metatables, null becomes json.null. */
void bgrun_json_push(lua_State *L, const json_t *j);
/* Converts the value at idx; NULL with a message in err on failure
 * (cycle, non-string key, function value, NaN). Does not raise. */
json_t *bgrun_json_from_lua(lua_State *L, int idx, char *err, size_t errlen);
/* 1 when the table at idx is a JSON array, 0 an object: by its mark first,
 * then by its keys (1..n and nothing else). An empty unmarked table is an
 * object. *n gets the array length (or the key count). */
int bgrun_json_is_array(lua_State *L, int idx, size_t *n);
/* Sets the json.array (array != 0) or json.object mark on the table at idx. */
void bgrun_json_mark(lua_State *L, int idx, int array);
/* Pushes json.null. */
void bgrun_json_push_null(lua_State *L);

#endif
