/* The chain executor (tensorkiln, CPU backend): runs a planned sequence of native kernel calls
 * in one foreign call, with no Python between them.
 *
 * Every kernel has a "packed" entry taking its arguments as one int64 array (pointers and
 * integers as themselves, float32 values as their bit patterns). The plan is an argument
 * template (the constants: weights, geometry tables, sizes) plus relocations for the per-run
 * buffers: argv[pos[r]] = bases[base[r]] + off[r], where bases are this run's buffer addresses
 * (the chain's inputs, its escaping outputs, the scratch arena).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef void (*packed_fn)(const int64_t *);

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* returns 0, or -1 when the argument copy could not be allocated (nothing ran). times: NULL, or
 * n entries that receive each call's duration in nanoseconds (the per-layer profile) */
int tk_chain_run(int n, const int64_t *fns, const int32_t *argoff, const int64_t *tmpl, int nargs, int nrel,
                 const int32_t *pos, const int32_t *base, const int64_t *off, const int64_t *bases, int64_t *times) {
    int64_t local[1024];
    int64_t *a = nargs <= 1024 ? local : (int64_t *)malloc(sizeof(int64_t) * (size_t)nargs);
    if (!a) return -1;
    memcpy(a, tmpl, sizeof(int64_t) * (size_t)nargs);
    for (int r = 0; r < nrel; r++) a[pos[r]] = bases[base[r]] + off[r];
    if (times) {
        for (int i = 0; i < n; i++) {
            int64_t t0 = now_ns();
            ((packed_fn)(intptr_t)fns[i])(a + argoff[i]);
            times[i] = now_ns() - t0;
        }
    } else {
        for (int i = 0; i < n; i++) ((packed_fn)(intptr_t)fns[i])(a + argoff[i]);
    }
    if (a != local) free(a);
    return 0;
}
