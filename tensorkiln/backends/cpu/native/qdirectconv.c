/* Direct NHWC int8 convolution on AVX2 (tensorkiln, CPU backend; the QConv tactic direct-int8).
 *
 * uint8 activations (zero point xz) x int8 weights (symmetric, per output channel, |w| <= 64),
 * int32 accumulation: per 4 input channels, vpmaddubsw multiplies the 4 activation bytes
 * (broadcast) by 8 output channels' 4 weight bytes and adds neighbouring products into int16
 * (exact: 2 * 255 * 64 < 2^15, hence the weight bound; tensorkiln quantizes weights to 7 bits
 * on CPUs without VNNI), vpmaddwd with ones adds those pairs into int32.
 *
 * Taps in the padding read a vector of xz bytes, so every tap contributes xz * w and the
 * correction corr[k] = xz * sum(w[k]) is one int32 subtraction per output. Then
 *   f = (acc - corr) * m[k] + c[k] (+ z * zm), clamped to [lo, hi] (activation), stored as float32,
 * or rounded half to even and saturated to uint8; for a uint8 output the caller has divided m, c,
 * zm and the bounds by y_scale and folded the zero points into c (requantization is then one
 * conversion). The residual z is float32 or uint8 (its zero point folded into c), and may be
 * the output itself (in place: each tile reads it before writing).
 *
 * Register tile: 4 output pixels x 16 output channels (8 accumulators; the int8 products are
 * bound by the vector multiplier, not by loads, and 6 pixels spilled registers). Weights packed
 * once as wp[K/16][KH][KW][C4/4][16][4] (C4: channels rounded up to 4, zero padded). The input
 * must have C4 readable channels per pixel (the caller pads C % 4 != 0).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

/* geometry; G_CS: bytes from one input pixel to the next (C4, or more for a channel slice) */
enum { G_N, G_H, G_W, G_C, G_K, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PT, G_PL, G_HO, G_WO, G_CS, G_C4, G_NG };
/* q: residual multiplier, lower and upper bound */
enum { Q_ZS, Q_LO, Q_HI, Q_N };
enum { F_OUT_U8 = 1, F_Z_U8 = 2 };
enum { C_LO = 1, C_HI = 2 }; /* clamp: apply the lower / upper bound */

#define MR 4
#define OB 16
#define MAX_TAPS 64 /* KH * KW; larger kernels stay on oneDNN */

typedef struct {
    const uint8_t *x, *zero;
    const int8_t *wp;
    const int32_t *corr; /* per output channel: xz * sum of its weights */
    const float *scale, *bias, *q; /* m[k], c[k] (K padded to 16); Q_* */
    const void *z;
    void *y;
    const int *g, *pix;
    long T, base, extra;
    int clamp, flags;
} qconv_t;

/* per (tile, output block): the epilogue's constants, loaded once into locals (the uint8 stores
 * may alias anything, so fields read through cv would be re-read after every store) */
typedef struct {
    __m256 m0, m1, c0, c1, lo, hi, zm;
    const void *z;
    void *y;
    long K;
    int flags, clamp;
} ep_t;

/* the epilogue of one pixel: f = acc * m + c (+ residual * zm) (the accumulators started at
 * -corr), bounds, store. For a uint8 output m, c, zm and the bounds are already divided by
 * y_scale (c includes the y zero point and minus z zero point * zm), so the requantization is one
 * rounding conversion and the saturating packs (which also clamp to [0, 255]). */
static inline __attribute__((always_inline)) void finish(const ep_t *e, __m256i a0, __m256i a1, long q, int k0,
                                                         int nk) {
    __m256 f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), e->m0, e->c0);
    __m256 f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), e->m1, e->c1);
    const long off = q * e->K + k0;
    if (e->z) {
        if (e->flags & F_Z_U8) {
            const uint8_t *z = (const uint8_t *)e->z + off;
            __m128i zb;
            if (nk == OB) {
                zb = _mm_loadu_si128((const __m128i *)z);
            } else {
                uint8_t t[16] = {0};
                memcpy(t, z, nk);
                zb = _mm_loadu_si128((const __m128i *)t);
            }
            f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(zb)), e->zm, f0);
            f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(zb, 8))), e->zm, f1);
        } else {
            const float *z = (const float *)e->z + off;
            if (nk == OB) {
                f0 = _mm256_fmadd_ps(_mm256_loadu_ps(z), e->zm, f0);
                f1 = _mm256_fmadd_ps(_mm256_loadu_ps(z + 8), e->zm, f1);
            } else {
                float t[16] = {0};
                memcpy(t, z, sizeof(float) * nk);
                f0 = _mm256_fmadd_ps(_mm256_loadu_ps(t), e->zm, f0);
                f1 = _mm256_fmadd_ps(_mm256_loadu_ps(t + 8), e->zm, f1);
            }
        }
    }
    if (e->clamp & C_LO) {
        f0 = _mm256_max_ps(f0, e->lo);
        f1 = _mm256_max_ps(f1, e->lo);
    }
    if (e->clamp & C_HI) {
        f0 = _mm256_min_ps(f0, e->hi);
        f1 = _mm256_min_ps(f1, e->hi);
    }
    if (e->flags & F_OUT_U8) {
        __m256i s = _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_cvtps_epi32(f0), _mm256_cvtps_epi32(f1)), 0xD8);
        __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        uint8_t *y = (uint8_t *)e->y + off;
        if (nk == OB) {
            _mm_storeu_si128((__m128i *)y, b);
        } else {
            uint8_t t[16];
            _mm_storeu_si128((__m128i *)t, b);
            memcpy(y, t, nk);
        }
    } else {
        float *y = (float *)e->y + off;
        if (nk == OB) {
            _mm256_storeu_ps(y, f0);
            _mm256_storeu_ps(y + 8, f1);
        } else {
            float t[16];
            _mm256_storeu_ps(t, f0);
            _mm256_storeu_ps(t + 8, f1);
            memcpy(y, t, sizeof(float) * nk);
        }
    }
}

/* one output block of one tile: the taps' input pointers tp[tap * MR + pixel] are the tile's */
static inline __attribute__((always_inline)) void block(const qconv_t *cv, const uint8_t *const *tp, long q0,
                                                        const int M, int kb, long pf) {
    const int *g = cv->g;
    const int K = g[G_K], C4 = g[G_C4], taps = g[G_KH] * g[G_KW];
    const int k0 = kb * OB, nk = K - k0 < OB ? K - k0 : OB;
    const int8_t *wk = cv->wp + (long)kb * taps * C4 * OB;
    const int n4 = C4 / 4;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a00, a01, a10, a11, a20, a21, a30, a31;
    { /* start from -corr: the zero point's contribution, subtracted once */
        const __m256i n0 = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_loadu_si256((const __m256i *)(cv->corr + k0)));
        const __m256i n1 = _mm256_sub_epi32(_mm256_setzero_si256(),
                                            _mm256_loadu_si256((const __m256i *)(cv->corr + k0 + 8)));
        a00 = a10 = a20 = a30 = n0;
        a01 = a11 = a21 = a31 = n1;
    }
    for (int tap = 0; tap < taps; tap++) {
        const uint8_t *p0 = tp[tap * MR], *p1 = tp[tap * MR + 1], *p2 = tp[tap * MR + 2], *p3 = tp[tap * MR + 3];
        const int8_t *wc = wk + (long)tap * C4 * OB;
        _Pragma("GCC unroll 4") /* measured 3 % faster than 2 */
        for (int c = 0; c < n4; c++, wc += 4 * OB) {
            __m256i w0 = _mm256_load_si256((const __m256i *)wc), w1 = _mm256_load_si256((const __m256i *)(wc + 32)), b, t;
            if (pf) _mm_prefetch((const char *)(wc + pf), _MM_HINT_T1);
#define MAC(P)                                                                                \
            if (M > P) {                                                                      \
                int32_t v;                                                                    \
                memcpy(&v, p##P + 4 * c, 4);                                                  \
                b = _mm256_set1_epi32(v);                                                     \
                t = _mm256_madd_epi16(_mm256_maddubs_epi16(b, w0), ones);                     \
                a##P##0 = _mm256_add_epi32(a##P##0, t);                                       \
                t = _mm256_madd_epi16(_mm256_maddubs_epi16(b, w1), ones);                     \
                a##P##1 = _mm256_add_epi32(a##P##1, t);                                       \
            }
            MAC(0) MAC(1) MAC(2) MAC(3)
#undef MAC
        }
    }
    const ep_t e = {_mm256_loadu_ps(cv->scale + k0), _mm256_loadu_ps(cv->scale + k0 + 8),
                    _mm256_loadu_ps(cv->bias + k0), _mm256_loadu_ps(cv->bias + k0 + 8),
                    _mm256_set1_ps(cv->q[Q_LO]), _mm256_set1_ps(cv->q[Q_HI]), _mm256_set1_ps(cv->q[Q_ZS]),
                    cv->z, cv->y, K, cv->flags, cv->clamp};
#define OUT(P) if (M > P) finish(&e, a##P##0, a##P##1, q0 + P, k0, nk);
    OUT(0) OUT(1) OUT(2) OUT(3)
#undef OUT
}

/* the output blocks ga .. gb-1 of one tile of M pixels: each tap's input pointers are found once
 * for all blocks (a tap in the padding reads the zero-point vector). first: the thread's first
 * tile of the group, which also prefetches the next group's weights into L2 (a line per step). */
static inline __attribute__((always_inline)) void tile(const qconv_t *cv, long q0, const int M, int ga, int gb,
                                                       int first, int kg, int KB, const int inside) {
    const int *g = cv->g;
    const int H = g[G_H], W = g[G_W], KH = g[G_KH], KW = g[G_KW], CS = g[G_CS], DH = g[G_DH], DW = g[G_DW];
    const int *pq = cv->pix + 3 * q0; /* read in place: a copy in a local array costs store-forwarding stalls */
    const uint8_t *tp[MAX_TAPS * MR];
    for (int kh = 0, tap = 0; kh < KH; kh++) {
        for (int kw = 0; kw < KW; kw++, tap++) {
            for (int p = 0; p < MR; p++) {
                const uint8_t *ptr = cv->zero;
                if (p < M) {
                    int ih = pq[3 * p + 1] + kh * DH, iw = pq[3 * p + 2] + kw * DW;
                    if (inside || (ih >= 0 && ih < H && iw >= 0 && iw < W))
                        ptr = cv->x + (((long)pq[3 * p] * H + ih) * W + iw) * CS;
                }
                tp[tap * MR + p] = ptr;
            }
        }
    }
    for (int kb = ga; kb < gb; kb++) {
        if (first && kb + kg < KB)
            block(cv, tp, q0, M, kb, (long)kg * g[G_KH] * g[G_KW] * g[G_C4] * OB);
        else
            block(cv, tp, q0, M, kb, 0);
    }
}

/* every tap of the tile's pixels falls inside the image (no padding test per tap: measured 7-13 %
 * of the 3x3 layers' time) */
static int tile_inside(const qconv_t *cv, long q0, int M) {
    const int *g = cv->g;
    const int *pq = cv->pix + 3 * q0;
    const int dh = (g[G_KH] - 1) * g[G_DH], dw = (g[G_KW] - 1) * g[G_DW];
    for (int p = 0; p < M; p++, pq += 3)
        if (pq[1] < 0 || pq[1] + dh >= g[G_H] || pq[2] < 0 || pq[2] + dw >= g[G_W]) return 0;
    return 1;
}

#define RUN(M) (inside ? tile(cv, q0, M, ga, gb, first, kg, KB, 1) : tile(cv, q0, M, ga, gb, first, kg, KB, 0))

static void run_tile(const qconv_t *cv, long t, int ga, int gb, int first, int kg, int KB) {
    const long q0 = t * cv->base + (t < cv->extra ? t : cv->extra);
    const int M = (int)(cv->base + (t < cv->extra));
    const int inside = tile_inside(cv, q0, M < 4 ? M : 4);
    switch (M) {
    case 4: RUN(4); break;
    case 3: RUN(3); break;
    case 2: RUN(2); break;
    default: RUN(1); break;
    }
}
#undef RUN

/* output blocks kb0 .. kb1-1 (of KB) for tiles t0 .. t1-1, in groups of kg blocks whose weights
 * stay in L2 over the tiles; the first tile of a group pulls the next group's weights into L2
 * (a line per step) so that group does not start with a wait on memory */
static void run_range(const qconv_t *cv, int kb0, int kb1, long t0, long t1, int kg, int KB) {
    for (int ga = kb0; ga < kb1; ga += kg) {
        int gb = ga + kg < kb1 ? ga + kg : kb1;
        for (long t = t0; t < t1; t++) run_tile(cv, t, ga, gb, t == t0, kg, KB);
    }
}

/* zero: at least C4 bytes of xz. pix: per output pixel (n, oh, ow order) its image, top input row
 * (oh*SH - PT) and left input column (ow*SW - PL), made once per shape by the caller. kg: output
 * blocks per group (a group's weights stay in L2 while all the thread's tiles run). clamp: C_LO /
 * C_HI, which of the bounds lo, hi to apply. Threads as in directconv.c: a fixed share of the output pixels each with many tiles,
 * else the output blocks are split. */
void tk_qconv_nhwc(const uint8_t *x, const int8_t *wp, const int32_t *corr, const float *scale, const float *bias,
                   const void *z, void *y, const uint8_t *zero, const int *g, const int *pix, const float *q, int kg,
                   int clamp, int flags) {
    const long P = (long)g[G_N] * g[G_HO] * g[G_WO];
    if (P < 1) return;
    const long T = (P + MR - 1) / MR;
    const int KB = (g[G_K] + OB - 1) / OB;
    qconv_t cv = {x, zero, wp, corr, scale, bias, q, z, y, g, pix, T, P / T, P % T, clamp, flags};
    if (kg < 1) kg = 1;
    if (T >= 8L * omp_get_max_threads()) {
        #pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            run_range(&cv, 0, KB, T * id / nt, T * (id + 1) / nt, kg, KB);
        }
    } else {
        #pragma omp parallel for schedule(static) if (KB > 1)
        for (int kb = 0; kb < KB; kb++) run_range(&cv, kb, kb + 1, 0, T, 1, KB);
    }
}

/* im2col geometry: a convolution over few channels as a 1x1 convolution over patches */
enum { I_N, I_C, I_H, I_W, I_KH, I_KW, I_SH, I_SW, I_DH, I_DW, I_PT, I_PL, I_HO, I_WO, I_CP, I_SN, I_SC, I_SH_, I_SW_,
       I_NG };

/* patch rows col[N * HO * WO][CP] of uint8 codes x[N][C][H][W] (element strides I_S*, any layout):
 * col[p][(c * KH + kh) * KW + kw] = x[n][c][ih][iw], or zp in the padding; bytes C*KH*KW .. CP-1
 * are zp too (their weights are 0). Rows of KW taps are copied 8 bytes at a time where the input
 * row is contiguous, fully inside the image and readable for 8 bytes. */
static void im2col_u8(const uint8_t *x, const int *ig, uint8_t *col, uint8_t zp) {
    const int N = ig[I_N], C = ig[I_C], H = ig[I_H], W = ig[I_W], KH = ig[I_KH], KW = ig[I_KW];
    const int SH = ig[I_SH], SW = ig[I_SW], DH = ig[I_DH], DW = ig[I_DW], PT = ig[I_PT], PL = ig[I_PL];
    const int HO = ig[I_HO], WO = ig[I_WO], CP = ig[I_CP];
    const long sn = ig[I_SN], sc = ig[I_SC], sh = ig[I_SH_], sw = ig[I_SW_];
    const int K = C * KH * KW, wide = sw == 1 && DW == 1 && KW <= 8;
    #pragma omp parallel for schedule(static) collapse(2)
    for (int n = 0; n < N; n++) {
        for (int oh = 0; oh < HO; oh++) {
            for (int ow = 0; ow < WO; ow++) {
                uint8_t *r = col + (((long)n * HO + oh) * WO + ow) * CP;
                const int iw0 = ow * SW - PL;
                int k = 0;
                for (int c = 0; c < C; c++) {
                    for (int kh = 0; kh < KH; kh++, k += KW) {
                        const int ih = oh * SH - PT + kh * DH;
                        const uint8_t *xr = x + n * sn + c * sc + ih * sh;
                        if (ih < 0 || ih >= H) {
                            memset(r + k, zp, (size_t)KW);
                        } else if (wide && iw0 >= 0 && iw0 + 8 <= W && k + 8 <= K) {
                            uint64_t v;
                            memcpy(&v, xr + iw0, 8);
                            memcpy(r + k, &v, 8); /* the bytes past KW belong to the rows written next */
                        } else {
                            for (int kw = 0; kw < KW; kw++) {
                                const int iw = iw0 + kw * DW;
                                r[k + kw] = iw >= 0 && iw < W ? xr[iw * sw] : zp;
                            }
                        }
                    }
                }
                if (CP > K) memset(r + K, zp, (size_t)(CP - K));
            }
        }
    }
}

/* im2col of x into col (a scratch buffer of N*HO*WO*CP bytes), then the 1x1 convolution over the
 * patch rows (g, pix: its geometry and pixel table, as tk_qconv_nhwc) */
void tk_qconv_im2col_nhwc(const uint8_t *x, const int *ig, uint8_t *col, int zp, const int8_t *wp, const int32_t *corr,
                          const float *scale, const float *bias, const void *z, void *y, const uint8_t *zero,
                          const int *g, const int *pix, const float *q, int kg, int clamp, int flags) {
    im2col_u8(x, ig, col, (uint8_t)zp);
    tk_qconv_nhwc(col, wp, corr, scale, bias, z, y, zero, g, pix, q, kg, clamp, flags);
}

/* the chain executor's entry (chain.c): the arguments as one int64 array, floats as their bits */
void tk_qconv_nhwc_packed(const int64_t *a) {
    tk_qconv_nhwc((const uint8_t *)a[0], (const int8_t *)a[1], (const int32_t *)a[2], (const float *)a[3],
                  (const float *)a[4], (const void *)a[5], (void *)a[6], (const uint8_t *)a[7], (const int *)a[8],
                  (const int *)a[9], (const float *)a[10], (int)a[11], (int)a[12], (int)a[13]);
}

void tk_qconv_im2col_nhwc_packed(const int64_t *a) {
    tk_qconv_im2col_nhwc((const uint8_t *)a[0], (const int *)a[1], (uint8_t *)a[2], (int)a[3], (const int8_t *)a[4],
                         (const int32_t *)a[5], (const float *)a[6], (const float *)a[7], (const void *)a[8], (void *)a[9],
                         (const uint8_t *)a[10], (const int *)a[11], (const int *)a[12], (const float *)a[13],
                         (int)a[14], (int)a[15], (int)a[16]);
}
