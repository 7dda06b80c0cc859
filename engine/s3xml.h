/* The few XML documents S3 answers with (errors, multipart results,
 * listings), flattened by expat into (path, text) pairs in document order:
 * "ListBucketResult/Contents/Key" -> "a.txt". Every element is recorded
 * when it ends, children before their parent, so a caller can collect a
 * <Contents> item's fields and emit it at "ListBucketResult/Contents".
 * Entities (&quot; and &#34; in ETags) arrive decoded; namespaces are
 * ignored. Pure C for the unit tests. */
#ifndef BGRUN_S3XML_H
#define BGRUN_S3XML_H

#include <stddef.h>

typedef struct s3xml_node {
	char *path; /* "Error/Code" */
	char *text; /* the element's own text, untrimmed */
} s3xml_node;

typedef struct s3xml {
	s3xml_node *v;
	size_t n, cap;
} s3xml;

#define S3XML_INIT {NULL, 0, 0}

/* Parses data (leading whitespace allowed: S3 may stream blanks before a
 * Complete result). 0; -1 malformed with a message in err; -2 out of
 * memory. Free x in every case. */
int s3xml_parse(const char *data, size_t len, s3xml *x, char *err, size_t errlen);

/* The root element's name ("Error"), or NULL when x is empty. */
const char *s3xml_root(const s3xml *x);

/* The text of the first element at path, or NULL. */
const char *s3xml_get(const s3xml *x, const char *path);

/* Appends s to b with & < > " escaped, for request bodies. 0 or -1. */
struct buf;
int s3xml_escape(struct buf *b, const char *s);

void s3xml_free(s3xml *x);

#endif
