#ifndef SPARSETRAIN_CJPEGSHIM_H
#define SPARSETRAIN_CJPEGSHIM_H
// JPEG decoding through libjpeg-turbo. libjpeg reports errors by longjmp, which Swift cannot
// take part in; these functions catch them in C and return an error code with the library's
// message instead. Prefix: stjpeg_.
#include <stddef.h>

/// Reads the header: image width, height and number of components. Returns 0 on success.
int stjpeg_header(const unsigned char *data, size_t size, int *width, int *height, int *components,
                  char *message, size_t message_size);

/// Decodes to interleaved RGB (grayscale is expanded), scaled by 1/`scale_denom`
/// (1, 2, 4 or 8) with libjpeg's DCT scaling. `out` must hold width·height·3 bytes of the
/// scaled size, which is returned in `out_width`, `out_height`. Returns 0 on success, 3 when
/// the data ends inside the image (truncated file: the rest would be filled with gray).
int stjpeg_decode_rgb(const unsigned char *data, size_t size, int scale_denom, unsigned char *out,
                      size_t out_capacity, int *out_width, int *out_height, char *message,
                      size_t message_size);

#endif

#ifndef SPARSETRAIN_CJPEGSHIM_ENCODE
#define SPARSETRAIN_CJPEGSHIM_ENCODE
/// Encodes `pixels` (width·height·components bytes, components 1 or 3) as a baseline JPEG of
/// `quality` (1–100). On success returns 0 and a malloc'ed buffer in `*out` of `*out_size`
/// bytes, which the caller frees with `stjpeg_free`.
int stjpeg_encode(const unsigned char *pixels, int width, int height, int components, int quality,
                  unsigned char **out, unsigned long *out_size, char *message, size_t message_size);
void stjpeg_free(unsigned char *buffer);
#endif
