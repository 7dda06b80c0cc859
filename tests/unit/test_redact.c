/* Unit tests for the secret redactor and the growable buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "redact.h"

static char *apply(const redactor *r, const char *text)
{
	static buf out = BUF_INIT;
	buf_reset(&out);
	assert_int_equal(redactor_apply(r, text, strlen(text), &out), 0);
	return out.data ? out.data : "";
}

static void masks_every_occurrence(void **state)
{
	(void)state;
	redactor r;
	redactor_init(&r);
	assert_int_equal(redactor_add(&r, "s3cr3t", 6), 1);
	assert_string_equal(apply(&r, "password=s3cr3t and again s3cr3t"),
	                    "password=[REDACTED] and again [REDACTED]");
	assert_string_equal(apply(&r, "nothing here"), "nothing here");
	assert_string_equal(apply(&r, ""), "");
	redactor_free(&r);
}

static void longest_secret_wins(void **state)
{
	(void)state;
	redactor r;
	redactor_init(&r);
	redactor_add(&r, "abcd", 4);
	redactor_add(&r, "abcdefgh", 8);
	/* "abcdefgh" must not leave "efgh" behind after masking "abcd" */
	assert_string_equal(apply(&r, "x abcdefgh y abcd"), "x [REDACTED] y [REDACTED]");
	redactor_free(&r);
}

static void ignores_short_and_duplicate_values(void **state)
{
	(void)state;
	redactor r;
	redactor_init(&r);
	assert_int_equal(redactor_add(&r, "abc", 3), 0);
	assert_int_equal(redactor_add(&r, "tok-123", 7), 1);
	assert_int_equal(redactor_add(&r, "tok-123", 7), 0);
	assert_int_equal((int)r.count, 1);
	assert_string_equal(apply(&r, "abc tok-123"), "abc [REDACTED]");
	redactor_free(&r);
}

static void secret_at_edges_and_adjacent(void **state)
{
	(void)state;
	redactor r;
	redactor_init(&r);
	redactor_add(&r, "pass", 4);
	assert_string_equal(apply(&r, "passpass"), "[REDACTED][REDACTED]");
	assert_string_equal(apply(&r, "pas"), "pas");
	redactor_free(&r);
}

static void binary_safe(void **state)
{
	(void)state;
	redactor r;
	redactor_init(&r);
	redactor_add(&r, "k\0ey", 4);
	buf out = BUF_INIT;
	const char text[] = {'a', 'k', '\0', 'e', 'y', 'b'};
	assert_int_equal(redactor_apply(&r, text, sizeof text, &out), 0);
	assert_int_equal((int)out.len, 12);
	assert_memory_equal(out.data, "a[REDACTED]b", 12);
	buf_free(&out);
	redactor_free(&r);
}

static void buf_grows_and_consumes(void **state)
{
	(void)state;
	buf b = BUF_INIT;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(buf_printf(&b, "%04d\n", i), 0);
	assert_int_equal((int)b.len, 5000);
	assert_memory_equal(b.data, "0000\n0001\n", 10);
	buf_consume(&b, 4995);
	assert_string_equal(b.data, "0999\n");
	buf_consume(&b, 100);
	assert_int_equal((int)b.len, 0);
	assert_string_equal(b.data, "");
	buf_free(&b);
	assert_null(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(masks_every_occurrence),
		cmocka_unit_test(longest_secret_wins),
		cmocka_unit_test(ignores_short_and_duplicate_values),
		cmocka_unit_test(secret_at_edges_and_adjacent),
		cmocka_unit_test(binary_safe),
		cmocka_unit_test(buf_grows_and_consumes),
	};
	return cmocka_run_group_tests_name("redact", tests, NULL, NULL);
}
