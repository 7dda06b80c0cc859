/* Unit tests for SHA-256 (engine/digest.c): FIPS 180-2 vectors, files,
 * errors and the stop callback. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "digest.h"

static void vectors(void **state)
{
	(void)state;
	char hex[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_hex("", 0, hex), 0);
	assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_int_equal(sha256_hex("abc", 3, hex), 0);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	assert_int_equal(sha256_hex(two, strlen(two), hex), 0);
	assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* binary input with NUL bytes */
	assert_int_equal(sha256_hex("\0", 1, hex), 0);
	assert_string_equal(hex, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
}

static char *temp_file(const void *data, size_t len)
{
	char *path = strdup("/tmp/bgrun-digest-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, (const char *)data + off, len - off);
		assert_true(w > 0);
		off += (size_t)w;
	}
	close(fd);
	return path;
}

static void file_matches_memory(void **state)
{
	(void)state;
	/* a million 'a' (FIPS 180-2), bigger than one read chunk */
	size_t n = 1000000;
	char *a = malloc(n);
	memset(a, 'a', n);
	char *path = temp_file(a, n);
	char hex[SHA256_HEX_LEN + 1];
	long long size = 0;
	assert_int_equal(sha256_file_hex(path, hex, &size, NULL), 0);
	assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	assert_int_equal(size, (long long)n);
	unlink(path);
	free(path);
	free(a);
}

static void empty_file(void **state)
{
	(void)state;
	char *path = temp_file("", 0);
	char hex[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_file_hex(path, hex, NULL, NULL), 0);
	assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	unlink(path);
	free(path);
}

static void missing_file(void **state)
{
	(void)state;
	char hex[SHA256_HEX_LEN + 1];
	errno = 0;
	assert_int_equal(sha256_file_hex("/nonexistent/bgrun/file", hex, NULL, NULL), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(sha256_file_hex("/tmp", hex, NULL, NULL), -1); /* a directory */
	assert_int_equal(errno, EISDIR);
}

static int always_stop(void)
{
	return 1;
}

static void stop_callback(void **state)
{
	(void)state;
	char *path = temp_file("data", 4);
	char hex[SHA256_HEX_LEN + 1];
	assert_int_equal(sha256_file_hex(path, hex, NULL, always_stop), -3);
	unlink(path);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(vectors),
		cmocka_unit_test(file_matches_memory),
		cmocka_unit_test(empty_file),
		cmocka_unit_test(missing_file),
		cmocka_unit_test(stop_callback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
