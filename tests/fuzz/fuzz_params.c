/* The playbook parameter parser (lua/prelude.lua parse_args): name=value
 * arguments, one a line, against parameters of every type and check. It
 * must answer args or a message, never raise, and what it accepts must
 * satisfy every declared check. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

static const char chunk[] =
	"local prelude = require('prelude')\n"
	"local json = require('json')\n"
	"local params = {\n"
	"  name = { type = 'string', required = true, pattern = '^[a-z][a-z0-9-]*$', max_length = 63 },\n"
	"  env = { choices = { 'dev', 'staging', 'prod' }, default = 'dev' },\n"
	"  replicas = { type = 'integer', default = 2 },\n"
	"  ratio = { type = 'number' },\n"
	"  dry = { type = 'boolean', default = false },\n"
	"  tag = { type = 'string', max_length = 128, help = 'image tag' },\n"
	"  level = { type = 'integer', choices = { 1, 2, 3 } },\n"
	"}\n"
	"return function(data)\n"
	"  local argv = {}\n"
	"  for line in data:gmatch('[^\\n]+') do argv[#argv + 1] = line end\n"
	"  local args, err = prelude.parse_args(params, argv)\n"
	"  if args == nil then\n"
	"    assert(type(err) == 'string' and err ~= '', 'parse_args failed without a message')\n"
	"    return\n"
	"  end\n"
	"  assert(type(args.name) == 'string' and args.name:match('^[a-z][a-z0-9-]*$') and #args.name <= 63, 'name')\n"
	"  assert(args.env == 'dev' or args.env == 'staging' or args.env == 'prod', 'env')\n"
	"  assert(math.type(args.replicas) == 'integer', 'replicas')\n"
	"  assert(args.ratio == nil or (math.type(args.ratio) ~= nil and args.ratio == args.ratio\n"
	"    and args.ratio ~= math.huge and args.ratio ~= -math.huge), 'ratio must be a finite number')\n"
	"  assert(type(args.dry) == 'boolean', 'dry')\n"
	"  assert(args.tag == nil or (type(args.tag) == 'string' and #args.tag <= 128), 'tag')\n"
	"  assert(args.level == nil or args.level == 1 or args.level == 2 or args.level == 3, 'level')\n"
	"  for k in pairs(args) do assert(params[k], 'unknown key ' .. tostring(k)) end\n"
	"  -- the journal, the report and JSON logs encode the arguments\n"
	"  json.encode(args)\n"
	"end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0)
		ref = fuzz_lua_harness(L, "=fuzz_params", chunk);
	fuzz_lua_run(L, ref, data, size);
	return 0;
}
