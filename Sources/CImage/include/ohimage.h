#ifndef OHIMAGE_H
#define OHIMAGE_H
#include <stddef.h>
#include <stdint.h>

// Images in: JPEG and PNG decoded by the libraries made for them (libjpeg-turbo's TurboJPEG API,
// libpng's simplified API) to 8-bit RGB, and the transforms of the authors' training and test
// pipelines as torchvision computes them on PIL images (Pillow's bilinear resampling, crops,
// flips), then scaled and normalised into float CHW. Plain C for the Swift side
// (OrthoHashTraining/Images.swift); no stable API.

/// Decodes a JPEG or a PNG (told apart by their signatures) into 8-bit RGB, rows of 3 bytes a
/// pixel. As Pillow's convert("RGB"): grey is repeated, alpha dropped, palettes expanded, 16-bit
/// samples reduced; CMYK and YCCK JPEGs (Adobe's inverted CMYK) converted with R = C K / 255.
/// Returns 0 and sets *rgb (ohimage_free it), *width and *height; else nonzero and a message in
/// `error` (a truncated or corrupt file, an unknown format).
int ohimage_decode(const uint8_t *data, size_t size, uint8_t **rgb, int *width, int *height, char *error, size_t error_size);
void ohimage_free(uint8_t *rgb);

/// Pillow's Image.resize(..., BILINEAR) of an RGB image (rows `stride` bytes apart, e.g. a
/// crop of a larger image) to out_width x out_height: separable triangle-filter passes with
/// the support widened by the scale when shrinking (antialiasing), horizontal then vertical,
/// each rounded to 8 bits with Pillow's 22-bit fixed-point coefficients: the same bytes as
/// Pillow. `scratch` holds at least ohimage_resize_scratch_size(...) bytes. An image of the
/// output's size is copied.
size_t ohimage_resize_scratch_size(int width, int height, int out_width, int out_height);
void ohimage_resize_bilinear(uint8_t *out, int out_width, int out_height, const uint8_t *in, int width, int height,
                             size_t stride, uint8_t *scratch);

/// out (3, h, w) floats = (rgb / 255 - mean[c]) / std[c] of an RGB image (rows `stride` bytes
/// apart), mirrored left to right when `flip`.
void ohimage_to_chw(float *out, const uint8_t *rgb, int width, int height, size_t stride, int flip,
                    const float mean[3], const float std[3]);

#endif
