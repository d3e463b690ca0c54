import CConvKernels

/// Direct 3×3, stride-1, padding-1 convolution over channel-major activations (C, N, H, W),
/// with AVX2 + FMA kernels in C (`CConvKernels`). It reads a zero-padded copy of the input
/// instead of an im2col matrix (9× smaller) and keeps a 4-channel × 24-pixel output block in
/// registers across all input channels, which beats im2col + sgemm for small channel counts.
///
/// Shapes: `xpad` is [Cin][count][H+2][W+2] (see `pad`), weights are packed per block of 4
/// output channels (see `packWeights`). Applies when `isAvailable`, W % 8 == 0 and the number
/// of output channels is a multiple of 4 (see `supports`).
public enum Conv3x3 {
    /// Whether this CPU has AVX2 and FMA.
    public static let isAvailable: Bool = stconv_available() != 0

    /// Whether a convolution producing `outChannels` planes of width `width` can run here.
    public static func supports(outChannels: Int, width: Int) -> Bool {
        isAvailable && outChannels % 4 == 0 && width % 8 == 0 && width > 0
    }

    /// Floats of a padded copy of `count` images with `channels` planes of `height`×`width`.
    public static func paddedCount(channels: Int, count: Int, height: Int, width: Int) -> Int {
        channels * count * (height + 2) * (width + 2)
    }

    /// `xpad[c][n][h+1][w+1] = x[c·channelStride + n·H·W + h·W + w]`, zero border.
    public static func pad(
        _ x: UnsafePointer<Float>, channelStride: Int, channels: Int, count: Int, height: Int,
        width: Int, into xpad: UnsafeMutablePointer<Float>
    ) {
        stconv_pad(x, channelStride, Int32(channels), Int32(count), Int32(height), Int32(width), xpad)
    }

    /// Packs w[Cout][Cin][3][3] for `forward` (Cout·Cin·9 floats). `flipped`: the weights of the
    /// input gradient, w'[ci][co][kh][kw] = w[co][ci][2−kh][2−kw] (then Cin must be a multiple of 4).
    public static func packWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, flipped: Bool,
        into packed: UnsafeMutablePointer<Float>
    ) {
        stconv_pack_weights(w, Int32(outChannels), Int32(inChannels), flipped ? 1 : 0, packed)
    }

    /// `y[o·yChannelStride + n·H·W + h·W + w] = Σ_{i,kh,kw} W[o][i][kh][kw] · xpad[i][n][h+kh][w+kw]`.
    public static func forward(
        _ xpad: UnsafePointer<Float>, inChannels: Int, count: Int, height: Int, width: Int,
        packed: UnsafePointer<Float>, outChannels: Int, y: UnsafeMutablePointer<Float>, yChannelStride: Int
    ) {
        precondition(supports(outChannels: outChannels, width: width))
        stconv_forward(xpad, Int32(inChannels), Int32(count), Int32(height), Int32(width), packed,
                       Int32(outChannels), y, yChannelStride)
    }

    /// `dw[o][i][kh][kw] += Σ_{n,h,w} dy[o·dyChannelStride + n·H·W + h·W + w] · xpad[i][n][h+kh][w+kw]`.
    public static func weightGradient(
        _ xpad: UnsafePointer<Float>, inChannels: Int, count: Int, height: Int, width: Int,
        dy: UnsafePointer<Float>, dyChannelStride: Int, outChannels: Int, dw: UnsafeMutablePointer<Float>
    ) {
        precondition(supports(outChannels: outChannels, width: width))
        stconv_weight_gradient(xpad, Int32(inChannels), Int32(count), Int32(height), Int32(width), dy,
                               dyChannelStride, Int32(outChannels), dw)
    }
}
