/* Channel concatenation of NHWC tensors (tensorkiln, CPU backend): per pixel, each input's
 * channels one after another. Sizes in bytes, so one kernel serves every element type.
 *
 * Up to 8 inputs, each (pointer, bytes of its channels per pixel, bytes from one pixel to the
 * next: more than its channels when it is a channel slice of a wider tensor); y is dense with
 * ys bytes per pixel. P pixels (N * H * W). Pixels are split across the OpenMP threads in
 * contiguous runs (a thread copies the image region its convolutions wrote).
 */
#include <stdint.h>
#include <string.h>

#define MAXIN 8

void tk_concat_nhwc(char *y, long P, long ys, int n, const char *x0, long c0, long s0, const char *x1, long c1,
                    long s1, const char *x2, long c2, long s2, const char *x3, long c3, long s3, const char *x4,
                    long c4, long s4, const char *x5, long c5, long s5, const char *x6, long c6, long s6,
                    const char *x7, long c7, long s7) {
    const char *x[MAXIN] = {x0, x1, x2, x3, x4, x5, x6, x7};
    const long c[MAXIN] = {c0, c1, c2, c3, c4, c5, c6, c7}, s[MAXIN] = {s0, s1, s2, s3, s4, s5, s6, s7};
    if (n > MAXIN) n = MAXIN;
    #pragma omp parallel for schedule(static) if (P * ys > 65536)
    for (long p = 0; p < P; p++) {
        char *o = y + p * ys;
        for (int i = 0; i < n; i++) {
            memcpy(o, x[i] + p * s[i], (size_t)c[i]);
            o += c[i];
        }
    }
}

/* the chain executor's entry (chain.c): the arguments as one int64 array */
void tk_concat_nhwc_packed(const int64_t *a) {
    tk_concat_nhwc((char *)a[0], (long)a[1], (long)a[2], (int)a[3], (const char *)a[4], (long)a[5], (long)a[6],
                   (const char *)a[7], (long)a[8], (long)a[9], (const char *)a[10], (long)a[11], (long)a[12],
                   (const char *)a[13], (long)a[14], (long)a[15], (const char *)a[16], (long)a[17], (long)a[18],
                   (const char *)a[19], (long)a[20], (long)a[21], (const char *)a[22], (long)a[23], (long)a[24],
                   (const char *)a[25], (long)a[26], (long)a[27]);
}
