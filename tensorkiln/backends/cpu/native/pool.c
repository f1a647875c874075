/* Max pooling over NHWC float32 (tensorkiln, CPU backend).
 *
 * y[n][oy][ox][c] = max over the window rows oy*sh - pt + ky*dh and columns ox*sw - pl + kx*dw
 * that fall inside the input (ONNX semantics: padding never wins; ceil_mode's extra windows are
 * clipped the same way). Channels are innermost and contiguous: 32 channels at a time stay in
 * four AVX2 registers over the whole window and are stored once (a read-modify-write of the
 * output per window tap was 2x slower on GoogLeNet's pools); output rows are split across the
 * OpenMP threads.
 */
#include <immintrin.h>
#include <math.h>

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

void tk_maxpool2d_nhwc(const float *x, int N, int H, int W, int C, int kh, int kw, int sh, int sw,
                       int pt, int pl, int dh, int dw, int Ho, int Wo, float *y) {
    long rows = (long)N * Ho;
    #pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int n = (int)(r / Ho), oy = (int)(r % Ho);
        const float *xn = x + (long)n * H * W * C;
        int y0 = oy * sh - pt;
        for (int ox = 0; ox < Wo; ox++) {
            float *dst = y + ((r * Wo) + ox) * (long)C;
            int x0 = ox * sw - pl;
            const float *src[64]; /* the window's taps inside the input (at most 64 used) */
            int nt = 0;
            for (int ky = 0; ky < kh; ky++) {
                int iy = y0 + ky * dh;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < kw; kx++) {
                    int ix = x0 + kx * dw;
                    if (ix < 0 || ix >= W) continue;
                    if (nt == 64) { /* a huge window: fold the taps so far into dst first */
                        max_taps(src, nt, C, dst);
                        src[0] = dst;
                        nt = 1;
                    }
                    src[nt++] = xn + ((long)iy * W + ix) * C;
                }
            }
            max_taps(src, nt, C, dst);
        }
    }
}
