#include "CJPEGShim.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

struct stjpeg_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char *message;
    size_t message_size;
    int truncated;
};

static void stjpeg_fail(j_common_ptr cinfo) {
    struct stjpeg_error *err = (struct stjpeg_error *)cinfo->err;
    if (err->message && err->message_size > 0) {
        char text[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, text);
        snprintf(err->message, err->message_size, "%s", text);
    }
    longjmp(err->jump, 1);
}

/* Warnings are not printed. Data that ends before the image does (libjpeg pads it with gray
   and warns JWRN_JPEG_EOF) is remembered, with its message, so the caller can refuse it; other
   warnings (e.g. extraneous bytes before a marker) leave a usable image. */
static void stjpeg_warn(j_common_ptr cinfo, int level) {
    struct stjpeg_error *err = (struct stjpeg_error *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF && !err->truncated) {
        err->truncated = 1;
        if (err->message && err->message_size > 0) {
            char text[JMSG_LENGTH_MAX];
            (*cinfo->err->format_message)(cinfo, text);
            snprintf(err->message, err->message_size, "truncated image data (%s)", text);
        }
    }
}

/* Routes libjpeg's errors to `err` (message copied, then longjmp) and its warnings to stjpeg_warn. */
static struct jpeg_error_mgr *stjpeg_errors(struct stjpeg_error *err, char *message, size_t message_size) {
    jpeg_std_error(&err->base);
    err->base.error_exit = stjpeg_fail;
    err->base.emit_message = stjpeg_warn;
    err->message = message;
    err->message_size = message_size;
    err->truncated = 0;
    return &err->base;
}

int stjpeg_header(const unsigned char *data, size_t size, int *width, int *height, int *components,
                  char *message, size_t message_size) {
    struct jpeg_decompress_struct cinfo;
    struct stjpeg_error err;
    cinfo.err = stjpeg_errors(&err, message, message_size);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    *components = cinfo.num_components;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

int stjpeg_decode_rgb(const unsigned char *data, size_t size, int scale_denom, unsigned char *out,
                      size_t out_capacity, int *out_width, int *out_height, char *message,
                      size_t message_size) {
    struct jpeg_decompress_struct cinfo;
    struct stjpeg_error err;
    cinfo.err = stjpeg_errors(&err, message, message_size);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)(scale_denom > 0 ? scale_denom : 1);
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * 3;
    if (cinfo.output_components != 3 || stride * cinfo.output_height > out_capacity) {
        if (message && message_size > 0) snprintf(message, message_size, "output buffer too small");
        jpeg_destroy_decompress(&cinfo);
        return 2;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    *out_width = (int)cinfo.output_width;
    *out_height = (int)cinfo.output_height;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return err.truncated ? 3 : 0;
}

int stjpeg_encode(const unsigned char *pixels, int width, int height, int components, int quality,
                  unsigned char **out, unsigned long *out_size, char *message, size_t message_size) {
    struct jpeg_compress_struct cinfo;
    struct stjpeg_error err;
    *out = NULL;
    *out_size = 0;
    cinfo.err = stjpeg_errors(&err, message, message_size);
    if (setjmp(err.jump)) {
        jpeg_destroy_compress(&cinfo);
        if (*out) { free(*out); *out = NULL; }
        return 1;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, out, out_size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = components;
    cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = (size_t)width * (size_t)components;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + stride * cinfo.next_scanline);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    return 0;
}

void stjpeg_free(unsigned char *buffer) { free(buffer); }
