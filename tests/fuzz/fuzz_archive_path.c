/* archive.extract's entry rules (engine/archive_path.c). Input: an entry
 * name, a NUL, a link target. Besides "no crash", every accepted name and
 * symlink must resolve lexically inside the extraction directory. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "archive_path.h"
#include "fuzz.h"

/* Walks s's '/'-separated components from depth; -1 when a ".." climbs
 * above the top, else the final depth. */
static long walk(const char *s, long depth)
{
	const char *p = s;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return -1;
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n + (p[n] == '/');
	}
	return depth;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_strdup(data, size);
	const char *name = s;
	const char *target = memchr(data, 0, size) ? s + strlen(s) + 1 : NULL;

	const char *why = archive_path_check(name);
	if (why == NULL) {
		if (name[0] == '/' || walk(name, 0) < 0)
			fuzz_fail("accepted '%s', which leaves the directory", name);
		if (target) {
			/* the link's directory: every component of name but the last */
			char *dir = strdup(name);
			size_t n = strlen(dir);
			while (n > 0 && dir[n - 1] == '/')
				dir[--n] = '\0';
			char *slash = strrchr(dir, '/');
			if (slash)
				*slash = '\0';
			else
				dir[0] = '\0';
			long d = walk(dir, 0);
			if (archive_symlink_check(name, target) == NULL &&
			    (target[0] == '/' || d < 0 || walk(target, d) < 0))
				fuzz_fail("accepted symlink '%s' -> '%s', which leaves the directory", name, target);
			free(dir);
			(void)archive_under_link(name, target);
		}
	}
	if (target && archive_hardlink_check(target) == NULL && (target[0] == '/' || walk(target, 0) < 0))
		fuzz_fail("accepted hard link to '%s'", target);
	free(s);
	return 0;
}
