# bgrun: a C engine embedding Lua 5.4 that runs deployment playbooks.
PREFIX  ?= /usr/local
# Go (for the test sandbox) where its official tarball puts it, if not on PATH
export PATH := $(PATH):/usr/local/go/bin
CC      ?= cc
LUA     ?= lua5.4
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 $(WARN) -fPIC $(shell pkg-config --cflags lua5.4 jansson libcurl libpq yaml-0.1 libcrypto libarchive expat zlib) -Iengine
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

# Modules whose libraries (libcurl, libpq, libcrypto and what they pull in)
# take milliseconds to load go into a shared object that is embedded in the
# binary and loaded on the first require: a playbook that needs none of them
# starts as fast as the bare interpreter. A new module with heavy libraries
# belongs here too; everything else in engine/ is linked directly.
LAZY_SRCS := engine/httpc.c engine/mod_http.c engine/httputil.c engine/mod_k8s.c engine/mod_k8s_transport.c engine/mod_k8s_common.c engine/mod_k8s_raw.c \
             engine/mod_k8s_watch.c engine/kubeconfig.c \
             engine/k8s_util.c $(wildcard engine/mod_postgres*.c) engine/pgquote.c engine/mod_digest.c engine/digest.c \
             engine/sigv4.c engine/s3xml.c engine/awscreds.c engine/awscreds_files.c engine/mod_s3.c engine/mod_s3_client.c engine/mod_s3_objects.c \
             engine/mod_s3_upload.c engine/mod_s3_reader.c engine/mod_s3_sign.c $(wildcard engine/mod_archive*.c) engine/archive_path.c
CORE_SRCS := $(filter-out engine/main.c $(LAZY_SRCS),$(wildcard engine/*.c))
CORE_LIBS := $(shell pkg-config --libs lua5.4 jansson yaml-0.1) -ldl -lm
LAZY_LIBS := $(shell pkg-config --libs libcurl libpq libcrypto yaml-0.1 jansson libarchive expat zlib)

EMBED   := $(wildcard lua/*.lua) $(wildcard stdlib/*.lua)
CORE_OBJS := $(CORE_SRCS:engine/%.c=build/%.o) build/embedded.o
LAZY_OBJS := $(LAZY_SRCS:engine/%.c=build/%.o)
ASAN_CORE := $(CORE_SRCS:engine/%.c=build/asan/%.o) build/asan/embedded.o
ASAN_LAZY := $(LAZY_SRCS:engine/%.c=build/asan/%.o)
UNIT    := $(patsubst tests/unit/%.c,build/asan/unit/%,$(wildcard tests/unit/*.c))

.PHONY: all asan test unit deps sandbox demo bench install types clean fuzz fuzz-build

all: bgrun

# -rdynamic: the lazy modules call the engine's bgrun_* and buf_* functions.
bgrun: build/main.o $(CORE_OBJS) build/lazy.o
	$(CC) $(CFLAGS) -rdynamic -o $@ $^ $(CORE_LIBS)

build/bgrun-lazy.so: $(LAZY_OBJS)
	$(CC) $(CFLAGS) -shared -o $@ $^ $(LAZY_LIBS)

# The shared object as bytes in an object file; run inside its directory so
# the symbols read _binary_bgrun_lazy_so_start/_end in both builds.
build/lazy.o: build/bgrun-lazy.so
	cd build && ld -r -b binary -z noexecstack -o lazy.o bgrun-lazy.so

# The sanitizer build the tests run.
asan: build/asan/bgrun $(UNIT)

build/asan/bgrun: build/asan/main.o $(ASAN_CORE) build/asan/lazy.o
	$(CC) $(CFLAGS) $(SAN) -rdynamic -o $@ $^ $(CORE_LIBS)

build/asan/bgrun-lazy.so: $(ASAN_LAZY)
	$(CC) $(CFLAGS) $(SAN) -shared -o $@ $^ $(LAZY_LIBS)

build/asan/lazy.o: build/asan/bgrun-lazy.so
	cd build/asan && ld -r -b binary -z noexecstack -o lazy.o bgrun-lazy.so

build/%.o: engine/%.c engine/*.h Makefile | build
	$(CC) $(CFLAGS) -c -o $@ $<

build/asan/%.o: engine/%.c engine/*.h Makefile | build
	$(CC) $(CFLAGS) $(SAN) -c -o $@ $<

build/embedded.c: tools/embed.lua $(EMBED) | build
	$(LUA) tools/embed.lua $@ $(EMBED)

build/embedded.o: build/embedded.c engine/bgrun.h
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

build/asan/embedded.o: build/embedded.c engine/bgrun.h
	$(CC) $(CFLAGS) $(SAN) -Wno-missing-prototypes -c -o $@ $<

# C unit tests (cmocka) link the pure C parts directly, lazy ones included.
build/asan/unit/%: tests/unit/%.c $(ASAN_CORE) $(ASAN_LAZY) build/asan/lazy.o | build
	$(CC) $(CFLAGS) $(SAN) -o $@ $< $(ASAN_CORE) $(ASAN_LAZY) build/asan/lazy.o $(CORE_LIBS) $(LAZY_LIBS) $(shell pkg-config --libs cmocka)

build:
	mkdir -p build/asan/unit

# libFuzzer harnesses (tests/fuzz/fuzz_*.c): clang with the fuzzer,
# ASan and UBSan, in their own build directory; every engine file but
# main.c is linked in directly (the lazy modules too, so no embedded .so).
FUZZ_CC    ?= clang
FUZZ_SAN   := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
FUZZ_CFLAGS = -O1 -g -std=c11 $(WARN) -Wno-unknown-warning-option $(shell pkg-config --cflags lua5.4 jansson libcurl libpq yaml-0.1 libcrypto libarchive expat zlib) -Iengine
FUZZ_OBJS  := $(patsubst engine/%.c,build/fuzz/obj/%.o,$(filter-out engine/main.c,$(wildcard engine/*.c))) \
              build/fuzz/obj/embedded.o build/fuzz/obj/fuzz_common.o
FUZZERS    := $(patsubst tests/fuzz/fuzz_%.c,build/fuzz/fuzz_%,$(filter-out tests/fuzz/fuzz_common.c,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_SECONDS ?= 60

fuzz-build: $(FUZZERS)

# Each harness for FUZZ_SECONDS from its corpus (new inputs go to
# build/fuzz/corpus/NAME, crashes to build/fuzz/crashes); `make test`
# replays the committed corpora only (tests/fuzz/run regress).
fuzz: fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run long

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -Itests/fuzz -o $@ $< $(FUZZ_OBJS) \
	  $(CORE_LIBS) $(LAZY_LIBS)

build/fuzz/obj/%.o: engine/%.c engine/*.h Makefile
	@mkdir -p build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/obj/fuzz_common.o: tests/fuzz/fuzz_common.c tests/fuzz/fuzz.h engine/bgrun.h Makefile
	@mkdir -p build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -Itests/fuzz -c -o $@ $<

build/fuzz/obj/embedded.o: build/embedded.c engine/bgrun.h
	@mkdir -p build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) -Wno-missing-prototypes -c -o $@ $<


deps:
	tools/deps.sh

sandbox:
	tests/sandbox/build.sh

# The sandbox's pods and Services live in a private network namespace
# (tests/sandbox/in-netns) with no route out: whatever the tests need from
# the network (Debian packages, Go modules, the image's root filesystems)
# is fetched and cached before.
test: deps
	$(MAKE) -s all asan sandbox fuzz-build
	deploy/image/build-rootfs.sh --cache-only
	deploy/image/build-rootfs.sh --build --cache-only
	tests/sandbox/in-netns tests/run-all

demo: deps
	$(MAKE) all sandbox
	tests/sandbox/in-netns examples/physioflow/demo.sh

bench: all sandbox
	tests/sandbox/in-netns bench/run-all

# The binary, its manual, shell completion and the editor types (LuaLS
# definition files, with a .luarc.json to copy next to your playbooks).
SHARE   := $(DESTDIR)$(PREFIX)/share
install: bgrun
	install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/man/man1 $(SHARE)/bash-completion/completions \
	  $(SHARE)/zsh/site-functions $(SHARE)/bgrun/types/stdlib
	install -m 0755 bgrun $(DESTDIR)$(PREFIX)/bin/bgrun
	install -m 0644 man/bgrun.1 $(SHARE)/man/man1/bgrun.1
	install -m 0644 completions/bgrun.bash $(SHARE)/bash-completion/completions/bgrun
	install -m 0644 completions/_bgrun $(SHARE)/zsh/site-functions/_bgrun
	install -m 0644 lua/types/*.lua $(SHARE)/bgrun/types/
	install -m 0644 lua/types/stdlib/*.lua $(SHARE)/bgrun/types/stdlib/
	sed 's|"\.\./lua/types"|"$(PREFIX)/share/bgrun/types"|' playbooks/.luarc.json >$(SHARE)/bgrun/luarc.json
	chmod 0644 $(SHARE)/bgrun/luarc.json

# Regenerates lua/types/stdlib from the stdlib sources (a spec checks it).
types:
	$(LUA) tools/gen-types.lua lua/types/stdlib stdlib/*.lua

clean:
	rm -rf build bgrun tests/sandbox/sandbox
