/* archive.list and archive.extract (engine/mod_archive.c) on an archive
 * from outside (a backup, a release bundle): any format and compression
 * libarchive detects. They must return or raise a structured archive
 * error, write nothing outside the target directory (a file next to it
 * must stay untouched, no link inside may point outside), and leave the
 * working directory as it was. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "fuzz.h"

static const char chunk[] =
	"local archive = require('archive')\n"
	"local core = require('bgrun.core')\n"
	"local function expected(ok, e, what)\n"
	"  if ok then return end\n"
	"  if not (core.is_error(e) and e.module == 'archive') then\n"
	"    error(what .. ' raised an unexpected error: ' .. tostring(e))\n"
	"  end\n"
	"end\n"
	"return function(paths)\n"
	"  local file, out = paths:match('^(.-)\\n(.*)$')\n"
	"  local ok, list = pcall(archive.list, file)\n"
	"  expected(ok, list, 'archive.list')\n"
	"  local ok2, n = pcall(archive.extract, file, out, { progress = false })\n"
	"  expected(ok2, n, 'archive.extract')\n"
	"  if ok2 and not ok then error('extract accepted an archive list refused') end\n"
	"  if ok2 then assert(math.type(n) == 'integer' and n <= #list, 'more entries written than listed') end\n"
	"end\n";

static char root[PATH_MAX], in[PATH_MAX], out[PATH_MAX], guard[PATH_MAX], cwd[PATH_MAX];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0)
		chmod(path, 0700), remove(path);
	return 0;
}

/* every symlink under out must resolve (when it resolves) under out */
static int check_link(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	char real[PATH_MAX];
	if (flag == FTW_SL && realpath(path, real) && strncmp(real, out, strlen(out)) != 0)
		fuzz_fail("extracted symlink %s resolves to %s, outside %s", path, real, out);
	return 0;
}

/* 1 when root holds exactly guard, in.archive and out */
static int root_clean(void)
{
	DIR *d = opendir(root);
	int n = 0, bad = 0;
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		n++;
		if (strcmp(e->d_name, "guard") != 0 && strcmp(e->d_name, "in.archive") != 0 && strcmp(e->d_name, "out") != 0)
			bad = 1;
	}
	if (d)
		closedir(d);
	return d && n == 3 && !bad;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ref = -1;
	lua_State *L = fuzz_lua();
	if (ref < 0) {
		ref = fuzz_lua_harness(L, "=fuzz_archive_extract", chunk);
		snprintf(root, sizeof root, "%s", fuzz_scratch("archive"));
		snprintf(in, sizeof in, "%s/in.archive", root);
		snprintf(out, sizeof out, "%s/out", root);
		snprintf(guard, sizeof guard, "%s/guard", root);
		if (getcwd(cwd, sizeof cwd) == NULL)
			fuzz_fail("getcwd");
	}
	/* a directory without write permission would stop the removal */
	nftw(out, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	if (mkdir(out, 0700) != 0) {
		/* a directory extracted without search permission */
		char cmd[256];
		snprintf(cmd, sizeof cmd, "chmod -R u+rwx '%s'; rm -rf '%s'", out, out);
		if (system(cmd) != 0 || mkdir(out, 0700) != 0)
			fuzz_fail("cannot reset %s", out);
	}
	FILE *f = fopen(in, "wb");
	if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		fuzz_fail("cannot write %s", in);
	f = fopen(guard, "wb");
	if (f == NULL || fputs("guard", f) < 0 || fclose(f) != 0)
		fuzz_fail("cannot write %s", guard);

	char arg[256];
	int n = snprintf(arg, sizeof arg, "%s\n%s", in, out);
	fuzz_lua_run(L, ref, (const uint8_t *)arg, (size_t)n);

	char now[PATH_MAX];
	if (getcwd(now, sizeof now) == NULL || strcmp(now, cwd) != 0)
		fuzz_fail("extract left the working directory at %s", now);
	/* nothing but in.archive, guard and out in root; guard untouched */
	if (!root_clean())
		fuzz_fail("extract wrote next to its directory (in %s)", root);
	struct stat st;
	f = fopen(guard, "rb");
	char g[16] = "";
	if (lstat(guard, &st) != 0 || !S_ISREG(st.st_mode) || f == NULL || fread(g, 1, sizeof g, f) != 5 ||
	    memcmp(g, "guard", 5) != 0)
		fuzz_fail("extract changed %s", guard);
	fclose(f);
	nftw(out, check_link, 16, FTW_PHYS);
	return 0;
}
