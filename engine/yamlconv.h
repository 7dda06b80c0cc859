/* YAML to jansson values with the YAML 1.2 core schema for plain scalars
 * (null, booleans, integers, floats; anything else is a string). Pure C so
 * unit tests drive it directly. */
#ifndef BGRUN_YAMLCONV_H
#define BGRUN_YAMLCONV_H

#include <stddef.h>

#include <jansson.h>

/* Parses every document of a YAML stream into a JSON array of documents
 * (empty documents are skipped). NULL with a message "line L column C:
 * problem" in err on failure. Anchors and aliases are resolved. */
json_t *yaml_to_json_all(const char *text, size_t len, char *err, size_t errlen);

/* The same with flags: YAMLCONV_NUMBERS_AS_TEXT keeps plain numbers as
 * strings (kubeconfig's fields are all strings but for booleans). */
enum { YAMLCONV_NUMBERS_AS_TEXT = 1 };
json_t *yaml_to_json_flags(const char *text, size_t len, int flags, char *err, size_t errlen);

/* The typed value of a plain scalar (core schema). */
json_t *yaml_plain_scalar(const char *s, size_t len);

#endif
