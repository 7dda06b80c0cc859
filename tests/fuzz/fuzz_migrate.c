/* Migration files as migrate.find reads a directory (stdlib/migrate.lua):
 * their names (NNN_name.sql, .up/.down.sql, rollback/NNN_down.sql) and
 * their SQL (statement splitting, annotations, transaction control).
 * Input: records separated by a line "%%"; a record's first line is a file
 * name ("rollback/" prefix: in the rollback folder), the rest its text.
 * find must return a list sorted by integer version or raise a usage
 * error, never anything else. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static const char chunk[] =
	"local migrate = require('migrate')\n"
	"local core = require('bgrun.core')\n"
	"return function(dir)\n"
	"  local ok, list = pcall(migrate.find, dir)\n"
	"  if not ok then\n"
	"    if not (core.is_error(list) and list.code == 'usage') then\n"
	"      error('migrate.find raised an unexpected error: ' .. tostring(list))\n"
	"    end\n"
	"    return\n"
	"  end\n"
	"  for i, m in ipairs(list) do\n"
	"    assert(math.type(m.version) == 'integer', 'a version that is not an integer')\n"
	"    assert(i == 1 or m.version > list[i - 1].version, 'versions not strictly increasing')\n"
	"    assert(type(m.name) == 'string' and m.name ~= '', 'a migration without a name')\n"
	"    assert(type(m.checksum) == 'string' and #m.checksum == 64, 'bad checksum')\n"
	"    for _, st in ipairs(m.statements) do\n"
	"      assert(type(st.sql) == 'string' and math.type(st.line) == 'integer', 'bad statement')\n"
	"    end\n"
	"    migrate.contract_warnings(m)\n"
	"  end\n"
	"end\n";

static char root[PATH_MAX], rollback[PATH_MAX + 16];

static void clear(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || strcmp(e->d_name, "rollback") == 0)
			continue;
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
}

/* a name the file system can hold in one directory */
static int usable(const char *name, size_t n)
{
	if (n == 0 || n > 200 || memchr(name, '/', n) || memchr(name, '\0', n))
		return 0;
	return !(n == 1 && name[0] == '.') && !(n == 2 && name[0] == '.' && name[1] == '.');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0) {
		ref = fuzz_lua_harness(L, "=fuzz_migrate", chunk);
		snprintf(root, sizeof root, "%s", fuzz_scratch("migrate"));
		snprintf(rollback, sizeof rollback, "%s/rollback", root);
		mkdir(rollback, 0700);
	}
	clear(root);
	clear(rollback);
	const char *p = (const char *)data, *end = p + size;
	int files = 0;
	while (p < end && files < 16) {
		const char *sep = NULL;
		for (const char *q = p; q + 3 <= end; q++)
			if (q[0] == '%' && q[1] == '%' && q + 2 < end && q[2] == '\n' && (q == p || q[-1] == '\n')) {
				sep = q;
				break;
			}
		const char *rend = sep ? sep : end;
		const char *nl = memchr(p, '\n', (size_t)(rend - p));
		const char *name = p;
		size_t nlen = nl ? (size_t)(nl - p) : (size_t)(rend - p);
		const char *body = nl ? nl + 1 : rend;
		const char *dir = root;
		if (nlen > 9 && memcmp(name, "rollback/", 9) == 0) {
			dir = rollback;
			name += 9;
			nlen -= 9;
		}
		if (usable(name, nlen)) {
			char path[512];
			snprintf(path, sizeof path, "%s/%.*s", dir, (int)nlen, name);
			FILE *f = fopen(path, "wb");
			if (f) {
				fwrite(body, 1, (size_t)(rend - body), f);
				fclose(f);
				files++;
			}
		}
		p = sep ? sep + 3 : end;
	}
	fuzz_lua_run(L, ref, (const uint8_t *)root, strlen(root));
	return 0;
}
