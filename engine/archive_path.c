/* Entry name rules for archive.extract; see archive_path.h. */
#include "archive_path.h"

#include <string.h>

/* 1 when a '/'-separated component of s is "..". */
static int has_dotdot(const char *s)
{
	const char *p = s;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return 1;
		p += n;
		while (*p == '/')
			p++;
	}
	return 0;
}

const char *archive_path_check(const char *name)
{
	if (name == NULL || *name == '\0')
		return "an empty name";
	if (name[0] == '/')
		return "an absolute path";
	if (has_dotdot(name))
		return "a '..' component";
	/* "./" alone names the directory itself: harmless */
	return NULL;
}

const char *archive_symlink_check(const char *name, const char *target)
{
	if (target == NULL || *target == '\0')
		return "a symlink without a target";
	if (target[0] == '/')
		return "a symlink to an absolute path";
	/* depth of the directory holding the link (its components but the
	 * last), then walk the target from there */
	long depth = -1;
	const char *p = name;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n > 0 && !(n == 1 && p[0] == '.'))
			depth++;
		p += n;
		while (*p == '/')
			p++;
	}
	if (depth < 0)
		depth = 0;
	p = target;
	while (*p) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return "a symlink leaving the directory";
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	return NULL;
}

const char *archive_hardlink_check(const char *target)
{
	if (target == NULL || *target == '\0')
		return "a hard link without a target";
	if (target[0] == '/')
		return "a hard link to an absolute path";
	if (has_dotdot(target))
		return "a hard link with a '..' component";
	return NULL;
}

int archive_under_link(const char *name, const char *link)
{
	while (name[0] == '.' && name[1] == '/')
		name += 2;
	while (link[0] == '.' && link[1] == '/')
		link += 2;
	size_t n = strlen(link);
	while (n > 0 && link[n - 1] == '/')
		n--;
	return n > 0 && strncmp(name, link, n) == 0 && name[n] == '/';
}
