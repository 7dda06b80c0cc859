/* The parts of the archive module (mod_archive*.c) and what they share:
 * the call handle, error helpers and the writer that scan reuses. Only
 * luaopen_archive (mod_archive.c) is the module's export to the engine. */
#ifndef BGRUN_ARCHIVE_INT_H
#define BGRUN_ARCHIVE_INT_H

#include "bgrun.h"
#include "buf.h"
#include "progress.h"

#include <sys/types.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>
#include <zlib.h>

int luaopen_archive(lua_State *L);

#define HANDLE_MT "bgrun.archive.handle"


enum { BLOCK = 64 * 1024 };

/* Everything one call holds, released by __gc/__close if a Lua error
 * (out of memory) cuts the call short, and explicitly before raising. */
typedef struct ar_handle {
	struct archive *r;  /* reader */
	struct archive *w;  /* writer (archive or disk) */
	int fd;             /* create's output file */
	int src;            /* a file being added */
	char *tmp_path;     /* create's temporary file, removed unless renamed */
	int cwd;            /* extract: the directory to return to */
	char *block;
	struct archive_entry *entry; /* create's reused entry */
	bgrun_progress *progress;    /* finished as failed when released early */
} ar_handle;

#define WRITER_MT "bgrun.archive.writer"

enum {
	MAX_SINKS = 4,
	IO_CHUNK = 256 * 1024,
	ERR_KEEP = 16 * 1024,
	TAR_BLOCK = 512,
	NAME_MAX_TAR = 99,
	KILL_GRACE_MS = 2000,
	PIPE_SIZE = 1024 * 1024,
};

typedef struct ar_writer {
	int fd;                /* the local file, or -1 */
	char *path;            /* its path, removed again unless finished */
	bgrun_sink *sinks[MAX_SINKS];
	int nsinks;            /* the userdata are anchored in the uservalue */
	z_stream z, zh;        /* entry data; headers (stored) */
	int z_ready, zh_ready;
	unsigned char *in, *out;
	long long off;         /* compressed bytes written so far */
	size_t hsize;          /* size of a stored header member */
	int finished, broken, dry;
	pid_t child;           /* a running command (its own process group) */
	int child_out, child_err;
	EVP_MD_CTX *md;
	buf errtail;           /* the command's stderr, its last ERR_KEEP bytes */
	bgrun_progress *progress;     /* "archive NAME": compressed bytes written */
	bgrun_progress *cmd_progress; /* "dump ENTRY": a command's output read */
} ar_writer;
#define SCAN_MT "bgrun.archive.scan"

/* mod_archive_base.c, mod_archive_writer.c, mod_archive_scan.c, mod_archive.c */
int ar_handle_close(lua_State *L);
ar_handle *ar_new_handle(lua_State *L);
void ar_release(lua_State *L, int idx);
void ar_push_err(lua_State *L, const char *op, const char *reason, const char *code, const char *fmt, const char *a,
                     const char *b);
int ar_fail(lua_State *L, int hi);
int ar_interrupted(lua_State *L, int hi, const char *op);
const char *ar_libarchive_msg(struct archive *a);
const char *ar_type_name(mode_t t);
const char *ar_open_reader(ar_handle *h, const char *path);
void ar_raise_open(lua_State *L, int hi, ar_handle *h, const char *op, const char *path, const char *msg);
void ar_progress_label(lua_State *L, int opts, const char *verb, const char *path, char *label, size_t n);
void ar_kill_child(ar_writer *w);
int ar_write_all(int fd, const void *p, size_t n);
char **ar_command_env(lua_State *L, int envt);
void ar_keep_stderr(ar_writer *w);
int ar_spawn_piped(char **argv, char **env, int feed, pid_t *child, int *fd, int *errfd);
int ar_writer_new(lua_State *L);
int ar_scan_close(lua_State *L);
int ar_scan_fn(lua_State *L);
int ar_list(lua_State *L);
int ar_extract(lua_State *L);
int ar_create(lua_State *L);
extern const luaL_Reg ar_writer_methods[];
extern const luaL_Reg ar_writer_meta[];

#endif
