# bgrun: a C engine embedding Lua 5.4 that runs deployment playbooks.
PREFIX  ?= /usr/local
CC      ?= cc
LUA     ?= lua5.4
PKGS    := lua5.4 jansson libcurl libpq libarchive yaml-0.1 libcrypto
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 $(WARN) $(shell pkg-config --cflags $(PKGS)) -Iengine
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRCS    := $(filter-out engine/main.c,$(wildcard engine/*.c))
EMBED   := $(wildcard lua/*.lua) $(wildcard stdlib/*.lua)
OBJS    := $(SRCS:engine/%.c=build/%.o) build/embedded.o
ASAN_OBJS := $(SRCS:engine/%.c=build/asan/%.o) build/asan/embedded.o
UNIT    := $(patsubst tests/unit/%.c,build/asan/unit/%,$(wildcard tests/unit/*.c))

.PHONY: all asan test unit deps sandbox demo bench install clean

all: bgrun

bgrun: build/main.o $(OBJS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# The sanitizer build the tests run.
asan: build/asan/bgrun $(UNIT)

build/asan/bgrun: build/asan/main.o $(ASAN_OBJS)
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LDLIBS)

build/%.o: engine/%.c engine/*.h | build
	$(CC) $(CFLAGS) -c -o $@ $<

build/asan/%.o: engine/%.c engine/*.h | build
	$(CC) $(CFLAGS) $(SAN) -c -o $@ $<

build/embedded.c: tools/embed.lua $(EMBED) | build
	$(LUA) tools/embed.lua $@ $(EMBED)

build/embedded.o: build/embedded.c engine/bgrun.h
	$(CC) $(CFLAGS) -Wno-missing-prototypes -c -o $@ $<

build/asan/embedded.o: build/embedded.c engine/bgrun.h
	$(CC) $(CFLAGS) $(SAN) -Wno-missing-prototypes -c -o $@ $<

# C unit tests (cmocka) link the pure C parts, not the Lua host.
build/asan/unit/%: tests/unit/%.c $(ASAN_OBJS) | build
	$(CC) $(CFLAGS) $(SAN) -o $@ $< $(ASAN_OBJS) $(LDLIBS) $(shell pkg-config --libs cmocka)

build:
	mkdir -p build/asan/unit

deps:
	tools/deps.sh

sandbox:
	tests/sandbox/build.sh

test: deps
	$(MAKE) all asan sandbox
	tests/run-all

demo: deps
	$(MAKE) all sandbox
	examples/physioflow/demo.sh

bench: all sandbox
	bench/run-all

install: bgrun
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 bgrun $(DESTDIR)$(PREFIX)/bin/bgrun

clean:
	rm -rf build bgrun tests/sandbox/sandbox
