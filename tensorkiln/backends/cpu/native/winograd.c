/* Winograd F(4x4, 3x3) and F(2x2, 5x5) convolutions on NHWC float32 (tensorkiln, CPU backend).
 *
 * A stride-1 convolution is computed tile by tile: every 6x6 input tile d (per channel)
 * becomes V = B^T d B, the 36 products V[i] x U[i] (U = G g G^T, the transformed weights) are
 * 36 matrix multiplications over channels, and every 6x6 result m becomes the output tile
 * A^T m A: 4x4 for a 3x3 kernel, 2x2 for a 5x5 one. Both use the interpolation points 0, +-1,
 * +-2, inf, so B is the same 6x6 matrix and the input transform is shared; only the tile step
 * (4 or 2) differs. Multiplications per output drop from 9 to 2.25 (3x3) and from 25 to 9 (5x5)
 * (Lavin & Gray 2015).
 *
 * One call does everything. Each thread takes a contiguous run of the tile grid (n, th, tw
 * row-major: the same image region every layer gives that thread, so its input is in that core's
 * cache) and works through it in groups of G tiles: the group's input transform V [36][G][C],
 * the 36 products M [36][G][Kp] on AVX2 register tiles (6 tiles x 16 output channels), then the
 * output transform with bias, residual and activation, into y. V and M are the thread's own
 * (work: threads x 36 G (C + Kp) floats) and sized by the caller to stay in L2, so only x, y
 * and the weights travel through memory. (The earlier three passes over the whole tile grid
 * with a BLAS batched GEMM between them, V and M of megabytes: ResNet-50's 56x56 3x3 layer
 * 0.8 ms alone with warm caches but 1.4-1.8 ms inside the network.)
 *
 * up: U packed per i as [Kp/16][C][16] (K padded with zero filters), 32-byte aligned.
 */
#include <immintrin.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CB 64 /* channels per transform block (stack arrays of 36 * CB floats) */
#define OB 16 /* output channels per register tile */
#define MR 6  /* tiles per register tile */

/* geometry: input N x H x W (pixel stride CS floats, C channels read), K outputs, pads, output
 * size, tile grid, tile step (4: F(4x4,3x3), 2: F(2x2,5x5)), tiles per group, threads the work
 * buffer was sized for */
enum { W_N, W_H, W_W, W_C, W_CS, W_K, W_PT, W_PL, W_HO, W_WO, W_TH, W_TW, W_STEP, W_G, W_NT, W_KSPLIT, W_NG };

/* V[i*6+j][tt][c] (plane floats between the 36 matrices, rows C apart) for tiles t0 .. t0+T-1 */
static void input_tiles(const float *x, const int *g, long t0, int T, float *V, long plane) {
    const int H = g[W_H], W = g[W_W], C = g[W_C], CS = g[W_CS], step = g[W_STEP], tH = g[W_TH], tW = g[W_TW];
    for (int tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * step - g[W_PT], x0 = (r % tW) * step - g[W_PL];
        const float *xn = x + (long)n * H * W * CS;
        for (int c0 = 0; c0 < C; c0 += CB) {
            int cb = C - c0 < CB ? C - c0 : CB;
            float d[6][6][CB];
            float w[6][6][CB];
            for (int i = 0; i < 6; i++) {
                int yy = y0 + i;
                for (int j = 0; j < 6; j++) {
                    int xx = x0 + j;
                    if (yy < 0 || yy >= H || xx < 0 || xx >= W) {
                        memset(d[i][j], 0, sizeof(float) * cb);
                    } else {
                        memcpy(d[i][j], xn + ((long)yy * W + xx) * CS + c0, sizeof(float) * cb);
                    }
                }
            }
            /* w = B^T d (over rows) */
            for (int j = 0; j < 6; j++) {
                for (int c = 0; c < cb; c++) {
                    float d0 = d[0][j][c], d1 = d[1][j][c], d2 = d[2][j][c];
                    float d3 = d[3][j][c], d4 = d[4][j][c], d5 = d[5][j][c];
                    w[0][j][c] = 4.f * d0 - 5.f * d2 + d4;
                    w[1][j][c] = -4.f * (d1 + d2) + d3 + d4;
                    w[2][j][c] = 4.f * (d1 - d2) - d3 + d4;
                    w[3][j][c] = -2.f * (d1 - d3) - d2 + d4;
                    w[4][j][c] = 2.f * (d1 - d3) - d2 + d4;
                    w[5][j][c] = 4.f * d1 - 5.f * d3 + d5;
                }
            }
            /* V = w B (over columns) */
            for (int i = 0; i < 6; i++) {
                float *out = V + (long)(i * 6) * plane + (long)tt * C + c0;
                for (int c = 0; c < cb; c++) {
                    float e0 = w[i][0][c], e1 = w[i][1][c], e2 = w[i][2][c];
                    float e3 = w[i][3][c], e4 = w[i][4][c], e5 = w[i][5][c];
                    out[0 * plane + c] = 4.f * e0 - 5.f * e2 + e4;
                    out[1 * plane + c] = -4.f * (e1 + e2) + e3 + e4;
                    out[2 * plane + c] = 4.f * (e1 - e2) - e3 + e4;
                    out[3 * plane + c] = -2.f * (e1 - e3) - e2 + e4;
                    out[4 * plane + c] = 2.f * (e1 - e3) - e2 + e4;
                    out[5 * plane + c] = 4.f * e1 - 5.f * e3 + e5;
                }
            }
        }
    }
}

/* one output pixel's channels: + residual, activation (0 none, 1 relu, 2 clip(lo, hi)), store */
static inline void emit(float *o, float *dst, const float *zz, int kb, int act, float lo, float hi) {
    if (zz) {
        for (int c = 0; c < kb; c++) o[c] += zz[c];
    }
    if (act == 1) {
        for (int c = 0; c < kb; c++) dst[c] = o[c] > 0.f ? o[c] : 0.f;
    } else if (act == 2) {
        for (int c = 0; c < kb; c++) {
            float v = o[c] < lo ? lo : o[c];
            dst[c] = v > hi ? hi : v;
        }
    } else {
        memcpy(dst, o, sizeof(float) * kb);
    }
}

/* F(4x4, 3x3) output transform of tiles t0 .. t0+T-1, channels klo .. khi-1, from M[i*6+j][tt][k]
 * (rows ldm apart) */
static void output43(const float *M, const int *g, long t0, int T, long plane, int ldm, const float *bias,
                     const float *z, int act, float lo, float hi, float *y, int klo, int khi) {
    const int Ho = g[W_HO], Wo = g[W_WO], K = g[W_K], tH = g[W_TH], tW = g[W_TW];
    for (int tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * 4, x0 = (r % tW) * 4;
        for (int k0 = klo; k0 < khi; k0 += CB) {
            int kb = khi - k0 < CB ? khi - k0 : CB;
            float w[4][6][CB];
            /* w = A^T m (over rows) */
            for (int j = 0; j < 6; j++) {
                const float *m = M + (long)j * plane + (long)tt * ldm + k0;
                for (int c = 0; c < kb; c++) {
                    float m0 = m[0 * 6 * plane + c], m1 = m[1 * 6 * plane + c], m2 = m[2 * 6 * plane + c];
                    float m3 = m[3 * 6 * plane + c], m4 = m[4 * 6 * plane + c], m5 = m[5 * 6 * plane + c];
                    float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
                    w[0][j][c] = m0 + s12 + s34;
                    w[1][j][c] = d12 + 2.f * d34;
                    w[2][j][c] = s12 + 4.f * s34;
                    w[3][j][c] = d12 + 8.f * d34 + m5;
                }
            }
            for (int i = 0; i < 4; i++) {
                int yy = y0 + i;
                if (yy >= Ho) break;
                float o[4][CB];
                for (int c = 0; c < kb; c++) {
                    float e0 = w[i][0][c], e1 = w[i][1][c], e2 = w[i][2][c];
                    float e3 = w[i][3][c], e4 = w[i][4][c], e5 = w[i][5][c];
                    float s12 = e1 + e2, d12 = e1 - e2, s34 = e3 + e4, d34 = e3 - e4;
                    float b = bias[k0 + c];
                    o[0][c] = e0 + s12 + s34 + b;
                    o[1][c] = d12 + 2.f * d34 + b;
                    o[2][c] = s12 + 4.f * s34 + b;
                    o[3][c] = d12 + 8.f * d34 + e5 + b;
                }
                for (int j = 0; j < 4; j++) {
                    int xx = x0 + j;
                    if (xx >= Wo) break;
                    long off = (((long)n * Ho + yy) * Wo + xx) * K + k0;
                    emit(o[j], y + off, z ? z + off : NULL, kb, act, lo, hi);
                }
            }
        }
    }
}

/* F(2x2, 5x5): A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]]; arguments as output43 */
static void output25(const float *M, const int *g, long t0, int T, long plane, int ldm, const float *bias,
                     const float *z, int act, float lo, float hi, float *y, int klo, int khi) {
    const int Ho = g[W_HO], Wo = g[W_WO], K = g[W_K], tH = g[W_TH], tW = g[W_TW];
    for (int tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * 2, x0 = (r % tW) * 2;
        for (int k0 = klo; k0 < khi; k0 += CB) {
            int kb = khi - k0 < CB ? khi - k0 : CB;
            float w[2][6][CB];
            for (int j = 0; j < 6; j++) {
                const float *m = M + (long)j * plane + (long)tt * ldm + k0;
                for (int c = 0; c < kb; c++) {
                    float m0 = m[0 * 6 * plane + c], m1 = m[1 * 6 * plane + c], m2 = m[2 * 6 * plane + c];
                    float m3 = m[3 * 6 * plane + c], m4 = m[4 * 6 * plane + c], m5 = m[5 * 6 * plane + c];
                    w[0][j][c] = m0 + m1 + m2 + m3 + m4;
                    w[1][j][c] = m1 - m2 + 2.f * (m3 - m4) + m5;
                }
            }
            for (int i = 0; i < 2; i++) {
                int yy = y0 + i;
                if (yy >= Ho) break;
                float o[2][CB];
                for (int c = 0; c < kb; c++) {
                    float e0 = w[i][0][c], e1 = w[i][1][c], e2 = w[i][2][c];
                    float e3 = w[i][3][c], e4 = w[i][4][c], e5 = w[i][5][c];
                    float b = bias[k0 + c];
                    o[0][c] = e0 + e1 + e2 + e3 + e4 + b;
                    o[1][c] = e1 - e2 + 2.f * (e3 - e4) + e5 + b;
                }
                for (int j = 0; j < 2; j++) {
                    int xx = x0 + j;
                    if (xx >= Wo) break;
                    long off = (((long)n * Ho + yy) * Wo + xx) * K + k0;
                    emit(o[j], y + off, z ? z + off : NULL, kb, act, lo, hi);
                }
            }
        }
    }
}

/* rows (<= 6) of a product: c[r][0..15] = sum_k a[r][k] * b[k][0..15]; a rows lda apart, b packed
 * [C][16], c rows ldc apart. Named accumulators (an array would be spilled); M is a constant. */
static inline __attribute__((always_inline)) void mm_tile(const float *a, int lda, const float *b, int C, float *c,
                                                          int ldc, const int M) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00;
    __m256 a30 = a00, a31 = a00, a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    const float *p0 = a, *p1 = a + lda, *p2 = a + 2 * lda, *p3 = a + 3 * lda, *p4 = a + 4 * lda, *p5 = a + 5 * lda;
    _Pragma("GCC unroll 4")
    for (int k = 0; k < C; k++, b += OB) {
        __m256 w0 = _mm256_load_ps(b), w1 = _mm256_load_ps(b + 8), v;
#define FMA(P)                                                                                \
        if (M > P) {                                                                          \
            v = _mm256_broadcast_ss(p##P + k);                                                \
            a##P##0 = _mm256_fmadd_ps(v, w0, a##P##0);                                        \
            a##P##1 = _mm256_fmadd_ps(v, w1, a##P##1);                                        \
        }
        FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5)
#undef FMA
    }
#define OUT(P)                                                                                \
    if (M > P) {                                                                              \
        _mm256_storeu_ps(c + (long)P * ldc, a##P##0);                                         \
        _mm256_storeu_ps(c + (long)P * ldc + 8, a##P##1);                                     \
    }
    OUT(0) OUT(1) OUT(2) OUT(3) OUT(4) OUT(5)
#undef OUT
}

/* M[i] = V[i] x U[i] for T tiles, every i, output blocks kb0 .. kb1-1 */
static void products(const float *V, const float *up, float *M, int T, int C, int Kp, long vplane, long mplane,
                     int kb0, int kb1) {
    const int KB = Kp / OB;
    for (int i = 0; i < 36; i++) {
        const float *v = V + i * vplane;
        float *m = M + i * mplane;
        for (int kb = kb0; kb < kb1; kb++) {
            const float *b = up + ((long)i * KB + kb) * C * OB;
            for (int r0 = 0; r0 < T; r0 += MR) {
                const float *a = v + (long)r0 * C;
                float *c = m + (long)r0 * Kp + kb * OB;
                switch (T - r0 < MR ? T - r0 : MR) {
                case 6: mm_tile(a, C, b, C, c, Kp, 6); break;
                case 5: mm_tile(a, C, b, C, c, Kp, 5); break;
                case 4: mm_tile(a, C, b, C, c, Kp, 4); break;
                case 3: mm_tile(a, C, b, C, c, Kp, 3); break;
                case 2: mm_tile(a, C, b, C, c, Kp, 2); break;
                default: mm_tile(a, C, b, C, c, Kp, 1); break;
                }
            }
        }
    }
}

static void output(const float *M, const int *g, long t0, int T, long plane, int ldm, const float *bias,
                   const float *z, int act, float lo, float hi, float *y, int klo, int khi) {
    if (g[W_STEP] == 4)
        output43(M, g, t0, T, plane, ldm, bias, z, act, lo, hi, y, klo, khi);
    else
        output25(M, g, t0, T, plane, ldm, bias, z, act, lo, hi, y, klo, khi);
}

/* Few tiles (deep layers at batch 1), g[W_KSPLIT]: every tile in one V and M (work: 36 T (C + Kp)
 * floats, shared): the threads transform their share of the tiles, then each multiplies all tiles
 * by its share of the output blocks and transforms those channels back. U is read once per call
 * (in groups of tiles per thread it would be read once per group). */
static void run_ksplit(const float *x, const float *up, const float *bias, const float *z, float *y, float *work,
                       const int *g, int act, float lo, float hi, long T, int nt) {
    const int C = g[W_C], K = g[W_K], Kp = (K + OB - 1) / OB * OB, KB = Kp / OB;
    const long vplane = T * C, mplane = T * Kp;
    float *V = work, *M = work + 36 * vplane;
    #pragma omp parallel num_threads(nt)
    {
        const int n = omp_get_num_threads(), id = omp_get_thread_num();
        const long ta = T * id / n, tb = T * (id + 1) / n;
        input_tiles(x, g, ta, (int)(tb - ta), V + ta * C, vplane);
        #pragma omp barrier
        const int kb0 = KB * id / n, kb1 = KB * (id + 1) / n;
        products(V, up, M, (int)T, C, Kp, vplane, mplane, kb0, kb1);
        const int klo = kb0 * OB, khi = kb1 * OB < K ? kb1 * OB : K;
        if (klo < khi) output(M, g, 0, (int)T, mplane, Kp, bias, z, act, lo, hi, y, klo, khi);
    }
}

/* The convolution (geometry g, W_* above). bias: Kp floats. work: g[W_NT] x 36 G (C + Kp) floats
 * (with W_KSPLIT: 36 T (C + Kp)). act: 0 none, 1 relu, 2 clip(lo, hi) */
void tk_wino_nhwc(const float *x, const float *up, const float *bias, const float *z, float *y, float *work,
                  const int *g, int act, float lo, float hi) {
    const int C = g[W_C], K = g[W_K], G = g[W_G], Kp = (K + OB - 1) / OB * OB;
    const long T = (long)g[W_N] * g[W_TH] * g[W_TW];
    const long vplane = (long)G * C, mplane = (long)G * Kp, per = 36 * (vplane + mplane);
    int nt = g[W_NT] < omp_get_max_threads() ? g[W_NT] : omp_get_max_threads(); /* the work buffer's */
    if (g[W_KSPLIT]) {
        run_ksplit(x, up, bias, z, y, work, g, act, lo, hi, T, nt < 1 ? 1 : nt);
        return;
    }
    if (T < nt) nt = (int)T;
    if (nt < 1) nt = 1;
    #pragma omp parallel num_threads(nt)
    {
        const int n = omp_get_num_threads(), id = omp_get_thread_num();
        float *V = work + id * per, *M = V + 36 * vplane;
        const long ta = T * id / n, tb = T * (id + 1) / n;
        for (long t0 = ta; t0 < tb; t0 += G) {
            const int cnt = (int)(tb - t0 < G ? tb - t0 : G);
            input_tiles(x, g, t0, cnt, V, vplane);
            products(V, up, M, cnt, C, Kp, vplane, mplane, 0, Kp / OB);
            output(M, g, t0, cnt, mplane, Kp, bias, z, act, lo, hi, y, 0, K);
        }
    }
}

int tk_wino_threads(void) { return omp_get_max_threads(); }

/* the chain executor's entry (chain.c): the arguments as one int64 array, floats as their bits */
static float bits_f32(int64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void tk_wino_nhwc_packed(const int64_t *a) {
    tk_wino_nhwc((const float *)a[0], (const float *)a[1], (const float *)a[2], (const float *)a[3], (float *)a[4],
                 (float *)a[5], (const int *)a[6], (int)a[7], bits_f32(a[8]), bits_f32(a[9]));
}
