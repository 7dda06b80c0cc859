/* Unit tests for AWS Signature V4 (engine/sigv4.c): the AWS S3
 * documentation vectors (wire.md B1), two cases of the generic SigV4 test
 * suite, a presigned URL, URI encoding and bad input. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "s3xml.h"
#include "sigv4.h"

#define AK "AKIAIOSFODNN7EXAMPLE"
#define SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define EMPTY "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define S3DATE "20130524T000000Z"

static sigv4_params s3_params(const char *method, const char *url, const char *const *h, size_t n, const char *hash)
{
	sigv4_params p = {method, url, h, n, hash, S3DATE, "us-east-1", "s3", AK, SK};
	return p;
}

static void get_object(void **state)
{
	(void)state;
	const char *h[] = {"Range", "bytes=0-9", "x-amz-content-sha256", EMPTY, "x-amz-date", S3DATE};
	sigv4_params p = s3_params("GET", "https://examplebucket.s3.amazonaws.com/test.txt", h, 3, EMPTY);
	sigv4_result r = SIGV4_RESULT_INIT;
	char err[128];
	assert_int_equal(sigv4_sign(&p, &r, err, sizeof err), 0);
	assert_string_equal(r.canonical_request.data,
	                    "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
	                    "x-amz-content-sha256:" EMPTY "\nx-amz-date:" S3DATE "\n\n"
	                    "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY);
	assert_string_equal(r.string_to_sign.data,
	                    "AWS4-HMAC-SHA256\n" S3DATE "\n20130524/us-east-1/s3/aws4_request\n"
	                    "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	assert_string_equal(r.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	assert_string_equal(r.authorization.data,
	                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
	                    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
	                    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	assert_string_equal(r.host.data, "examplebucket.s3.amazonaws.com");
	sigv4_result_free(&r);
}

static void put_object(void **state)
{
	(void)state;
	const char *body_hash = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
	const char *h[] = {"Date", "Fri, 24 May 2013 00:00:00 GMT", "x-amz-date", S3DATE,
	                   "x-amz-storage-class", "REDUCED_REDUNDANCY", "x-amz-content-sha256", body_hash};
	/* the path as a raw key: '$' is encoded once */
	sigv4_params p = s3_params("PUT", "https://examplebucket.s3.amazonaws.com/test$file.text", h, 4, body_hash);
	sigv4_result r = SIGV4_RESULT_INIT;
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_non_null(strstr(r.canonical_request.data, "PUT\n/test%24file.text\n\n"));
	assert_string_equal(r.signed_headers.data, "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
	assert_string_equal(r.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
	sigv4_result_free(&r);
	/* already encoded: not encoded twice */
	p.url = "https://examplebucket.s3.amazonaws.com/test%24file.text";
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_string_equal(r.signature, "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
	sigv4_result_free(&r);
}

static void lifecycle(void **state)
{
	(void)state;
	const char *h[] = {"x-amz-date", S3DATE, "x-amz-content-sha256", EMPTY};
	sigv4_params p = s3_params("GET", "https://examplebucket.s3.amazonaws.com/?lifecycle", h, 2, EMPTY);
	sigv4_result r = SIGV4_RESULT_INIT;
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_non_null(strstr(r.canonical_request.data, "GET\n/\nlifecycle=\n"));
	assert_string_equal(r.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
	sigv4_result_free(&r);
}

static void list_objects(void **state)
{
	(void)state;
	const char *h[] = {"x-amz-date", S3DATE, "x-amz-content-sha256", EMPTY};
	/* given out of order: the canonical query is sorted */
	sigv4_params p = s3_params("GET", "https://examplebucket.s3.amazonaws.com/?prefix=J&max-keys=2", h, 2, EMPTY);
	sigv4_result r = SIGV4_RESULT_INIT;
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_non_null(strstr(r.canonical_request.data, "GET\n/\nmax-keys=2&prefix=J\n"));
	assert_string_equal(r.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
	sigv4_result_free(&r);
}

static void presign(void **state)
{
	(void)state;
	sigv4_params p = s3_params("GET", "https://examplebucket.s3.amazonaws.com/test.txt", NULL, 0, EMPTY);
	sigv4_result r = SIGV4_RESULT_INIT;
	char err[128];
	assert_int_equal(sigv4_presign(&p, 86400, NULL, &r, err, sizeof err), 0);
	assert_string_equal(r.signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	assert_string_equal(r.url.data,
	                    "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
	                    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
	                    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
	                    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	assert_non_null(strstr(r.canonical_request.data, "\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"));
	sigv4_result_free(&r);
	/* a session token is one more signed query parameter */
	assert_int_equal(sigv4_presign(&p, 86400, "tok/en+=", &r, err, sizeof err), 0);
	assert_non_null(strstr(r.url.data, "&X-Amz-Security-Token=tok%2Fen%2B%3D&"));
	assert_string_not_equal(r.signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	sigv4_result_free(&r);
	assert_int_equal(sigv4_presign(&p, 0, NULL, &r, err, sizeof err), -1);
	assert_string_equal(err, "expires must be from 1 to 604800 seconds");
	assert_int_equal(sigv4_presign(&p, 604801, NULL, &r, err, sizeof err), -1);
	sigv4_result_free(&r);
}

/* aws-sig-v4-test-suite: service "service", no x-amz-content-sha256 */
static void generic_suite(void **state)
{
	(void)state;
	const char *h[] = {"X-Amz-Date", "20150830T123600Z"};
	sigv4_params p = {"GET", "https://example.amazonaws.com/", h, 1, EMPTY, "20150830T123600Z",
	                  "us-east-1", "service", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"};
	sigv4_result r = SIGV4_RESULT_INIT;
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_string_equal(r.signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
	sigv4_result_free(&r);
	/* get-vanilla-query-order-key: a repeated name sorts by value */
	p.url = "https://example.amazonaws.com/?Param1=value2&Param1=Value1";
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_non_null(strstr(r.canonical_request.data, "\nParam1=Value1&Param1=value2\n"));
	assert_string_equal(r.signature, "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1");
	sigv4_result_free(&r);
}

static void canonical_forms(void **state)
{
	(void)state;
	const char *h[] = {"X-Amz-Meta-Note", "  a   b  ", "x-amz-date", S3DATE};
	sigv4_params p = s3_params("GET", "http://User:Pw@LOCALHOST:80/b/a%2Fb//./c d?token=a%2Bb%2F%3D&x=a+b&flag", h, 2, EMPTY);
	sigv4_result r = SIGV4_RESULT_INIT;
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	/* no normalisation, '//' and '.' kept, space as %20, '/' kept in the
	 * path but %2F in the query, '+' literal, an empty value "flag=" */
	assert_non_null(strstr(r.canonical_request.data, "GET\n/b/a/b//./c%20d\nflag=&token=a%2Bb%2F%3D&x=a%2Bb\n"
	                                                  "host:localhost\nx-amz-date:" S3DATE "\nx-amz-meta-note:a b\n"));
	sigv4_result_free(&r);
	p.url = "http://127.0.0.1:8333";
	assert_int_equal(sigv4_sign(&p, &r, NULL, 0), 0);
	assert_string_equal(r.host.data, "127.0.0.1:8333");
	assert_non_null(strstr(r.canonical_request.data, "GET\n/\n\n"));
	sigv4_result_free(&r);

	buf b = BUF_INIT;
	assert_int_equal(sigv4_uri_encode(&b, "a b/c~_-.*é", strlen("a b/c~_-.*é"), 1), 0);
	assert_string_equal(b.data, "a%20b/c~_-.%2A%C3%A9");
	buf_free(&b);

	char d[SIGV4_DATE_LEN + 1];
	sigv4_format_date(1369353600, d);
	assert_string_equal(d, S3DATE);
	time_t t;
	assert_int_equal(sigv4_parse_date(S3DATE, &t), 0);
	assert_int_equal((long long)t, 1369353600LL);
	assert_int_equal(sigv4_parse_date("2013-05-24T00:00:00Z", &t), -1);
}

static void bad_input(void **state)
{
	(void)state;
	char err[128];
	sigv4_result r = SIGV4_RESULT_INIT;
	sigv4_params p = s3_params("GET", "not a url", NULL, 0, EMPTY);
	assert_int_equal(sigv4_sign(&p, &r, err, sizeof err), -1);
	assert_string_equal(err, "the URL must read scheme://host/path");
	p.url = "http://h/";
	p.amz_date = "yesterday";
	assert_int_equal(sigv4_sign(&p, &r, err, sizeof err), -1);
	assert_string_equal(err, "the date must read YYYYMMDDTHHMMSSZ");
	p.amz_date = S3DATE;
	p.secret_key = NULL;
	assert_int_equal(sigv4_sign(&p, &r, err, sizeof err), -1);
	sigv4_result_free(&r);
}

/* S3's XML answers (s3xml.c): errors, a 200 carrying <Error> after
 * blanks, listings with entities in ETags, malformed documents. */
static void xml(void **state)
{
	(void)state;
	char err[128];
	s3xml x = S3XML_INIT;
	const char *e = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>"
	                "<Message>The specified key does not exist.</Message><Key>a&amp;b</Key>"
	                "<RequestId>4442587FB7D0A2F9</RequestId></Error>";
	assert_int_equal(s3xml_parse(e, strlen(e), &x, err, sizeof err), 0);
	assert_string_equal(s3xml_root(&x), "Error");
	assert_string_equal(s3xml_get(&x, "Error/Code"), "NoSuchKey");
	assert_string_equal(s3xml_get(&x, "Error/Key"), "a&b");
	assert_string_equal(s3xml_get(&x, "Error/RequestId"), "4442587FB7D0A2F9");
	assert_null(s3xml_get(&x, "Error/HostId"));
	s3xml_free(&x);
	/* Complete may stream blanks, then fail inside a 200 */
	const char *c = "  \n \n<?xml version=\"1.0\"?><Error><Code>InternalError</Code></Error>";
	assert_int_equal(s3xml_parse(c, strlen(c), &x, err, sizeof err), 0);
	assert_string_equal(s3xml_root(&x), "Error");
	s3xml_free(&x);
	const char *l = "<ListBucketResult xmlns=\"http://doc.s3.amazonaws.com/2006-03-01/\"><IsTruncated>true</IsTruncated>"
	                "<Contents><Key>a</Key><ETag>&quot;e1&quot;</ETag><Size>1</Size></Contents>"
	                "<Contents><Key>b</Key><ETag>&#34;e2&#34;</ETag><Size>22</Size></Contents>"
	                "<NextContinuationToken>t+/=</NextContinuationToken></ListBucketResult>";
	assert_int_equal(s3xml_parse(l, strlen(l), &x, err, sizeof err), 0);
	assert_string_equal(s3xml_root(&x), "ListBucketResult");
	assert_string_equal(s3xml_get(&x, "ListBucketResult/NextContinuationToken"), "t+/=");
	/* children before their parent, in document order */
	size_t ends = 0;
	for (size_t i = 0; i < x.n; i++) {
		if (strcmp(x.v[i].path, "ListBucketResult/Contents") == 0) {
			ends++;
			assert_string_equal(x.v[i - 1].path, "ListBucketResult/Contents/Size");
			assert_string_equal(x.v[i - 2].text, ends == 1 ? "\"e1\"" : "\"e2\"");
		}
	}
	assert_int_equal(ends, 2);
	s3xml_free(&x);
	const char *bad = "<Error><Code>x</Error>";
	assert_int_equal(s3xml_parse(bad, strlen(bad), &x, err, sizeof err), -1);
	assert_non_null(strstr(err, "mismatched tag"));
	s3xml_free(&x);
	assert_int_equal(s3xml_parse("   ", 3, &x, err, sizeof err), -1);
	assert_string_equal(err, "empty document");
	s3xml_free(&x);
	buf b = BUF_INIT;
	assert_int_equal(s3xml_escape(&b, "\"<a&b>\""), 0);
	assert_string_equal(b.data, "&quot;&lt;a&amp;b&gt;&quot;");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(get_object),
		cmocka_unit_test(put_object),
		cmocka_unit_test(lifecycle),
		cmocka_unit_test(list_objects),
		cmocka_unit_test(presign),
		cmocka_unit_test(generic_suite),
		cmocka_unit_test(canonical_forms),
		cmocka_unit_test(bad_input),
		cmocka_unit_test(xml),
	};
	return cmocka_run_group_tests_name("sigv4", tests, NULL, NULL);
}
