/* Counts what a process allocates and copies, for benches/copies.sh: loaded with LD_PRELOAD, it
 * wraps malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign, memcpy and memmove
 * (the calls through which Rust code allocates and copies slices; copies the compiler inlines
 * are not seen), and at exit writes one line to $COPIES_DIR/<pid>.txt:
 *   <argv[1]> allocations <n> allocated_bytes <n> copies <n> copied_bytes <n>
 * Nothing else changes: every call goes on to glibc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static uint64_t allocations, allocated_bytes, copies, copied_bytes;
static void *(*real_memcpy)(void *, const void *, size_t);
static void *(*real_memmove)(void *, const void *, size_t);

static void count_alloc(size_t n) {
    __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&allocated_bytes, n, __ATOMIC_RELAXED);
}

static void count_copy(size_t n) {
    __atomic_add_fetch(&copies, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&copied_bytes, n, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { count_alloc(n); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count_alloc(a * b); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count_alloc(n); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count_alloc(n); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count_alloc(n); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count_alloc(n);
    void *p = __libc_memalign(a, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}

/* Byte copies for the moment before dlsym has found glibc's functions. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void *slow_move(void *d, const void *s, size_t n) {
    volatile unsigned char *dst = d;
    const volatile unsigned char *src = s;
    if (dst < src) for (size_t i = 0; i < n; i++) dst[i] = src[i];
    else for (size_t i = n; i > 0; i--) dst[i - 1] = src[i - 1];
    return d;
}

void *memcpy(void *d, const void *s, size_t n) {
    if (!real_memcpy) real_memcpy = dlsym(RTLD_NEXT, "memcpy");
    count_copy(n);
    return real_memcpy ? real_memcpy(d, s, n) : slow_move(d, s, n);
}

void *memmove(void *d, const void *s, size_t n) {
    if (!real_memmove) real_memmove = dlsym(RTLD_NEXT, "memmove");
    count_copy(n);
    return real_memmove ? real_memmove(d, s, n) : slow_move(d, s, n);
}

__attribute__((destructor)) static void report(void) {
    const char *dir = getenv("COPIES_DIR");
    if (!dir) return;
    char role[64] = "?", args[4096];
    FILE *c = fopen("/proc/self/cmdline", "r");
    if (c) {
        size_t n = fread(args, 1, sizeof args - 1, c);
        fclose(c);
        args[n] = 0;
        size_t first = strlen(args) + 1;
        if (first < n) snprintf(role, sizeof role, "%s", args + first);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%d.txt", dir, (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "%s allocations %llu allocated_bytes %llu copies %llu copied_bytes %llu\n", role,
            (unsigned long long)allocations, (unsigned long long)allocated_bytes,
            (unsigned long long)copies, (unsigned long long)copied_bytes);
    fclose(f);
}
