/* Max pooling over NHWC float32 and uint8 (tensorkiln, CPU backend).
 *
 * y[n][oy][ox][c] = max over the window rows oy*sh - pt + ky*dh and columns ox*sw - pl + kx*dw
 * that fall inside the input (ONNX semantics: padding never wins; ceil_mode's extra windows are
 * clipped the same way). Channels are innermost and contiguous: 32 channels at a time stay in
 * four AVX2 registers over the whole window and are stored once (a read-modify-write of the
 * output per window tap was 2x slower on GoogLeNet's pools); output rows are split across the
 * OpenMP threads. uint8 (quantized codes: max commutes with a positive-scale quantization) keeps
 * 32 channels in one register; a window entirely in padding gives code 0.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

typedef void (*taps_fn)(const void *const *src, int nt, int C, void *dst);

/* dst[c] = max over the nt taps src[t][c] (-inf when nt is 0); dst may be src[0] */
static void max_taps(const float *const *src, int nt, int C, float *dst) {
    int c = 0;
    if (nt == 0) {
        for (; c < C; c++) dst[c] = -INFINITY; /* a window entirely in padding */
        return;
    }
    for (; c + 32 <= C; c += 32) {
        __m256 a0 = _mm256_loadu_ps(src[0] + c), a1 = _mm256_loadu_ps(src[0] + c + 8);
        __m256 a2 = _mm256_loadu_ps(src[0] + c + 16), a3 = _mm256_loadu_ps(src[0] + c + 24);
        for (int t = 1; t < nt; t++) {
            const float *s = src[t] + c;
            a0 = _mm256_max_ps(a0, _mm256_loadu_ps(s));
            a1 = _mm256_max_ps(a1, _mm256_loadu_ps(s + 8));
            a2 = _mm256_max_ps(a2, _mm256_loadu_ps(s + 16));
            a3 = _mm256_max_ps(a3, _mm256_loadu_ps(s + 24));
        }
        _mm256_storeu_ps(dst + c, a0);
        _mm256_storeu_ps(dst + c + 8, a1);
        _mm256_storeu_ps(dst + c + 16, a2);
        _mm256_storeu_ps(dst + c + 24, a3);
    }
    for (; c + 8 <= C; c += 8) {
        __m256 a = _mm256_loadu_ps(src[0] + c);
        for (int t = 1; t < nt; t++) a = _mm256_max_ps(a, _mm256_loadu_ps(src[t] + c));
        _mm256_storeu_ps(dst + c, a);
    }
    for (; c < C; c++) {
        float m = src[0][c];
        for (int t = 1; t < nt; t++) m = src[t][c] > m ? src[t][c] : m;
        dst[c] = m;
    }
}

/* the uint8 version of max_taps */
static void max_taps_u8(const void *const *srcv, int nt, int C, void *dstv) {
    const uint8_t *const *src = (const uint8_t *const *)srcv;
    uint8_t *dst = (uint8_t *)dstv;
    int c = 0;
    if (nt == 0) {
        for (; c < C; c++) dst[c] = 0;
        return;
    }
    for (; c + 32 <= C; c += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src[0] + c));
        for (int t = 1; t < nt; t++) a = _mm256_max_epu8(a, _mm256_loadu_si256((const __m256i *)(src[t] + c)));
        _mm256_storeu_si256((__m256i *)(dst + c), a);
    }
    for (; c < C; c++) {
        uint8_t m = src[0][c];
        for (int t = 1; t < nt; t++) m = src[t][c] > m ? src[t][c] : m;
        dst[c] = m;
    }
}

static void max_taps_f32(const void *const *src, int nt, int C, void *dst) {
    max_taps((const float *const *)src, nt, C, (float *)dst);
}

/* the window loop, for elements of esz bytes */
static void pool_nhwc(const char *x, int esz, taps_fn taps, int N, int H, int W, int C, int kh, int kw, int sh,
                      int sw, int pt, int pl, int dh, int dw, int Ho, int Wo, char *y) {
    long rows = (long)N * Ho;
    const long pix = (long)C * esz; /* bytes per pixel */
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int n = (int)(r / Ho), oy = (int)(r % Ho);
        const char *xn = x + (long)n * H * W * pix;
        int y0 = oy * sh - pt;
        for (int ox = 0; ox < Wo; ox++) {
            char *dst = y + ((r * Wo) + ox) * pix;
            int x0 = ox * sw - pl;
            const void *src[64]; /* the window's taps inside the input (at most 64 used) */
            int nt = 0;
            for (int ky = 0; ky < kh; ky++) {
                int iy = y0 + ky * dh;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < kw; kx++) {
                    int ix = x0 + kx * dw;
                    if (ix < 0 || ix >= W) continue;
                    if (nt == 64) { /* a huge window: fold the taps so far into dst first */
                        taps(src, nt, C, dst);
                        src[0] = dst;
                        nt = 1;
                    }
                    src[nt++] = xn + ((long)iy * W + ix) * pix;
                }
            }
            taps(src, nt, C, dst);
        }
    }
}

void tk_maxpool2d_nhwc(const float *x, int N, int H, int W, int C, int kh, int kw, int sh, int sw,
                       int pt, int pl, int dh, int dw, int Ho, int Wo, float *y) {
    pool_nhwc((const char *)x, 4, max_taps_f32, N, H, W, C, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, (char *)y);
}

void tk_maxpool2d_nhwc_u8(const uint8_t *x, int N, int H, int W, int C, int kh, int kw, int sh, int sw,
                          int pt, int pl, int dh, int dw, int Ho, int Wo, uint8_t *y) {
    pool_nhwc((const char *)x, 1, max_taps_u8, N, H, W, C, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo, (char *)y);
}

/* global average pool of float32 NHWC: y[n][c] = mean over the HW pixels of x[n][p][c]; float
 * sums over runs of 64 pixels, added in double */
void tk_gap_nhwc_f32(const float *x, float *y, int N, int HW, int C) {
    #pragma omp parallel for schedule(static) if ((long)N * HW * C > 65536)
    for (int n = 0; n < N; n++) {
        for (int c0 = 0; c0 < C; c0 += 64) {
            const int nc = C - c0 < 64 ? C - c0 : 64;
            double tot[64] = {0};
            for (int p0 = 0; p0 < HW; p0 += 64) {
                const int p1 = p0 + 64 < HW ? p0 + 64 : HW;
                float acc[64] = {0};
                for (int p = p0; p < p1; p++) {
                    const float *row = x + ((long)n * HW + p) * C + c0;
                    int c = 0;
                    for (; c + 8 <= nc; c += 8)
                        _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), _mm256_loadu_ps(row + c)));
                    for (; c < nc; c++) acc[c] += row[c];
                }
                for (int c = 0; c < nc; c++) tot[c] += acc[c];
            }
            for (int c = 0; c < nc; c++) y[(long)n * C + c0 + c] = (float)(tot[c] / HW);
        }
    }
}

/* the chain executor's entry (chain.c): the arguments as one int64 array, floats as their bits */
void tk_maxpool2d_nhwc_packed(const int64_t *a) {
    tk_maxpool2d_nhwc((const float *)a[0], (int)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6], (int)a[7],
                      (int)a[8], (int)a[9], (int)a[10], (int)a[11], (int)a[12], (int)a[13], (int)a[14], (float *)a[15]);
}

void tk_maxpool2d_nhwc_u8_packed(const int64_t *a) {
    tk_maxpool2d_nhwc_u8((const uint8_t *)a[0], (int)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5], (int)a[6],
                         (int)a[7], (int)a[8], (int)a[9], (int)a[10], (int)a[11], (int)a[12], (int)a[13], (int)a[14],
                         (uint8_t *)a[15]);
}

void tk_gap_nhwc_f32_packed(const int64_t *a) {
    tk_gap_nhwc_f32((const float *)a[0], (float *)a[1], (int)a[2], (int)a[3], (int)a[4]);
}
