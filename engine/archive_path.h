/* The rules archive.extract applies to each entry before anything is
 * written: no absolute names, no ".." components, links that stay inside
 * the extraction directory, nothing reached through a symlink of the same
 * archive. Pure C so the unit tests call it directly. */
#ifndef BGRUN_ARCHIVE_PATH_H
#define BGRUN_ARCHIVE_PATH_H

#include <stddef.h>

/* NULL when name may be extracted, else why not ("an absolute path",
 * "a '..' component", "an empty name"). */
const char *archive_path_check(const char *name);

/* NULL when a symlink at name pointing at target stays inside the
 * extraction directory, else why not. */
const char *archive_symlink_check(const char *name, const char *target);

/* NULL when a hard link to target (a name inside the archive) is safe. */
const char *archive_hardlink_check(const char *target);

/* 1 when name lies under (or is) link, a symlink name of the archive:
 * writing it would go through the link. */
int archive_under_link(const char *name, const char *link);

#endif
