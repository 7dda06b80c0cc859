/* The run journal reader (stdlib/journal.lua) as `bgrun resume` uses it:
 * a JSON-lines file that a killed run may have torn or a human edited.
 * read, then pending, committed, unfinished_steps and alive must not
 * raise, and what pending returns must be usable by resume (a name, an
 * undo table or none). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "fuzz.h"

static const char chunk[] =
	"local core = require('bgrun.core')\n"
	"-- what the prelude's globals give journal.lua when bgrun resume runs\n"
	"_G.bgrun = _G.bgrun or { hostname = core.hostname, pid = core.pid }\n"
	"local journal = require('journal')\n"
	"return function(path)\n"
	"  local events = journal.read(path)\n"
	"  for _, ev in ipairs(events) do assert(type(ev) == 'table', 'an event that is not a table') end\n"
	"  for _, c in ipairs(journal.pending(events)) do\n"
	"    assert(not c.undo or type(c.undo) == 'table', 'a compensation whose undo is not a table')\n"
	"    assert(c.name == nil or type(c.name) == 'string', 'a compensation whose name is not a string')\n"
	"    if c.undo then local _ = c.undo.module end\n"
	"  end\n"
	"  journal.committed(events)\n"
	"  for _, n in ipairs(journal.unfinished_steps(events)) do\n"
	"    assert(type(n) == 'string', 'a step name that is not a string')\n"
	"  end\n"
	"  if events[1] then journal.alive(events[1]) end\n"
	"end\n";

static char path[PATH_MAX + 16];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0) {
		ref = fuzz_lua_harness(L, "=fuzz_journal", chunk);
		snprintf(path, sizeof path, "%s/in.jsonl", fuzz_scratch("journal"));
	}
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		fuzz_fail("cannot write %s", path);
	fuzz_lua_run(L, ref, (const uint8_t *)path, strlen(path));
	unlink(path);
	return 0;
}
