// Pillow's bilinear resampling (libImaging/Resample.c, Pillow 7 to 11) and the conversion to
// normalised float CHW.
//
// Pillow resizes in two separable passes over 8-bit images, horizontal then vertical, each output
// sample a weighted sum of the inputs under a triangle filter of support 1 x max(1, scale)
// centred at (x + 0.5) scale, the weights normalised, turned into 22-bit fixed point and
// rounded, and the sum rounded to 8 bits and clamped. The intermediate image is 8-bit too. Only
// the rows the vertical pass reads are resampled horizontally.

#include "ohimage.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static double triangle(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full box [0, in_size): bounds (min,
// count) and `ksize` fixed-point coefficients per output sample. Returns ksize.
static int coefficients(int in_size, int out_size, int *bounds, int32_t *kk, double *scratch) {
    const double scale = (double)in_size / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 1.0 * filterscale;
    const int ksize = (int)ceil(support) * 2 + 1;
    for (int xx = 0; xx < out_size; xx++) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = scratch;
        double ww = 0.0;
        int x;
        for (x = 0; x < xmax; x++) {
            const double w = triangle((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        int32_t *kf = kk + (size_t)xx * ksize;
        for (x = 0; x < ksize; x++) {
            const double v = x < xmax ? k[x] : 0.0;
            kf[x] = (int32_t)(v < 0 ? v * (1 << PRECISION_BITS) - 0.5 : v * (1 << PRECISION_BITS) + 0.5);
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    return ksize;
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int ksize_of(int in_size, int out_size) {
    const double scale = (double)in_size / out_size;
    return (int)ceil(scale < 1.0 ? 1.0 : scale) * 2 + 1;
}

size_t ohimage_resize_scratch_size(int width, int height, int out_width, int out_height) {
    const size_t kh = (size_t)ksize_of(width, out_width), kv = (size_t)ksize_of(height, out_height);
    const size_t longest = (size_t)(kh > kv ? kh : kv);
    return (size_t)out_width * kh * 4 + (size_t)out_height * kv * 4 + (size_t)(out_width + out_height) * 2 * sizeof(int)
           + longest * sizeof(double) + (size_t)out_width * height * 3 + 64;
}

void ohimage_resize_bilinear(uint8_t *out, int out_width, int out_height, const uint8_t *in, int width, int height,
                             size_t stride, uint8_t *scratch) {
    if (out_width == width && out_height == height) {
        for (int y = 0; y < height; y++) memcpy(out + (size_t)y * width * 3, in + (size_t)y * stride, (size_t)width * 3);
        return;
    }
    // Carve the scratch space: coefficients and bounds of both passes, the filter's doubles, the
    // intermediate image (out_width x the rows the vertical pass reads).
    uint8_t *p = scratch;
    const int kh = ksize_of(width, out_width), kv = ksize_of(height, out_height);
    int32_t *kk_h = (int32_t *)p; p += (size_t)out_width * kh * 4;
    int32_t *kk_v = (int32_t *)p; p += (size_t)out_height * kv * 4;
    int *bounds_h = (int *)p; p += (size_t)out_width * 2 * sizeof(int);
    int *bounds_v = (int *)p; p += (size_t)out_height * 2 * sizeof(int);
    p = (uint8_t *)(((uintptr_t)p + 7) & ~(uintptr_t)7);
    double *filter = (double *)p; p += (size_t)(kh > kv ? kh : kv) * sizeof(double);
    uint8_t *temp = p;
    coefficients(width, out_width, bounds_h, kk_h, filter);
    coefficients(height, out_height, bounds_v, kk_v, filter);
    const int need_horizontal = out_width != width, need_vertical = out_height != height;
    const uint8_t *src = in;
    size_t src_stride = stride;
    int first_row = 0;
    if (need_horizontal) {
        // Only the rows [first, last) the vertical pass reads.
        const int first = need_vertical ? bounds_v[0] : 0;
        const int last = need_vertical ? bounds_v[2 * out_height - 2] + bounds_v[2 * out_height - 1] : height;
        for (int y = first; y < last; y++) {
            const uint8_t *row = in + (size_t)y * stride;
            uint8_t *dst = temp + (size_t)(y - first) * out_width * 3;
            for (int xx = 0; xx < out_width; xx++) {
                const int xmin = bounds_h[2 * xx], xmax = bounds_h[2 * xx + 1];
                const int32_t *k = kk_h + (size_t)xx * kh;
                int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
                for (int x = 0; x < xmax; x++) {
                    const uint8_t *px = row + (size_t)(x + xmin) * 3;
                    s0 += px[0] * k[x]; s1 += px[1] * k[x]; s2 += px[2] * k[x];
                }
                dst[3 * xx] = clip8(s0); dst[3 * xx + 1] = clip8(s1); dst[3 * xx + 2] = clip8(s2);
            }
        }
        src = temp; src_stride = (size_t)out_width * 3; first_row = first;
    }
    if (!need_vertical) {
        for (int y = 0; y < out_height; y++) memcpy(out + (size_t)y * out_width * 3, src + (size_t)y * src_stride, (size_t)out_width * 3);
        return;
    }
    for (int yy = 0; yy < out_height; yy++) {
        const int ymin = bounds_v[2 * yy] - first_row, ymax = bounds_v[2 * yy + 1];
        const int32_t *k = kk_v + (size_t)yy * kv;
        uint8_t *dst = out + (size_t)yy * out_width * 3;
        for (int xx = 0; xx < out_width * 3; xx++) {
            int32_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) s += src[(size_t)(y + ymin) * src_stride + xx] * k[y];
            dst[xx] = clip8(s);
        }
    }
}

void ohimage_to_chw(float *out, const uint8_t *rgb, int width, int height, size_t stride, int flip,
                    const float mean[3], const float std[3]) {
    const size_t plane = (size_t)width * height;
    for (int c = 0; c < 3; c++) {
        // torchvision: ToTensor divides by 255, Normalize subtracts the mean and divides by std.
        const float m = mean[c], s = std[c];
        float *o = out + c * plane;
        for (int y = 0; y < height; y++) {
            const uint8_t *row = rgb + (size_t)y * stride;
            for (int x = 0; x < width; x++) {
                const int sx = flip ? width - 1 - x : x;
                o[(size_t)y * width + x] = ((float)row[3 * sx + c] / 255.0f - m) / s;
            }
        }
    }
}
