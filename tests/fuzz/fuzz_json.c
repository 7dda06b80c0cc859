/* json.decode (engine/mod_json.c: jansson into Lua values), then the
 * round trip: what decodes must encode, and decode again to the same. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

static const char chunk[] =
	"local json = require('json')\n"
	"local core = require('bgrun.core')\n"
	"return function(data)\n"
	"  local ok, v = pcall(json.decode, data)\n"
	"  if not ok then\n"
	"    if not (core.is_error(v) and v.module == 'json' and v.reason == 'InvalidJSON') then\n"
	"      error('json.decode raised an unexpected error: ' .. tostring(v))\n"
	"    end\n"
	"    return\n"
	"  end\n"
	"  local s = json.encode(v, { sort_keys = true })\n"
	"  local s2 = json.encode(json.decode(s), { sort_keys = true })\n"
	"  if s ~= s2 then error(('round trip changed the value: %q -> %q'):format(s, s2)) end\n"
	"end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0)
		ref = fuzz_lua_harness(L, "=fuzz_json", chunk);
	fuzz_lua_run(L, ref, data, size);
	return 0;
}
