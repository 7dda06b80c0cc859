/* Unit tests for YAML -> JSON conversion (core schema, multi-document). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "yamlconv.h"

static char *convert(const char *text)
{
	char err[256];
	json_t *j = yaml_to_json_all(text, strlen(text), err, sizeof err);
	assert_non_null(j);
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	return s;
}

static void check(const char *yaml, const char *want)
{
	char *got = convert(yaml);
	assert_string_equal(got, want);
	free(got);
}

static void plain_scalars_are_typed(void **state)
{
	(void)state;
	check("[1, -2, +3, 0x1F, 0o17, 1.5, 2e3, true, False, null, ~, '', yes, 08, 1.2.3]",
	      "[[1,-2,3,31,15,1.5,2000.0,true,false,null,null,\"\",\"yes\",8,\"1.2.3\"]]");
}

static void quoted_and_tagged_scalars_stay_strings(void **state)
{
	(void)state;
	check("a: \"8080\"\nb: '1.0'\nc: !!str true\nd: |\n  line1\n  line2\n",
	      "[{\"a\":\"8080\",\"b\":\"1.0\",\"c\":\"true\",\"d\":\"line1\\nline2\\n\"}]");
}

static void several_documents(void **state)
{
	(void)state;
	check("a: 1\n---\n---\nb: 2\n...\n", "[{\"a\":1},{\"b\":2}]");
	check("", "[]");
}

static void anchors_aliases_and_merge_keys(void **state)
{
	(void)state;
	check("base: &b {x: 1, y: 2}\nuse: *b\nmerged:\n  <<: *b\n  y: 3\n",
	      "[{\"base\":{\"x\":1,\"y\":2},\"merged\":{\"x\":1,\"y\":3},\"use\":{\"x\":1,\"y\":2}}]");
}

static void errors_name_line_and_column(void **state)
{
	(void)state;
	char err[256];
	const char *bad = "a: 1\nb: [1, 2\nc: 3\n";
	assert_null(yaml_to_json_all(bad, strlen(bad), err, sizeof err));
	assert_non_null(strstr(err, "line 3"));
	const char *alias = "a: *nope\n";
	assert_null(yaml_to_json_all(alias, strlen(alias), err, sizeof err));
	const char *complex_key = "? [1, 2]\n: x\n";
	assert_null(yaml_to_json_all(complex_key, strlen(complex_key), err, sizeof err));
	assert_non_null(strstr(err, "mapping keys must be scalars"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(plain_scalars_are_typed),
		cmocka_unit_test(quoted_and_tagged_scalars_stay_strings),
		cmocka_unit_test(several_documents),
		cmocka_unit_test(anchors_aliases_and_merge_keys),
		cmocka_unit_test(errors_name_line_and_column),
	};
	return cmocka_run_group_tests_name("yaml", tests, NULL, NULL);
}
