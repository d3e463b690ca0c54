import CConvKernels

/// Direct 3×3, stride-1, padding-1 convolution over channel-major activations (C, N, H, W),
/// with C kernels (`CConvKernels`) in two variants chosen at run time: AVX2 + FMA (blocks of 4
/// output channels × 3 vectors of 8 pixels in registers) and AVX-512 F + VL (blocks of 8 output
/// channels × 3 vectors of 16 pixels, for W % 16 == 0). It reads a zero-padded copy of the
/// input instead of an im2col matrix (9× smaller) and keeps the output block in registers across
/// all input channels, which beats im2col + sgemm for small channel counts.
///
/// Shapes: `xpad` is [Cin][count][H+2][W+2] (see `pad`), weights are packed per block of the
/// variant's output channels (see `packWeights`). Applies when W is a multiple of a supported
/// variant's vector and the number of output channels a multiple of its block (see `variant`).
public enum Conv3x3 {
    /// Whether this CPU runs variant `isa` (`.avx2`: AVX2 + FMA; `.avx512`: AVX-512 F + VL).
    public static func isSupported(_ isa: KernelISA) -> Bool {
        isa != .portable && stconv_isa_supported(Int32(isa.rawValue)) != 0
    }

    /// Whether this CPU runs any variant.
    public static let isAvailable: Bool = isSupported(.avx2)

    /// Output channels per register block of variant `isa`.
    public static func block(_ isa: KernelISA) -> Int { Int(stconv_block(Int32(isa.rawValue))) }

    /// Pixels per vector of variant `isa`: the width must be a multiple of it.
    public static func vector(_ isa: KernelISA) -> Int { Int(stconv_vector(Int32(isa.rawValue))) }

    /// Whether variant `isa` runs here and computes `outChannels` planes of width `width`.
    public static func applies(_ isa: KernelISA, outChannels: Int, width: Int) -> Bool {
        isSupported(isa) && width > 0 && width % vector(isa) == 0 && outChannels % block(isa) == 0
    }

    /// The widest variant, up to `widest`, that runs here and computes `outChannels` planes of
    /// width `width`; nil when none does.
    public static func variant(outChannels: Int, width: Int, widest: KernelISA = .best) -> KernelISA? {
        [KernelISA.avx512, .avx2].first {
            $0.rawValue <= widest.rawValue && applies($0, outChannels: outChannels, width: width)
        }
    }

    /// Whether a convolution producing `outChannels` planes of width `width` can run here.
    public static func supports(outChannels: Int, width: Int, widest: KernelISA = .best) -> Bool {
        variant(outChannels: outChannels, width: width, widest: widest) != nil
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

    /// Packs w[Cout][Cin][3][3] for `forward` of variant `isa` (Cout·Cin·9 floats, as
    /// [o/block][i][9][block]). `flipped`: the weights of the input gradient,
    /// w'[ci][co][kh][kw] = w[co][ci][2−kh][2−kw] (then Cin must be a multiple of the block).
    public static func packWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, flipped: Bool, isa: KernelISA,
        into packed: UnsafeMutablePointer<Float>
    ) {
        stconv_pack_weights(w, Int32(outChannels), Int32(inChannels), flipped ? 1 : 0, Int32(block(isa)), packed)
    }

    /// `y[o·yChannelStride + n·H·W + h·W + w] = Σ_{i,kh,kw} W[o][i][kh][kw] · xpad[i][n][h+kh][w+kw]`,
    /// `packed` from `packWeights` with the same `isa`.
    public static func forward(
        _ xpad: UnsafePointer<Float>, inChannels: Int, count: Int, height: Int, width: Int,
        packed: UnsafePointer<Float>, outChannels: Int, y: UnsafeMutablePointer<Float>, yChannelStride: Int,
        isa: KernelISA
    ) {
        precondition(applies(isa, outChannels: outChannels, width: width))
        stconv_forward(Int32(isa.rawValue), xpad, Int32(inChannels), Int32(count), Int32(height), Int32(width), packed,
                       Int32(outChannels), y, yChannelStride)
    }

    /// `dw[o][i][kh][kw] += Σ_{n,h,w} dy[o·dyChannelStride + n·H·W + h·W + w] · xpad[i][n][h+kh][w+kw]`.
    public static func weightGradient(
        _ xpad: UnsafePointer<Float>, inChannels: Int, count: Int, height: Int, width: Int,
        dy: UnsafePointer<Float>, dyChannelStride: Int, outChannels: Int, dw: UnsafeMutablePointer<Float>,
        isa: KernelISA
    ) {
        precondition(applies(isa, outChannels: outChannels, width: width))
        stconv_weight_gradient(Int32(isa.rawValue), xpad, Int32(inChannels), Int32(count), Int32(height), Int32(width), dy,
                               dyChannelStride, Int32(outChannels), dw)
    }

    // MARK: Small images (AVX-512)

    /// Whether the small-image kernels run here on `height`×`width` images computing
    /// `outChannels` planes: AVX-512, H·W divides 16 (4×4, 2×2, …: a vector holds whole images),
    /// output channels a multiple of 8. They read the input unpadded.
    public static func smallImagesApply(outChannels: Int, height: Int, width: Int, widest: KernelISA = .best) -> Bool {
        widest == .avx512 && isSupported(.avx512) && stconv_small_applies(Int32(height), Int32(width)) != 0
            && outChannels % block(.avx512) == 0
    }

    /// `forward` for small images from the unpadded input
    /// `x[i·xChannelStride + n·H·W + h·W + w]`; `packed` from `packWeights` with `.avx512`.
    public static func smallForward(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        packed: UnsafePointer<Float>, outChannels: Int, y: UnsafeMutablePointer<Float>, yChannelStride: Int
    ) {
        precondition(smallImagesApply(outChannels: outChannels, height: height, width: width, widest: .avx512))
        stconv_small_forward(x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width), packed,
                             Int32(outChannels), y, yChannelStride)
    }

    /// `weightGradient` for small images from the unpadded input (see `smallForward`).
    public static func smallWeightGradient(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        dy: UnsafePointer<Float>, dyChannelStride: Int, outChannels: Int, dw: UnsafeMutablePointer<Float>
    ) {
        precondition(smallImagesApply(outChannels: outChannels, height: height, width: width, widest: .avx512))
        stconv_small_weight_gradient(x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width),
                                     dy, dyChannelStride, Int32(outChannels), dw)
    }
}
