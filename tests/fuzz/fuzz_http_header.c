/* Response header lines (engine/httputil.c) as libcurl hands them over,
 * and the watch stream's line framing (engine/k8s_util.c). Input: the
 * bytes of a response head; each CRLF/LF-ended line is parsed, and the
 * whole input is fed to the line splitter in uneven chunks. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "httputil.h"
#include "k8s_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
		/* a copy of exactly the line, so ASan sees any overread */
		char *line = malloc(len ? len : 1);
		memcpy(line, p, len);
		http_field f;
		if (httputil_parse_field(line, len, &f)) {
			if (f.name < line || f.name + f.name_len > line + len || f.value < line ||
			    f.value + f.value_len > line + len)
				fuzz_fail("a field outside its line");
			if (f.name_len == 0)
				fuzz_fail("a field without a name");
			if (f.value_len && (f.value[0] == ' ' || f.value[f.value_len - 1] == ' ' ||
			                    f.value[f.value_len - 1] == '\n' || f.value[f.value_len - 1] == '\r'))
				fuzz_fail("value not trimmed");
			char *name = malloc(f.name_len ? f.name_len : 1);
			memcpy(name, f.name, f.name_len);
			httputil_lower(name, f.name_len);
			(void)httputil_name_is(name, f.name_len, "content-type");
			free(name);
			char *value = malloc(f.value_len ? f.value_len : 1);
			memcpy(value, f.value, f.value_len);
			(void)httputil_is_json_type(value, f.value_len);
			(void)httputil_header_safe(value, f.value_len);
			free(value);
		}
		free(line);
		p += len;
	}

	/* the same bytes as a watch stream: every complete non-empty line
	 * comes out whole, without its CR LF */
	size_t want_lines = 0, want_bytes = 0;
	for (const char *q = (const char *)data; q < end;) {
		const char *nl = memchr(q, '\n', (size_t)(end - q));
		if (nl == NULL)
			break;
		size_t n = (size_t)(nl - q);
		if (n > 0 && nl[-1] == '\r')
			n--;
		if (n > 0) {
			want_lines++;
			want_bytes += n;
		}
		q = nl + 1;
	}
	k8s_lines l = K8S_LINES_INIT;
	size_t off = 0, got_lines = 0, got_bytes = 0, chunk = size ? (size_t)data[0] % 7 + 1 : 1;
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;
		if (k8s_lines_feed(&l, (const char *)data + off, n) != 0)
			fuzz_fail("out of memory");
		off += n;
		const char *line;
		size_t len;
		while (k8s_lines_next(&l, &line, &len)) {
			if (len == 0 || memchr(line, '\n', len))
				fuzz_fail("an empty line or one with a newline inside");
			got_lines++;
			got_bytes += len;
		}
	}
	if (got_lines != want_lines || got_bytes != want_bytes)
		fuzz_fail("watch lines: %zu lines of %zu bytes, want %zu of %zu", got_lines, got_bytes, want_lines,
		          want_bytes);
	k8s_lines_free(&l);
	return 0;
}
