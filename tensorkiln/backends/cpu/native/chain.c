/* The chain executor (tensorkiln, CPU backend): runs a planned sequence of native kernel calls
 * in one foreign call, with no Python between them.
 *
 * Every kernel has a "packed" entry taking its arguments as one int64 array (pointers and
 * integers as themselves, float32 values as their bit patterns). The plan is an argument
 * template (the constants: weights, geometry tables, sizes) plus relocations for the per-run
 * buffers: argv[pos[r]] = bases[base[r]] + off[r], where bases are this run's buffer addresses
 * (the chain's inputs, its escaping outputs, the scratch arena).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*packed_fn)(const int64_t *);

/* returns 0, or -1 when the argument copy could not be allocated (nothing ran) */
int tk_chain_run(int n, const int64_t *fns, const int32_t *argoff, const int64_t *tmpl, int nargs, int nrel,
                 const int32_t *pos, const int32_t *base, const int64_t *off, const int64_t *bases) {
    int64_t local[1024];
    int64_t *a = nargs <= 1024 ? local : (int64_t *)malloc(sizeof(int64_t) * (size_t)nargs);
    if (!a) return -1;
    memcpy(a, tmpl, sizeof(int64_t) * (size_t)nargs);
    for (int r = 0; r < nrel; r++) a[pos[r]] = bases[base[r]] + off[r];
    for (int i = 0; i < n; i++) ((packed_fn)(intptr_t)fns[i])(a + argoff[i]);
    if (a != local) free(a);
    return 0;
}
