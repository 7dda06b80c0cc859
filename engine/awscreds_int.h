/* The AWS credentials code's inner interface, shared by awscreds.c (the
 * sources) and awscreds_files.c (the shared files); not an API. */
#ifndef BGRUN_AWSCREDS_INT_H
#define BGRUN_AWSCREDS_INT_H
#include "awscreds.h"

/* The variable's value, NULL when unset or empty. */
const char *awscreds_env_get(awscreds_getenv_fn env, const char *name);

/* The whole file, NUL-terminated (up to 1 MiB); NULL when absent or
 * unreadable. */
char *awscreds_read_file(const char *path);

/* The shared credentials and config files, as read. */
typedef struct awscreds_files {
	char cred_path[1024], config_path[1024];
	char *cred, *config;
} awscreds_files;

/* Reads both files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, else
 * ~/.aws/); a missing one is NULL. */
void awscreds_shared_load(awscreds_getenv_fn env, awscreds_files *s);
void awscreds_shared_free(awscreds_files *s);

/* key of profile: the credentials file's [name] first, then the config
 * file's [profile name] ([default] for default). malloc'd, or NULL. */
char *awscreds_profile_get(const awscreds_files *s, const char *profile, const char *key);

/* Either file has a section for profile. */
int awscreds_profile_exists(const awscreds_files *s, const char *profile);
#endif
