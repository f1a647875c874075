/* Winograd F(4x4, 3x3) and F(2x2, 5x5) transforms for NHWC float32 convolutions
 * (tensorkiln, CPU backend).
 *
 * A stride-1 convolution is computed tile by tile: every 6x6 input tile d (per channel)
 * becomes V = B^T d B, the 36 products V[i] x U[i] (U = G g G^T, the transformed weights) are
 * 36 matrix multiplications over channels (done by the caller with a BLAS batched GEMM), and
 * every 6x6 result m becomes the output tile A^T m A: 4x4 for a 3x3 kernel, 2x2 for a 5x5 one.
 * Both use the interpolation points 0, +-1, +-2, inf, so B is the same 6x6 matrix and the
 * input transform is shared; only the tile step (4 or 2) differs. Multiplications per output
 * drop from 9 to 2.25 (3x3) and from 25 to 9 (5x5) (Lavin & Gray 2015).
 *
 * Layouts: x is NHWC [N][H][W][C]; V is [36][T][C] and M is [36][T][K] for the tiles
 * t = t0 .. t0+T-1 of the whole tile grid (n, th, tw), row-major; y and z are NHWC
 * [N][Ho][Wo][K]. Channels are innermost, so every loop below runs over contiguous
 * channels and vectorizes; tiles are split across the OpenMP threads.
 */
#include <stddef.h>
#include <string.h>

#define CB 64 /* channels per inner block (stack arrays of 36 * CB floats) */

void tk_wino_input(const float *x, int N, int H, int W, int C, int pad_t, int pad_l, int step,
                   int tH, int tW, long t0, long T, float *V) {
    const long plane = (long)T * C;
    #pragma omp parallel for schedule(static)
    for (long tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * step - pad_t, x0 = (r % tW) * step - pad_l;
        const float *xn = x + (long)n * H * W * C;
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
                        memcpy(d[i][j], xn + ((long)yy * W + xx) * C + c0, sizeof(float) * cb);
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
            /* V = w B (over columns), stored at V[i*6+j][tt][c] */
            for (int i = 0; i < 6; i++) {
                float *out = V + (long)(i * 6) * plane + tt * C + c0;
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

/* F(4x4, 3x3) output transform; act: 0 none, 1 relu, 2 clip(lo, hi) */
void tk_wino43_output(const float *M, int N, int Ho, int Wo, int K, int tH, int tW, long t0, long T,
                      const float *bias, const float *z, int act, float lo, float hi, float *y) {
    const long plane = (long)T * K;
    #pragma omp parallel for schedule(static)
    for (long tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * 4, x0 = (r % tW) * 4;
        for (int k0 = 0; k0 < K; k0 += CB) {
            int kb = K - k0 < CB ? K - k0 : CB;
            float w[4][6][CB];
            /* w = A^T m (over rows) */
            for (int j = 0; j < 6; j++) {
                const float *m = M + (long)j * plane + tt * K + k0;
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
                    float b = bias ? bias[k0 + c] : 0.f;
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

/* F(2x2, 5x5): A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]]; arguments as tk_wino43_output */
void tk_wino25_output(const float *M, int N, int Ho, int Wo, int K, int tH, int tW, long t0, long T,
                      const float *bias, const float *z, int act, float lo, float hi, float *y) {
    const long plane = (long)T * K;
    #pragma omp parallel for schedule(static)
    for (long tt = 0; tt < T; tt++) {
        long t = t0 + tt;
        int n = (int)(t / ((long)tH * tW));
        int r = (int)(t % ((long)tH * tW));
        int y0 = (r / tW) * 2, x0 = (r % tW) * 2;
        for (int k0 = 0; k0 < K; k0 += CB) {
            int kb = K - k0 < CB ? K - k0 : CB;
            float w[2][6][CB];
            for (int j = 0; j < 6; j++) {
                const float *m = M + (long)j * plane + tt * K + k0;
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
                    float b = bias ? bias[k0 + c] : 0.f;
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
