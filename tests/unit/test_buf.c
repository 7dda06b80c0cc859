/* Unit tests for the engine's one percent-encoder (buf_urlencode) and the
 * two names that now share it (k8s_escape, sigv4_uri_encode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "k8s_util.h"
#include "sigv4.h"

static void encodes_all_but_unreserved(void **state)
{
	(void)state;
	buf b = BUF_INIT;
	const char s[] = "a-Z_0.9~ /?&=%\xc3\xa9";
	assert_int_equal(buf_urlencode(&b, s, strlen(s), 0), 0);
	assert_string_equal(b.data, "a-Z_0.9~%20%2F%3F%26%3D%25%C3%A9");
	buf_reset(&b);
	assert_int_equal(buf_urlencode(&b, "dir/key name", 12, 1), 0);
	assert_string_equal(b.data, "dir/key%20name");
	buf_reset(&b);
	assert_int_equal(buf_urlencode(&b, "a\0b", 3, 0), 0); /* NUL bytes too */
	assert_string_equal(b.data, "a%00b");
	buf_free(&b);
	/* nothing to encode still leaves a string */
	assert_int_equal(buf_urlencode(&b, "", 0, 0), 0);
	assert_non_null(b.data);
	assert_string_equal(b.data, "");
	buf_free(&b);
}

static void callers_agree(void **state)
{
	(void)state;
	buf k = BUF_INIT, s = BUF_INIT;
	const char *in = "app=web,tier in (a b)";
	assert_int_equal(k8s_escape(&k, in), 0);
	assert_int_equal(sigv4_uri_encode(&s, in, strlen(in), 0), 0);
	assert_string_equal(k.data, s.data);
	assert_string_equal(k.data, "app%3Dweb%2Ctier%20in%20%28a%20b%29");
	buf_free(&k);
	buf_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(encodes_all_but_unreserved),
		cmocka_unit_test(callers_agree),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
