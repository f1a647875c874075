/* Max pooling over NHWC float32 (tensorkiln, CPU backend).
 *
 * y[n][oy][ox][c] = max over the window rows oy*sh - pt + ky*dh and columns ox*sw - pl + kx*dw
 * that fall inside the input (ONNX semantics: padding never wins; ceil_mode's extra windows are
 * clipped the same way). Channels are innermost and contiguous, so the inner loop is a vector
 * max over C; output rows are split across the OpenMP threads.
 */
#include <math.h>

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
            int first = 1;
            for (int ky = 0; ky < kh; ky++) {
                int iy = y0 + ky * dh;
                if (iy < 0 || iy >= H) continue;
                for (int kx = 0; kx < kw; kx++) {
                    int ix = x0 + kx * dw;
                    if (ix < 0 || ix >= W) continue;
                    const float *src = xn + ((long)iy * W + ix) * C;
                    if (first) {
                        for (int c = 0; c < C; c++) dst[c] = src[c];
                        first = 0;
                    } else {
                        for (int c = 0; c < C; c++) dst[c] = src[c] > dst[c] ? src[c] : dst[c];
                    }
                }
            }
            if (first) {
                for (int c = 0; c < C; c++) dst[c] = -INFINITY; /* a window entirely in padding */
            }
        }
    }
}
