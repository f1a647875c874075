/* Direct NHWC float32 convolution with AVX2/FMA register tiles (tensorkiln, CPU backend).
 *
 * y[n][oh][ow][k] = act(bias[k] + z[n][oh][ow][k] + sum_{kh,kw,c} x[n][ih][iw][c] * w[k][c][kh][kw])
 * with ih = oh*SH + kh*DH - PT, iw = ow*SW + kw*DW - PL; any kernel size, stride, dilation and
 * padding, one group. It is an implicit GEMM: the rows are output pixels, read straight from
 * the NHWC input (a pixel's channels are contiguous), so nothing is packed per call.
 *
 * Register tile: 6 consecutive output pixels (flat over n, oh, ow) x 16 output channels, 12
 * ymm accumulators; per input channel 2 weight loads, 6 broadcasts, 12 FMAs. A pixel whose tap
 * falls in the padding reads from a zero vector instead of branching.
 *
 * A tile's accumulators start from bias (+ residual). The input channels may be cut into
 * blocks (cb): then a tile starts from the partial sums in y after the first block and applies
 * the activation after the last. (Measured on 3x3 layers: blocks of 28-64 channels, whose
 * weights stay in L1, are 1.1-1.4x slower than the whole reduction in registers, so by
 * default there are none.)
 *
 * Weights are packed once by the caller as wp[K/16][KH][KW][C][16] (K padded with zero
 * filters to a multiple of 16; bias padded too).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* geometry; G_CS: floats from one input pixel to the next (C, or more for a channel slice of a
 * wider NHWC tensor, e.g. one output of a channel split: read in place, not copied) */
enum { G_N, G_H, G_W, G_C, G_K, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PT, G_PL, G_HO, G_WO, G_CS, G_NG };

#define MR 6
#define OB 16

typedef struct {
    const float *x, *wp, *bias, *z, *zero;
    float *y;
    const int *g;
    const int *pix; /* per output pixel: image, top input row, left input column */
    long P, T; /* pixels; tiles: P split into T runs of base or base + 1 pixels */
    long base, extra; /* the first extra tiles have base + 1 pixels */
    int act;
    float lo, hi;
} conv_t;

static inline __attribute__((always_inline)) __m256 load8(const float *p, int j, int nk) {
    if (8 * j + 8 <= nk) return _mm256_loadu_ps(p + 8 * j);
    float t[8] = {0};
    if (8 * j < nk) memcpy(t, p + 8 * j, sizeof(float) * (nk - 8 * j));
    return _mm256_loadu_ps(t);
}

static inline __attribute__((always_inline)) void store8(__m256 v, float *p, int j, int nk) {
    if (8 * j + 8 <= nk) {
        _mm256_storeu_ps(p + 8 * j, v);
    } else if (8 * j < nk) { /* the last, partial vector of output channels */
        float t[8];
        _mm256_storeu_ps(t, v);
        memcpy(p + 8 * j, t, sizeof(float) * (nk - 8 * j));
    }
}

static inline __attribute__((always_inline)) __m256 act8(__m256 v, int act, __m256 lo, __m256 hi) {
    if (act == 1) return _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == 2) return _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    return v;
}

/* M (<= 6) pixels q0 .. q0+M-1 x output block kb, input channels c0 .. c1-1; tp[tap * MR + p]:
 * pixel p's input at each tap (the zero vector in the padding), found once per tile. The
 * accumulators are named variables (an array would be spilled to the stack every step); the
 * unused ones vanish since M is a constant here. */
static inline __attribute__((always_inline)) void
block(const conv_t *cv, const float *const *tp, long q0, const int M, int kb, int c0, int c1, int first, int last,
      long pf) {
    const int *g = cv->g;
    const int C = g[G_C], taps = g[G_KH] * g[G_KW], K = g[G_K];
    const int k0 = kb * OB, nk = K - k0 < OB ? K - k0 : OB;
    float *y = cv->y + q0 * K + k0;
    const float *z = cv->z ? cv->z + q0 * K + k0 : 0;
    const float *wk = cv->wp + (long)kb * taps * C * OB;
    __m256 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51;
    if (first) { /* bias, plus the residual */
        __m256 b0 = _mm256_loadu_ps(cv->bias + k0), b1 = _mm256_loadu_ps(cv->bias + k0 + 8);
#define INIT(P)                                                                               \
        if (M > P) {                                                                          \
            a##P##0 = z ? _mm256_add_ps(b0, load8(z + (long)P * K, 0, nk)) : b0;              \
            a##P##1 = z ? _mm256_add_ps(b1, load8(z + (long)P * K, 1, nk)) : b1;              \
        }
        INIT(0) INIT(1) INIT(2) INIT(3) INIT(4) INIT(5)
#undef INIT
    } else { /* the partial sums of the earlier input blocks */
#define LOAD(P)                                                                               \
        if (M > P) {                                                                          \
            a##P##0 = load8(y + (long)P * K, 0, nk);                                          \
            a##P##1 = load8(y + (long)P * K, 1, nk);                                          \
        }
        LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5)
#undef LOAD
    }
    for (int tap = 0; tap < taps; tap++) {
        const float *const *pt = tp + tap * MR;
        const float *p0 = pt[0], *p1 = pt[1], *p2 = pt[2], *p3 = pt[3], *p4 = pt[4], *p5 = pt[5];
        const float *wc = wk + ((long)tap * C + c0) * OB;
        /* pf: the weights pf floats ahead (the block the next tiles will need) are pulled
         * into L2 a line per step while these are used, so the next block does not start
         * with a wait on memory */
        _Pragma("GCC unroll 4") /* measured 7 % faster than no unrolling; 2 and 8: same as 4 */
        for (int c = c0; c < c1; c++, wc += OB) {
            __m256 w0 = _mm256_load_ps(wc), w1 = _mm256_load_ps(wc + 8), b;
            if (pf) _mm_prefetch((const char *)(wc + pf), _MM_HINT_T1);
#define FMA(P)                                                                                \
            if (M > P) {                                                                      \
                b = _mm256_broadcast_ss(p##P + c);                                            \
                a##P##0 = _mm256_fmadd_ps(b, w0, a##P##0);                                    \
                a##P##1 = _mm256_fmadd_ps(b, w1, a##P##1);                                    \
            }
            FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5)
#undef FMA
        }
    }
    __m256 lo = _mm256_set1_ps(cv->lo), hi = _mm256_set1_ps(cv->hi);
    const int act = last ? cv->act : 0;
#define OUT(P)                                                                                \
    if (M > P) {                                                                              \
        store8(act8(a##P##0, act, lo, hi), y + (long)P * K, 0, nk);                           \
        store8(act8(a##P##1, act, lo, hi), y + (long)P * K, 1, nk);                           \
    }
    OUT(0) OUT(1) OUT(2) OUT(3) OUT(4) OUT(5)
#undef OUT
}

/* output blocks kb0 .. kb1-1 of one tile of M pixels: the taps' input pointers are found once for
 * all blocks. pf: the prefetch distance (floats) for blocks whose kb + kg < KB, or 0 */
static inline __attribute__((always_inline)) void tile(const conv_t *cv, long q0, const int M, int kb0, int kb1,
                                                       int c0, int c1, int first, int last, long pf, int kg, int KB) {
    const int *g = cv->g;
    const int H = g[G_H], W = g[G_W], KH = g[G_KH], KW = g[G_KW], CS = g[G_CS], DH = g[G_DH], DW = g[G_DW];
    const float *tp[KH * KW * MR];
    for (int p = 0; p < MR; p++) {
        const int *q = cv->pix + 3 * (q0 + (p < M ? p : 0));
        const float *base = cv->x + (long)q[0] * H * W * CS;
        for (int kh = 0, tap = 0; kh < KH; kh++) {
            for (int kw = 0; kw < KW; kw++, tap++) {
                const int ih = q[1] + kh * DH, iw = q[2] + kw * DW;
                tp[tap * MR + p] = p < M && ih >= 0 && ih < H && iw >= 0 && iw < W ? base + ((long)ih * W + iw) * CS
                                                                                  : cv->zero;
            }
        }
    }
    for (int kb = kb0; kb < kb1; kb++) {
        if (pf && kb + kg < KB)
            block(cv, tp, q0, M, kb, c0, c1, first, last, pf);
        else
            block(cv, tp, q0, M, kb, c0, c1, first, last, 0);
    }
}

static void run_tile(const conv_t *cv, long t, int kb0, int kb1, int c0, int c1, int first, int last, long pf,
                     int kg, int KB) {
    long q0 = t * cv->base + (t < cv->extra ? t : cv->extra);
    switch ((int)(cv->base + (t < cv->extra))) {
    case 6: tile(cv, q0, 6, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    case 5: tile(cv, q0, 5, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    case 4: tile(cv, q0, 4, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    case 3: tile(cv, q0, 3, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    case 2: tile(cv, q0, 2, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    default: tile(cv, q0, 1, kb0, kb1, c0, c1, first, last, pf, kg, KB); break;
    }
}

/* output blocks kb0 .. kb1-1 for tiles t0 .. t1-1. Without input blocks (cb >= C) a tile runs
 * all the group's output blocks back to back (its input pixels stay in L1, its output rows are
 * written contiguously) and the groups of kg blocks run one after the other over every tile
 * (a group's weights stay in L2); with ``prefetch`` the first tile of a group prefetches the
 * weights of the next kg blocks (of KB): measured 7-14 % faster on the deep 1x1 layers at batch
 * 1 (few tiles, each weight used a few times), 2-4 % slower where tiles are many or where two
 * groups of weights do not fit in L2 together (3x3, 512 channels). With input
 * blocks, block by block over every tile. */
static void run_range(const conv_t *cv, int kb0, int kb1, long t0, long t1, int cb, int kg, int KB,
                      int prefetch) {
    const int C = cv->g[G_C];
    const long blk = (long)cv->g[G_KH] * cv->g[G_KW] * C * OB; /* floats per output block */
    prefetch = prefetch && blk * 4 * (long)kg <= (192 << 10); /* two groups must fit in L2 */
    if (cb >= C) {
        for (int ga = kb0; ga < kb1; ga += kg) {
            int gb = ga + kg < kb1 ? ga + kg : kb1;
            for (long t = t0; t < t1; t++)
                run_tile(cv, t, ga, gb, 0, C, 1, 1, prefetch && t == t0 ? kg * blk : 0, kg, KB);
        }
        return;
    }
    for (int kb = kb0; kb < kb1; kb++)
        for (int c0 = 0; c0 < C; c0 += cb) {
            int c1 = c0 + cb < C ? c0 + cb : C;
            for (long t = t0; t < t1; t++) run_tile(cv, t, kb, kb + 1, c0, c1, c0 == 0, c1 == C, 0, kg, KB);
        }
}

/* g: the geometry (G_* above). zero: at least C floats of 0. wp/bias: packed as above.
 * pix: per output pixel (n, oh, ow order) its image, top input row (oh*SH - PT) and left input
 * column (ow*SW - PL), made once per shape by the caller. cb: input channels per block (>= C: none). kg: output blocks per group (see run_range).
 * With many tiles each thread takes a fixed share of the output pixels (the same in every
 * layer, so a layer finds most of its input in the cache of the core that wrote it; measured
 * 6 % faster end to end on ResNet-50 than splitting by output channels); with few tiles (deep
 * layers at batch 1) the output blocks are split instead. */
void tk_conv_nhwc(const float *x, const float *wp, const float *bias, const float *z, float *y,
                  const float *zero, const int *g, const int *pix, int cb, int kg, int act, float lo,
                  float hi) {
    const long P = (long)g[G_N] * g[G_HO] * g[G_WO];
    if (P < 1) return;
    const long T = (P + MR - 1) / MR;
    const int KB = (g[G_K] + OB - 1) / OB;
    /* balanced tiles: 49 pixels run as 6,6,6,6,5,5,5,5,5 rather than eight 6s and a 1 (a
     * one-pixel tile has 2 accumulators: bound by FMA latency, not throughput) */
    conv_t cv = {x, wp, bias, z, zero, y, g, pix, P, T, P / T, P % T, act, lo, hi};
    if (cb < 1) cb = g[G_C];
    if (kg < 1) kg = 1;
    if (T >= 8L * omp_get_max_threads()) {
        #pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            run_range(&cv, 0, KB, T * id / nt, T * (id + 1) / nt, cb, kg, KB, 0);
        }
    } else {
        #pragma omp parallel for schedule(static) if (KB > 1)
        for (int kb = 0; kb < KB; kb++) run_range(&cv, kb, kb + 1, 0, T, cb, 1, KB, 1);
    }
}

/* im2col geometry: a convolution over few channels as a 1x1 convolution over patch rows */
enum { I_N, I_C, I_H, I_W, I_KH, I_KW, I_SH, I_SW, I_DH, I_DW, I_PT, I_PL, I_HO, I_WO, I_CP, I_SN, I_SC, I_SH_, I_SW_,
       I_NG };

/* patch rows of the output pixels q0 .. q1-1: col[q][(c * KH + kh) * KW + kw] = x[n][c][ih][iw]
 * (element strides I_S*, any layout), 0 in the padding. A row of KW taps is one 8-float copy where
 * the input row is contiguous, inside the image and 8 floats readable (the floats past KW belong
 * to the rows written next). */
static void im2col_rows(const float *x, const int *ig, float *col, long q0, long q1) {
    const int C = ig[I_C], H = ig[I_H], W = ig[I_W], KH = ig[I_KH], KW = ig[I_KW];
    const int SH = ig[I_SH], SW = ig[I_SW], DH = ig[I_DH], DW = ig[I_DW], PT = ig[I_PT], PL = ig[I_PL];
    const int HO = ig[I_HO], WO = ig[I_WO], CP = ig[I_CP];
    const long sn = ig[I_SN], sc = ig[I_SC], sh = ig[I_SH_], sw = ig[I_SW_];
    const int K = C * KH * KW, wide = sw == 1 && DW == 1 && KW <= 8;
    for (long q = q0; q < q1; q++) {
        const long n = q / ((long)HO * WO), rem = q % ((long)HO * WO);
        const int oh = (int)(rem / WO), ow = (int)(rem % WO), iw0 = ow * SW - PL;
        float *r = col + q * CP;
        int k = 0;
        for (int c = 0; c < C; c++) {
            for (int kh = 0; kh < KH; kh++, k += KW) {
                const int ih = oh * SH - PT + kh * DH;
                const float *xr = x + n * sn + c * sc + (long)ih * sh;
                if (ih < 0 || ih >= H) {
                    for (int kw = 0; kw < KW; kw++) r[k + kw] = 0.f;
                } else if (wide && iw0 >= 0 && iw0 + 8 <= W && k + 8 <= K) {
                    _mm256_storeu_ps(r + k, _mm256_loadu_ps(xr + iw0));
                } else {
                    for (int kw = 0; kw < KW; kw++) {
                        const int iw = iw0 + kw * DW;
                        r[k + kw] = iw >= 0 && iw < W ? xr[(long)iw * sw] : 0.f;
                    }
                }
            }
        }
    }
}

#define IM2COL_TILES 16 /* tiles whose patch rows are gathered at a time (tens of KB: stay in L2) */

/* The convolution of x through patch rows: each thread gathers the rows of IM2COL_TILES of its
 * tiles into col (N*HO*WO rows of CP floats: the thread's own part), then runs the 1x1 direct
 * kernel (g, pix: its geometry over col) on them while they are in cache. Few tiles: all rows
 * first, then tk_conv_nhwc. */
void tk_conv_im2col_nhwc(const float *x, const int *ig, float *col, const float *wp, const float *bias,
                         const float *z, float *y, const float *zero, const int *g, const int *pix, int cb, int kg,
                         int act, float lo, float hi) {
    const long P = (long)g[G_N] * g[G_HO] * g[G_WO];
    if (P < 1) return;
    const long T = (P + MR - 1) / MR;
    const int KB = (g[G_K] + OB - 1) / OB;
    if (T < 8L * omp_get_max_threads()) {
        #pragma omp parallel for schedule(static)
        for (long q = 0; q < P; q++) im2col_rows(x, ig, col, q, q + 1);
        tk_conv_nhwc(col, wp, bias, z, y, zero, g, pix, cb, kg, act, lo, hi);
        return;
    }
    conv_t cv = {col, wp, bias, z, zero, y, g, pix, P, T, P / T, P % T, act, lo, hi};
    if (cb < 1) cb = g[G_C];
    if (kg < 1) kg = 1;
    #pragma omp parallel
    {
        const int nt = omp_get_num_threads(), id = omp_get_thread_num();
        const long t0 = T * id / nt, t1 = T * (id + 1) / nt;
        for (long ta = t0; ta < t1; ta += IM2COL_TILES) {
            const long tb = ta + IM2COL_TILES < t1 ? ta + IM2COL_TILES : t1;
            const long qa = ta * cv.base + (ta < cv.extra ? ta : cv.extra);
            const long qb = tb * cv.base + (tb < cv.extra ? tb : cv.extra);
            im2col_rows(x, ig, col, qa, qb);
            run_range(&cv, 0, KB, ta, tb, cb, kg, KB, 0);
        }
    }
}

/* padded-rows geometry: the input (element strides R_S*, any layout) and its zero-bordered NHWC copy */
enum { R_N, R_C, R_H, R_W, R_PT, R_PL, R_HP, R_WP, R_SN, R_SC, R_SH, R_SW, R_NG };

/* xp[n][ih + PT][iw + PL][c] = x[n][c][ih][iw], 0 in the border (HP x WP pixels of C floats) */
static void pad_nhwc(const float *x, const int *rg, float *xp) {
    const int C = rg[R_C], H = rg[R_H], W = rg[R_W], PT = rg[R_PT], PL = rg[R_PL], HP = rg[R_HP], WP = rg[R_WP];
    const long sn = rg[R_SN], sc = rg[R_SC], sh = rg[R_SH], sw = rg[R_SW], rows = (long)rg[R_N] * HP;
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const long n = r / HP;
        const int ih = (int)(r % HP) - PT;
        float *o = xp + r * WP * C;
        if (ih < 0 || ih >= H) {
            memset(o, 0, sizeof(float) * (size_t)WP * C);
            continue;
        }
        memset(o, 0, sizeof(float) * (size_t)PL * C);
        const float *xr = x + n * sn + (long)ih * sh;
        float *oi = o + (long)PL * C;
        for (int iw = 0; iw < W; iw++)
            for (int c = 0; c < C; c++) oi[(long)iw * C + c] = xr[iw * sw + c * sc];
        memset(o + (long)(PL + W) * C, 0, sizeof(float) * (size_t)(WP - PL - W) * C);
    }
}

/* A convolution over few channels whose kernel rows are contiguous (dilation 1 along W) on the
 * zero-bordered NHWC copy xp: in NHWC one kernel row of an output pixel is KW*C consecutive floats,
 * so g describes a KH x 1 convolution over "pixels" of KW*C channels, CS = C floats apart, with no
 * padding (the caller's geometry; its weights packed as [K][KW*C][KH][1]). */
void tk_conv_rows_nhwc(const float *x, const int *rg, float *xp, const float *wp, const float *bias,
                       const float *z, float *y, const float *zero, const int *g, const int *pix, int cb, int kg,
                       int act, float lo, float hi) {
    pad_nhwc(x, rg, xp);
    tk_conv_nhwc(xp, wp, bias, z, y, zero, g, pix, cb, kg, act, lo, hi);
}

/* the chain executor's entry (chain.c): the arguments as one int64 array, floats as their bits */
static float tk_bits_f32(int64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void tk_conv_nhwc_packed(const int64_t *a) {
    tk_conv_nhwc((const float *)a[0], (const float *)a[1], (const float *)a[2], (const float *)a[3], (float *)a[4],
                 (const float *)a[5], (const int *)a[6], (const int *)a[7], (int)a[8], (int)a[9], (int)a[10],
                 tk_bits_f32(a[11]), tk_bits_f32(a[12]));
}

void tk_conv_im2col_nhwc_packed(const int64_t *a) {
    tk_conv_im2col_nhwc((const float *)a[0], (const int *)a[1], (float *)a[2], (const float *)a[3], (const float *)a[4],
                        (const float *)a[5], (float *)a[6], (const float *)a[7], (const int *)a[8], (const int *)a[9],
                        (int)a[10], (int)a[11], (int)a[12], tk_bits_f32(a[13]), tk_bits_f32(a[14]));
}

void tk_conv_rows_nhwc_packed(const int64_t *a) {
    tk_conv_rows_nhwc((const float *)a[0], (const int *)a[1], (float *)a[2], (const float *)a[3], (const float *)a[4],
                      (const float *)a[5], (float *)a[6], (const float *)a[7], (const int *)a[8], (const int *)a[9],
                      (int)a[10], (int)a[11], (int)a[12], tk_bits_f32(a[13]), tk_bits_f32(a[14]));
}
