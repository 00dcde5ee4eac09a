/* Hostile behaviours, chosen by argv[1]. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "meshagent.h"

#define WASI(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))
WASI("fd_write") int32_t raw_fd_write(int32_t, int32_t, int32_t, int32_t);
WASI("fd_read") int32_t raw_fd_read(int32_t, int32_t, int32_t, int32_t);
WASI("random_get") int32_t raw_random_get(int32_t, int32_t);
WASI("clock_time_get") int32_t raw_clock_time_get(int32_t, int64_t, int32_t);
WASI("args_get") int32_t raw_args_get(int32_t, int32_t);
WASI("path_open") int32_t raw_path_open(int32_t, int32_t, int32_t, int32_t, int32_t, int64_t, int64_t, int32_t, int32_t);
WASI("fd_readdir") int32_t raw_fd_readdir(int32_t, int32_t, int32_t, int64_t, int32_t);
WASI("poll_oneoff") int32_t raw_poll_oneoff(int32_t, int32_t, int32_t, int32_t);
WASI("sched_yield") int32_t raw_sched_yield(void);

#define BAD ((int32_t)0xFFFFFFF0)
#define HUGE 0x7FFFFFF0

static volatile int sink;
static char *volatile keep;

static int recurse(int n) { volatile char pad[256]; pad[0] = (char)n; return recurse(n + 1) + pad[0]; }

#define FAR ((off_t)1 << 30)

/* Attacks on the host's memory through sizes and offsets of file calls: each must be refused
 * (EFBIG) without the host allocating what they ask for. Prints what each call answered. */
static int file_attacks(const char *what) {
    int fd = open("big", O_CREAT | O_RDWR, 0644);
    if (fd < 0) { printf("open: %s\n", strerror(errno)); return 1; }
    long r = 0;
    if (!strcmp(what, "set_size")) r = ftruncate(fd, FAR);
    if (!strcmp(what, "pwrite_far")) r = pwrite(fd, "x", 1, FAR);
    if (!strcmp(what, "seek_write")) {
        if (lseek(fd, FAR, SEEK_SET) != FAR) { printf("lseek: %s\n", strerror(errno)); return 1; }
        r = write(fd, "x", 1);
    }
    if (!strcmp(what, "iov_flood")) {  /* 1024 iovecs, each over the whole memory */
        static int32_t iov[2 * 1024];
        int32_t size = (int32_t)(__builtin_wasm_memory_size(0) * 65536);
        for (int i = 0; i < 1024; i++) { iov[2 * i] = 0; iov[2 * i + 1] = size; }
        int32_t n = 0;
        int32_t err = raw_fd_write(fd, (int32_t)(intptr_t)iov, 1024, (int32_t)(intptr_t)&n);
        r = err ? -1 : n;
        errno = err;
    }
    printf("%s: %ld %s\n", what, r, r < 0 ? strerror(errno) : "ok");
    return r < 0 ? 0 : 3;
}

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    char ok[64] = "hello";
    if (!strcmp(what, "loop")) { for (;;) sink++; }
    if (!strcmp(what, "grow")) { for (;;) { char *p = malloc(1 << 20); if (!p) abort(); p[0] = 1; keep = p; } }
    if (!strcmp(what, "recurse")) return recurse(0);
    if (!strcmp(what, "flood")) { for (;;) printf("flooding stdout with a long line of text..............................\n"); }
    if (!strcmp(what, "trap")) __builtin_trap();
    if (!strcmp(what, "fd_write")) return raw_fd_write(1, BAD, 1, (int32_t)(intptr_t)ok);
    if (!strcmp(what, "fd_write_len")) { int32_t iov[2] = {(int32_t)(intptr_t)ok, HUGE}; return raw_fd_write(1, (int32_t)(intptr_t)iov, 1, (int32_t)(intptr_t)ok); }
    if (!strcmp(what, "fd_read")) return raw_fd_read(0, BAD, 1, (int32_t)(intptr_t)ok);
    if (!strcmp(what, "random_get")) return raw_random_get(BAD, 16);
    if (!strcmp(what, "random_len")) return raw_random_get((int32_t)(intptr_t)ok, HUGE);
    if (!strcmp(what, "clock_time_get")) return raw_clock_time_get(0, 0, BAD);
    if (!strcmp(what, "args_get")) return raw_args_get(BAD, BAD);
    if (!strcmp(what, "path_open")) return raw_path_open(3, 0, BAD, 10, 0, 0, 0, 0, (int32_t)(intptr_t)ok);
    if (!strcmp(what, "fd_readdir")) return raw_fd_readdir(3, BAD, 100, 0, (int32_t)(intptr_t)ok);
    if (!strcmp(what, "poll_oneoff")) return raw_poll_oneoff(BAD, BAD, 1, BAD);
    if (!strcmp(what, "llm_prompt")) return mesh_llm((const char *)BAD, 10, ok, sizeof ok);
    if (!strcmp(what, "llm_out")) return mesh_llm(ok, 5, (char *)BAD, 100);
    if (!strcmp(what, "llm_len")) return mesh_llm(ok, -5, ok, sizeof ok);
    if (!strcmp(what, "llm_options")) return mesh_llm_options((const char *)BAD, 10);
    if (!strcmp(what, "checkpoint")) return mesh_checkpoint((const char *)BAD);
    if (!strcmp(what, "rollback")) { mesh_rollback((const char *)BAD); return 0; }
    if (!strcmp(what, "rollback_unknown")) { mesh_rollback("never"); return 0; }
    if (!strcmp(what, "tool_name")) return mesh_tool((const char *)BAD, ok, 5, ok, sizeof ok);
    if (!strcmp(what, "tool_out")) return mesh_tool("echo", ok, 5, (char *)BAD, 100);
    if (!strcmp(what, "embed_out")) return mesh_embed(ok, 5, (float *)BAD, 100);
    if (!strcmp(what, "embed_len")) return mesh_embed(ok, 5, (float *)ok, HUGE);
    if (!strcmp(what, "join_out")) { if (mesh_fork(1) == 0) return 0; return mesh_join(0, (char *)BAD, 100); }
    if (!strcmp(what, "join_index")) return mesh_join(5, ok, sizeof ok);
    if (!strcmp(what, "log")) { mesh_log(1, (const char *)BAD, 10); return 0; }
    if (!strcmp(what, "set_size") || !strcmp(what, "pwrite_far") || !strcmp(what, "seek_write") ||
        !strcmp(what, "iov_flood")) return file_attacks(what);
    if (!strcmp(what, "sleep")) { for (;;) sleep(30); }
    if (!strcmp(what, "large_then_spin")) {  /* a step only a large model takes (placement moves it), then spin */
        const char *opts = "model=size>=large;privacy=any;max_tokens=4";
        mesh_llm_options(opts, (int32_t)strlen(opts));
        char out[64];
        mesh_llm("hello", 5, out, sizeof out);
        for (;;) { for (int i = 0; i < 10000000; i++) sink++; raw_sched_yield(); }  /* a host call now and then */
    }
    if (!strcmp(what, "log_flood")) {  /* forged records, terminal escapes, one huge line, many lines */
        static char line[100000];
        memset(line, 'A', sizeof line);
        const char *forged = "ok\n2030-01-01 INFO meshagent.node: agent 000000000000 finished\x1b[2J\r";
        memcpy(line, forged, strlen(forged));
        for (int i = 0; i < 200; i++) mesh_log(1, line, (int32_t)sizeof line);
        puts("logged");
        return 0;
    }
    printf("unknown behaviour %s\n", what);
    return 2;
}
