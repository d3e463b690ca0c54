import CConvKernels

/// Winograd F(2×2, 3×3) for 3×3, stride-1, padding-1 convolutions over channel-major
/// activations (C, N, H, W): each image is cut into ⌈H/2⌉·⌈W/2⌉ tiles of 2×2 outputs, the
/// input windows, kernels and outputs are transformed (`winograd.h`), and the channel sums
/// become 16 GEMMs over all tiles of a chunk of images — 16 products per channel pair and tile
/// instead of the 36 of a direct or im2col pass. The input gradient is the same product with
/// the flipped, transposed kernels; the weight gradient transforms dY with the output
/// transform's adjoint and folds the 16 products `Z[ξ] = P[ξ]·V[ξ]ᵀ` back onto the 3×3 taps.
///
/// Transformed arrays hold their 16 positions `stride(_:)` floats apart. The per-chunk calls
/// run single-threaded GEMMs; callers split a batch among workers, each with its own scratch.
public enum Winograd {
    /// Tiles of `count` images of `height × width`.
    public static func tiles(count: Int, height: Int, width: Int) -> Int {
        count * ((height + 1) / 2) * ((width + 1) / 2)
    }

    /// Floats between the positions of a transformed array of `floats` per position.
    public static func stride(_ floats: Int) -> Int { stwino_stride(floats) }

    /// Floats of transformed kernels (`transformWeights`) or of weight-gradient sums.
    public static func weightCount(outChannels: Int, inChannels: Int) -> Int { 16 * stride(outChannels * inChannels) }

    /// Floats of scratch a chunk needs: the transformed input and products (or transformed dY).
    public static func scratchCount(inChannels: Int, outChannels: Int, count: Int, height: Int, width: Int) -> Int {
        let t = tiles(count: count, height: height, width: width)
        return 16 * (stride(inChannels * t) + stride(outChannels * t))
    }

    /// Transformed kernels `u[ξ][o][i]` (`weightCount` floats) of weights
    /// `w[outChannels][inChannels][3][3]`, rows `rows` of u only; `flipped`: the input
    /// gradient's (`u[ξ][i][o]` from the kernel turned by 180°, rows i < inChannels).
    public static func transformWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, flipped: Bool, rows: Range<Int>? = nil,
        into u: UnsafeMutablePointer<Float>
    ) {
        let r = rows ?? 0..<(flipped ? inChannels : outChannels)
        stwino_weights(w, Int32(outChannels), Int32(inChannels), flipped ? 1 : 0, Int32(r.lowerBound), Int32(r.upperBound), u)
    }

    /// `y = W ⊛ x` for `count` images (3×3, stride 1, padding 1), with `u` from
    /// `transformWeights` (`outChannels × inChannels` per position). Plane c of image n is at
    /// `x + c·xChannelStride + n·H·W` (likewise y). Overwrites y.
    public static func forward(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        transformedWeights u: UnsafePointer<Float>, outChannels: Int,
        y: UnsafeMutablePointer<Float>, yChannelStride: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        let t = tiles(count: count, height: height, width: width)
        let sv = stride(inChannels * t), sm = stride(outChannels * t), su = stride(outChannels * inChannels)
        let v = scratch, m = scratch + 16 * sv
        stwino_input(x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width), v)
        for xi in 0..<16 {
            gemm(.none, .none, m: outChannels, n: t, k: inChannels, a: u + xi * su, lda: inChannels,
                 b: v + xi * sv, ldb: t, c: m + xi * sm, ldc: t)
        }
        stwino_output(m, Int32(outChannels), Int32(count), Int32(height), Int32(width), y, yChannelStride)
    }

    /// `z[ξ] += P[ξ] · V[ξ]ᵀ` (`weightCount` floats) for `count` images: P the transformed
    /// output gradient, V the transformed input. `finishWeightGradient` folds z (summed over
    /// chunks and workers) onto the taps.
    public static func accumulateWeightGradient(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        dy: UnsafePointer<Float>, dyChannelStride: Int, outChannels: Int,
        z: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
    ) {
        let t = tiles(count: count, height: height, width: width)
        let sv = stride(inChannels * t), sp = stride(outChannels * t), sz = stride(outChannels * inChannels)
        let v = scratch, p = scratch + 16 * sv
        stwino_input(x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width), v)
        stwino_output_gradient(dy, dyChannelStride, Int32(outChannels), Int32(count), Int32(height), Int32(width), p)
        for xi in 0..<16 {
            gemm(.none, .transposed, m: outChannels, n: inChannels, k: t, a: p + xi * sp, lda: t,
                 b: v + xi * sv, ldb: t, beta: 1, c: z + xi * sz, ldc: inChannels)
        }
    }

    /// `dw[o][i] += Gᵀ z[·][o][i] G` for output channels `rows` (default all): the 3×3 weight
    /// gradient from the summed products.
    public static func finishWeightGradient(
        _ z: UnsafePointer<Float>, outChannels: Int, inChannels: Int, rows: Range<Int>? = nil,
        into dw: UnsafeMutablePointer<Float>
    ) {
        let r = rows ?? 0..<outChannels
        stwino_weight_gradient(z, Int32(outChannels), Int32(inChannels), Int32(r.lowerBound), Int32(r.upperBound), dw)
    }
}
