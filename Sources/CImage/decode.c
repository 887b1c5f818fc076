// JPEG through TurboJPEG, PNG through libpng's simplified API, both to 8-bit RGB.

#include "ohimage.h"
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

static int fail(char *error, size_t error_size, const char *what, const char *detail) {
    snprintf(error, error_size, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static int decode_jpeg(const uint8_t *data, size_t size, uint8_t **rgb, int *width, int *height, char *error, size_t error_size) {
    tjhandle tj = tjInitDecompress();
    if (!tj) return fail(error, error_size, "cannot start the JPEG decoder", NULL);
    int w = 0, h = 0, subsampling = 0, colorspace = 0;
    if (tjDecompressHeader3(tj, data, (unsigned long)size, &w, &h, &subsampling, &colorspace) != 0 || w <= 0 || h <= 0) {
        int r = fail(error, error_size, "not a readable JPEG", tjGetErrorStr2(tj));
        tjDestroy(tj);
        return r;
    }
    const int cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
    const size_t pixels = (size_t)w * (size_t)h;
    uint8_t *buffer = malloc(pixels * (cmyk ? 4 : 3));
    if (!buffer) {
        tjDestroy(tj);
        return fail(error, error_size, "out of memory decoding a JPEG", NULL);
    }
    // TJFLAG_ACCURATEDCT: libjpeg's default islow IDCT, as Pillow decodes.
    if (tjDecompress2(tj, data, (unsigned long)size, buffer, w, 0, h, cmyk ? TJPF_CMYK : TJPF_RGB, TJFLAG_ACCURATEDCT) != 0) {
        // Warnings too (a premature end of the data leaves grey rows): Pillow refuses truncated
        // files unless told to load them.
        int r = fail(error, error_size, "corrupt or truncated JPEG", tjGetErrorStr2(tj));
        free(buffer);
        tjDestroy(tj);
        return r;
    }
    tjDestroy(tj);
    if (cmyk) {
        // Adobe's CMYK JPEGs store the inks inverted, as Pillow reads them: R = C K / 255.
        for (size_t i = 0; i < pixels; i++) {
            const unsigned c = buffer[4 * i], m = buffer[4 * i + 1], y = buffer[4 * i + 2], k = buffer[4 * i + 3];
            buffer[3 * i] = (uint8_t)((c * k + 127) / 255);
            buffer[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
            buffer[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
        }
    }
    *rgb = buffer; *width = w; *height = h;
    return 0;
}

static int decode_png(const uint8_t *data, size_t size, uint8_t **rgb, int *width, int *height, char *error, size_t error_size) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, data, size)) return fail(error, error_size, "not a readable PNG", image.message);
    // Read with alpha and drop it, as Pillow's convert("RGB") does (asking libpng for RGB would
    // composite the pixels onto a background instead).
    image.format = PNG_FORMAT_RGBA;
    const size_t bytes = PNG_IMAGE_SIZE(image);
    uint8_t *buffer = malloc(bytes);
    if (!buffer) {
        png_image_free(&image);
        return fail(error, error_size, "out of memory decoding a PNG", NULL);
    }
    if (!png_image_finish_read(&image, NULL, buffer, 0, NULL)) {
        int r = fail(error, error_size, "corrupt or truncated PNG", image.message);
        free(buffer);
        png_image_free(&image);
        return r;
    }
    const size_t pixels = (size_t)image.width * image.height;
    for (size_t i = 0; i < pixels; i++) {
        buffer[3 * i] = buffer[4 * i];
        buffer[3 * i + 1] = buffer[4 * i + 1];
        buffer[3 * i + 2] = buffer[4 * i + 2];
    }
    *rgb = buffer; *width = (int)image.width; *height = (int)image.height;
    return 0;
}

int ohimage_decode(const uint8_t *data, size_t size, uint8_t **rgb, int *width, int *height, char *error, size_t error_size) {
    static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return decode_jpeg(data, size, rgb, width, height, error, error_size);
    if (size >= 8 && memcmp(data, png_signature, 8) == 0) return decode_png(data, size, rgb, width, height, error, error_size);
    return fail(error, error_size, size == 0 ? "empty file" : "neither a JPEG nor a PNG", NULL);
}

void ohimage_free(uint8_t *rgb) { free(rgb); }
