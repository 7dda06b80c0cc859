/* Unit tests for the http module's pure helpers: header lines, JSON
 * content types, failure reasons and safe methods. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "httputil.h"

static int parse(const char *line, http_field *f)
{
	return httputil_parse_field(line, strlen(line), f);
}

static void parses_a_field_and_trims_the_value(void **state)
{
	(void)state;
	http_field f;
	assert_int_equal(parse("Content-Type:  application/json; charset=utf-8 \r\n", &f), 1);
	assert_int_equal(f.name_len, 12);
	assert_memory_equal(f.name, "Content-Type", 12);
	assert_int_equal(f.value_len, strlen("application/json; charset=utf-8"));
	assert_memory_equal(f.value, "application/json; charset=utf-8", f.value_len);
}

static void keeps_colons_inside_the_value(void **state)
{
	(void)state;
	http_field f;
	assert_int_equal(parse("Location: http://127.0.0.1:8080/x\r\n", &f), 1);
	assert_int_equal(f.value_len, strlen("http://127.0.0.1:8080/x"));
	assert_memory_equal(f.value, "http://127.0.0.1:8080/x", f.value_len);
}

static void accepts_an_empty_value(void **state)
{
	(void)state;
	http_field f;
	assert_int_equal(parse("X-Empty:\r\n", &f), 1);
	assert_int_equal(f.value_len, 0);
	assert_int_equal(parse("X-Empty:   \r\n", &f), 1);
	assert_int_equal(f.value_len, 0);
}

static void skips_what_is_not_a_field(void **state)
{
	(void)state;
	http_field f;
	assert_int_equal(parse("HTTP/1.1 200 OK\r\n", &f), 0);
	assert_int_equal(parse("HTTP/2 404\r\n", &f), 0);
	assert_int_equal(parse("\r\n", &f), 0);
	assert_int_equal(parse("", &f), 0);
	assert_int_equal(parse(" folded continuation\r\n", &f), 0);
	assert_int_equal(parse("no colon here\r\n", &f), 0);
	assert_int_equal(parse(": no name\r\n", &f), 0);
}

static void lower_cases_names(void **state)
{
	(void)state;
	char s[] = "X-Custom-HEADER_9";
	httputil_lower(s, strlen(s));
	assert_string_equal(s, "x-custom-header_9");
	assert_true(httputil_name_is("AUTHORIZATION", 13, "authorization"));
	assert_true(httputil_name_is("authorization", 13, "Authorization"));
	assert_false(httputil_name_is("Authorizatio", 12, "authorization"));
	assert_false(httputil_name_is("X-Authorization", 15, "authorization"));
}

static int is_json(const char *s)
{
	return httputil_is_json_type(s, strlen(s));
}

static void recognises_json_content_types(void **state)
{
	(void)state;
	assert_true(is_json("application/json"));
	assert_true(is_json("application/json; charset=utf-8"));
	assert_true(is_json("Application/JSON"));
	assert_true(is_json("application/vnd.api+json"));
	assert_true(is_json("application/problem+json;charset=utf-8"));
	assert_false(is_json("text/plain"));
	assert_false(is_json("text/json-ish"));
	assert_false(is_json("application/jsonp"));
	assert_false(is_json("application/"));
	assert_false(is_json("application/+json"));
	assert_false(is_json(""));
}

static void refuses_line_breaks_in_headers(void **state)
{
	(void)state;
	assert_true(httputil_header_safe("Bearer abc", 10));
	assert_false(httputil_header_safe("a\r\nInjected: 1", 14));
	assert_false(httputil_header_safe("a\nb", 3));
	assert_false(httputil_header_safe("a\0b", 3));
}

static void names_transport_failures(void **state)
{
	(void)state;
	assert_string_equal(httputil_reason(CURLE_COULDNT_CONNECT), "ConnectionRefused");
	assert_string_equal(httputil_reason(CURLE_OPERATION_TIMEDOUT), "Timeout");
	assert_string_equal(httputil_reason(CURLE_COULDNT_RESOLVE_HOST), "DNS");
	assert_string_equal(httputil_reason(CURLE_PEER_FAILED_VERIFICATION), "TLS");
	assert_string_equal(httputil_reason(CURLE_SSL_CONNECT_ERROR), "TLS");
	assert_string_equal(httputil_reason(CURLE_SSL_CACERT_BADFILE), "TLS");
	assert_string_equal(httputil_reason(CURLE_TOO_MANY_REDIRECTS), "TooManyRedirects");
	assert_string_equal(httputil_reason(CURLE_GOT_NOTHING), "EmptyReply");
	assert_string_equal(httputil_reason(CURLE_RECV_ERROR), "ConnectionLost");
	assert_string_equal(httputil_reason(CURLE_URL_MALFORMAT), "BadURL");
	assert_string_equal(httputil_reason(CURLE_FTP_WEIRD_PASV_REPLY), "TransportError");
}

static void knows_safe_methods(void **state)
{
	(void)state;
	assert_true(httputil_method_is_safe("GET"));
	assert_true(httputil_method_is_safe("HEAD"));
	assert_true(httputil_method_is_safe("OPTIONS"));
	assert_false(httputil_method_is_safe("POST"));
	assert_false(httputil_method_is_safe("DELETE"));
	assert_false(httputil_method_is_safe("get"));
}

static void retries_only_what_a_retry_can_fix(void **state)
{
	(void)state;
	assert_true(httputil_method_is_idempotent("GET"));
	assert_true(httputil_method_is_idempotent("PUT"));
	assert_true(httputil_method_is_idempotent("DELETE"));
	assert_false(httputil_method_is_idempotent("POST"));
	assert_false(httputil_method_is_idempotent("PATCH"));
	assert_true(httputil_transient(CURLE_COULDNT_CONNECT));
	assert_true(httputil_transient(CURLE_OPERATION_TIMEDOUT));
	assert_true(httputil_transient(CURLE_GOT_NOTHING));
	assert_true(httputil_transient(CURLE_RECV_ERROR));
	assert_false(httputil_transient(CURLE_OK));
	assert_false(httputil_transient(CURLE_COULDNT_RESOLVE_HOST));
	assert_false(httputil_transient(CURLE_PEER_FAILED_VERIFICATION));
	assert_false(httputil_transient(CURLE_URL_MALFORMAT));
}

static void names_statuses_in_each_dialect(void **state)
{
	(void)state;
	assert_string_equal("Forbidden", httputil_status_reason(403, HTTPUTIL_K8S));
	assert_string_equal("AccessDenied", httputil_status_reason(403, HTTPUTIL_S3));
	assert_string_equal("Expired", httputil_status_reason(410, HTTPUTIL_K8S));
	assert_string_equal("HTTPError", httputil_status_reason(410, HTTPUTIL_S3));
	assert_string_equal("InvalidRange", httputil_status_reason(416, HTTPUTIL_S3));
	assert_string_equal("Unknown", httputil_status_reason(416, HTTPUTIL_K8S));
	assert_string_equal("InternalError", httputil_status_reason(501, HTTPUTIL_K8S));
	assert_string_equal("NotImplemented", httputil_status_reason(501, HTTPUTIL_S3));
	assert_string_equal("InternalError", httputil_status_reason(599, HTTPUTIL_K8S));
	assert_string_equal("ServerError", httputil_status_reason(599, HTTPUTIL_S3));
	assert_string_equal("Timeout", httputil_status_reason(504, HTTPUTIL_K8S));
	assert_string_equal("ServerError", httputil_status_reason(504, HTTPUTIL_S3));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_a_field_and_trims_the_value),
		cmocka_unit_test(keeps_colons_inside_the_value),
		cmocka_unit_test(accepts_an_empty_value),
		cmocka_unit_test(skips_what_is_not_a_field),
		cmocka_unit_test(lower_cases_names),
		cmocka_unit_test(recognises_json_content_types),
		cmocka_unit_test(refuses_line_breaks_in_headers),
		cmocka_unit_test(names_transport_failures),
		cmocka_unit_test(knows_safe_methods),
		cmocka_unit_test(retries_only_what_a_retry_can_fix),
		cmocka_unit_test(names_statuses_in_each_dialect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
