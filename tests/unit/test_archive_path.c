/* Unit tests for the entry rules of archive.extract (engine/archive_path.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "archive_path.h"

static void names(void **state)
{
	(void)state;
	assert_null(archive_path_check("a"));
	assert_null(archive_path_check("a/b/c.txt"));
	assert_null(archive_path_check("./a"));
	assert_null(archive_path_check("a/..b/c.."));  /* dots inside names are fine */
	assert_null(archive_path_check("a/.../b"));
	assert_string_equal(archive_path_check(""), "an empty name");
	assert_string_equal(archive_path_check(NULL), "an empty name");
	assert_string_equal(archive_path_check("/etc/passwd"), "an absolute path");
	assert_string_equal(archive_path_check(".."), "a '..' component");
	assert_string_equal(archive_path_check("../x"), "a '..' component");
	assert_string_equal(archive_path_check("a/../../x"), "a '..' component");
	assert_string_equal(archive_path_check("a/b/.."), "a '..' component");
	assert_string_equal(archive_path_check("a//..//b"), "a '..' component");
}

static void symlinks(void **state)
{
	(void)state;
	assert_null(archive_symlink_check("l", "a.txt"));
	assert_null(archive_symlink_check("sub/l", "../a.txt"));      /* back to the top: inside */
	assert_null(archive_symlink_check("a/b/l", "../../x"));
	assert_null(archive_symlink_check("a/b/l", "./c/../d"));
	assert_null(archive_symlink_check("./a/./l", "../x"));
	assert_string_equal(archive_symlink_check("l", "/etc"), "a symlink to an absolute path");
	assert_string_equal(archive_symlink_check("l", ".."), "a symlink leaving the directory");
	assert_null(archive_symlink_check("l", "."));
	assert_string_equal(archive_symlink_check("a/b/l", "../../../x"), "a symlink leaving the directory");
	/* climbing out and back in still leaves for a moment: refused */
	assert_string_equal(archive_symlink_check("a/l", "../../a/x"), "a symlink leaving the directory");
	assert_string_equal(archive_symlink_check("l", ""), "a symlink without a target");
	assert_string_equal(archive_symlink_check("l", NULL), "a symlink without a target");
}

static void hardlinks(void **state)
{
	(void)state;
	assert_null(archive_hardlink_check("sub/a.txt"));
	assert_string_equal(archive_hardlink_check("/etc/passwd"), "a hard link to an absolute path");
	assert_string_equal(archive_hardlink_check("../x"), "a hard link with a '..' component");
	assert_string_equal(archive_hardlink_check(""), "a hard link without a target");
}

static void through_links(void **state)
{
	(void)state;
	assert_true(archive_under_link("d/x", "d"));
	assert_true(archive_under_link("./d/x", "d/"));
	assert_true(archive_under_link("a/d/x/y", "a/d"));
	assert_false(archive_under_link("d", "d"));     /* the link itself */
	assert_false(archive_under_link("dd/x", "d"));
	assert_false(archive_under_link("x/d", "d"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names),
		cmocka_unit_test(symlinks),
		cmocka_unit_test(hardlinks),
		cmocka_unit_test(through_links),
	};
	return cmocka_run_group_tests_name("archive_path", tests, NULL, NULL);
}
