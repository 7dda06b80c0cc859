/* SHA-256 through OpenSSL's EVP interface; see digest.h. */
#define _POSIX_C_SOURCE 200809L
#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>

static void to_hex(const unsigned char *md, unsigned n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	for (unsigned i = 0; i < n; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[2 * n] = '\0';
}

int sha256_hex(const void *data, size_t len, char out[SHA256_HEX_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != SHA256_HEX_LEN / 2)
		return -1;
	to_hex(md, n, out);
	return 0;
}

int sha256_file_hex(const char *path, char out[SHA256_HEX_LEN + 1], long long *size, int (*stop)(void))
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		close(fd);
		return -2;
	}
	unsigned char chunk[65536];
	long long total = 0;
	int rc = 0;
	for (;;) {
		if (stop && stop()) {
			rc = -3;
			break;
		}
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = -1;
			break;
		}
		if (r == 0)
			break;
		if (EVP_DigestUpdate(ctx, chunk, (size_t)r) != 1) {
			rc = -2;
			break;
		}
		total += r;
	}
	int saved = errno;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (rc == 0 && (EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != SHA256_HEX_LEN / 2))
		rc = -2;
	EVP_MD_CTX_free(ctx);
	close(fd);
	if (rc == 0) {
		to_hex(md, n, out);
		if (size)
			*size = total;
	}
	errno = saved;
	return rc;
}
