/* A migration file's SQL as migrate.find splits it (stdlib/migrate.lua
 * split_sql: quotes, dollar quotes, comments) and contract_warnings reads
 * it; the fast companion of fuzz_migrate, which goes through a directory.
 * The statements must cover the text in order with valid line numbers. */
#define _POSIX_C_SOURCE 200809L
#include "fuzz.h"

static const char chunk[] =
	"local migrate = require('migrate')\n"
	"return function(sql)\n"
	"  local stmts = migrate.split_sql(sql)\n"
	"  local lines = select(2, sql:gsub('\\n', '')) + 1\n"
	"  local last = 0\n"
	"  for _, st in ipairs(stmts) do\n"
	"    assert(type(st.sql) == 'string' and type(st.code) == 'string', 'a statement without its text')\n"
	"    assert(math.type(st.line) == 'integer' and st.line >= 1 and st.line <= lines, 'line out of range')\n"
	"    assert(st.line >= last, 'statements out of order')\n"
	"    last = st.line\n"
	"  end\n"
	"  migrate.contract_warnings({ statements = stmts, sql = sql, contract = false, name = 'x', version = 1 })\n"
	"end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0)
		ref = fuzz_lua_harness(L, "=fuzz_migrate_sql", chunk);
	fuzz_lua_run(L, ref, data, size);
	return 0;
}
