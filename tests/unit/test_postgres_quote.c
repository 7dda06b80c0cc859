/* Unit tests for identifier and literal quoting (engine/pgquote.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "pgquote.h"

static const char *q(int (*fn)(const char *, size_t, buf *), const char *s, size_t len)
{
	static buf out = BUF_INIT;
	buf_reset(&out);
	assert_int_equal(fn(s, len, &out), 0);
	return out.data ? out.data : "";
}

#define IDENT(s) q(pg_quote_ident, (s), strlen(s))
#define LIT(s) q(pg_quote_literal, (s), strlen(s))

static void ident_plain_and_reserved(void **state)
{
	(void)state;
	assert_string_equal(IDENT("patients"), "\"patients\"");
	assert_string_equal(IDENT("select"), "\"select\"");
	assert_string_equal(IDENT("MixedCase"), "\"MixedCase\"");
	assert_string_equal(IDENT(""), "\"\"");
}

static void ident_hostile(void **state)
{
	(void)state;
	assert_string_equal(IDENT("a\"b"), "\"a\"\"b\"");
	assert_string_equal(IDENT("x\"; DROP TABLE patients; --"), "\"x\"\"; DROP TABLE patients; --\"");
	assert_string_equal(IDENT("\"\""), "\"\"\"\"\"\"");
	/* single quotes and backslashes mean nothing inside an identifier */
	assert_string_equal(IDENT("it's\\"), "\"it's\\\"");
	assert_string_equal(IDENT("bệnh nhân"), "\"bệnh nhân\"");
}

static void literal_plain(void **state)
{
	(void)state;
	assert_string_equal(LIT("hello"), "'hello'");
	assert_string_equal(LIT(""), "''");
	assert_string_equal(LIT("Nguyễn Thị Lan"), "'Nguyễn Thị Lan'");
}

static void literal_hostile(void **state)
{
	(void)state;
	assert_string_equal(LIT("it's"), "'it''s'");
	assert_string_equal(LIT("'; DROP TABLE patients; --"), "'''; DROP TABLE patients; --'");
	/* a backslash switches to E'' so the result means the same whatever
	 * standard_conforming_strings says */
	assert_string_equal(LIT("a\\b"), "E'a\\\\b'");
	assert_string_equal(LIT("\\'; --"), "E'\\\\''; --'");
	assert_string_equal(LIT("$$ x $$"), "'$$ x $$'");
}

static void nul_bytes_refused(void **state)
{
	(void)state;
	buf out = BUF_INIT;
	assert_int_equal(pg_quote_ident("a\0b", 3, &out), -2);
	assert_int_equal(pg_quote_literal("a\0b", 3, &out), -2);
	buf_free(&out);
}

static void appends_to_existing_buffer(void **state)
{
	(void)state;
	buf out = BUF_INIT;
	buf_appends(&out, "SELECT ");
	assert_int_equal(pg_quote_literal("x", 1, &out), 0);
	buf_appends(&out, " AS ");
	assert_int_equal(pg_quote_ident("y", 1, &out), 0);
	assert_string_equal(out.data, "SELECT 'x' AS \"y\"");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ident_plain_and_reserved),
		cmocka_unit_test(ident_hostile),
		cmocka_unit_test(literal_plain),
		cmocka_unit_test(literal_hostile),
		cmocka_unit_test(nul_bytes_refused),
		cmocka_unit_test(appends_to_existing_buffer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
