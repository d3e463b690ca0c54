import CConvKernels

/// Winograd F(M×M, 3×3), M = 2 or 4, for 3×3, stride-1, padding-1 convolutions over
/// channel-major activations (C, N, H, W): each image is cut into tiles of M×M outputs, the
/// (M+2)×(M+2) input windows, kernels and outputs are transformed (`winograd.h`), and the
/// channel sums become (M+2)² GEMMs over all tiles of a chunk of images — 16 products per
/// channel pair and 2×2 tile, or 36 per 4×4 tile, instead of 9 per output pixel. The input
/// gradient is the same product with the flipped, transposed kernels; the weight gradient
/// transforms dY with the output transform's adjoint and folds the products
/// `Z[ξ] = P[ξ]·V[ξ]ᵀ` back onto the 3×3 taps.
///
/// Transformed arrays hold their positions `stride(_:)` floats apart. The per-chunk calls
/// run single-threaded GEMMs; callers split a batch among workers, each with its own scratch.
public struct Winograd: Sendable, Equatable {
    /// Outputs per tile side: 2 (F(2×2, 3×3)) or 4 (F(4×4, 3×3)).
    public let tile: Int
    public static let f2x2 = Winograd(tile: 2), f4x4 = Winograd(tile: 4)

    /// Transformed positions per tile, (tile + 2)².
    public var positions: Int { (tile + 2) * (tile + 2) }

    /// Tiles of `count` images of `height × width`.
    public func tiles(count: Int, height: Int, width: Int) -> Int {
        count * ((height + tile - 1) / tile) * ((width + tile - 1) / tile)
    }

    /// Floats between the positions of a transformed array of `floats` per position.
    public static func stride(_ floats: Int) -> Int { stwino_stride(floats) }

    /// Floats of transformed kernels (`transformWeights`) or of weight-gradient sums.
    public func weightCount(outChannels: Int, inChannels: Int) -> Int { positions * Self.stride(outChannels * inChannels) }

    /// Floats of scratch a chunk needs: the transformed input and products (or transformed dY).
    public func scratchCount(inChannels: Int, outChannels: Int, count: Int, height: Int, width: Int) -> Int {
        let t = tiles(count: count, height: height, width: width)
        return positions * (Self.stride(inChannels * t) + Self.stride(outChannels * t))
    }

    /// Transformed kernels `u[ξ][o][i]` (`weightCount` floats) of weights
    /// `w[outChannels][inChannels][3][3]`, rows `rows` of u only; `flipped`: the input
    /// gradient's (`u[ξ][i][o]` from the kernel turned by 180°, rows i < inChannels).
    public func transformWeights(
        _ w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, flipped: Bool, rows: Range<Int>? = nil,
        into u: UnsafeMutablePointer<Float>
    ) {
        let r = rows ?? 0..<(flipped ? inChannels : outChannels)
        stwino_weights(Int32(tile), w, Int32(outChannels), Int32(inChannels), flipped ? 1 : 0, Int32(r.lowerBound), Int32(r.upperBound), u)
    }

    /// `y = W ⊛ x` for `count` images (3×3, stride 1, padding 1), with `u` from
    /// `transformWeights` (`outChannels × inChannels` per position). Plane c of image n is at
    /// `x + c·xChannelStride + n·H·W` (likewise y). Overwrites y.
    public func forward(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        transformedWeights u: UnsafePointer<Float>, outChannels: Int,
        y: UnsafeMutablePointer<Float>, yChannelStride: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        let t = tiles(count: count, height: height, width: width)
        let sv = Self.stride(inChannels * t), sm = Self.stride(outChannels * t), su = Self.stride(outChannels * inChannels)
        let v = scratch, m = scratch + positions * sv, k = Int32(tile)
        stwino_input(k, x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width), v)
        for xi in 0..<positions {
            gemm(.none, .none, m: outChannels, n: t, k: inChannels, a: u + xi * su, lda: inChannels,
                 b: v + xi * sv, ldb: t, c: m + xi * sm, ldc: t)
        }
        stwino_output(k, m, Int32(outChannels), Int32(count), Int32(height), Int32(width), y, yChannelStride)
    }

    /// `z[ξ] += P[ξ] · V[ξ]ᵀ` (`weightCount` floats; `z[ξ] =` without `accumulate`) for `count`
    /// images: P the transformed output gradient, V the transformed input.
    /// `finishWeightGradient` folds z (summed over chunks and workers) onto the taps.
    public func accumulateWeightGradient(
        _ x: UnsafePointer<Float>, xChannelStride: Int, inChannels: Int, count: Int, height: Int, width: Int,
        dy: UnsafePointer<Float>, dyChannelStride: Int, outChannels: Int,
        z: UnsafeMutablePointer<Float>, accumulate: Bool = true, scratch: UnsafeMutablePointer<Float>
    ) {
        let t = tiles(count: count, height: height, width: width)
        let sv = Self.stride(inChannels * t), sp = Self.stride(outChannels * t), sz = Self.stride(outChannels * inChannels)
        let v = scratch, p = scratch + positions * sv, k = Int32(tile)
        stwino_input(k, x, xChannelStride, Int32(inChannels), Int32(count), Int32(height), Int32(width), v)
        stwino_output_gradient(k, dy, dyChannelStride, Int32(outChannels), Int32(count), Int32(height), Int32(width), p)
        for xi in 0..<positions {
            gemm(.none, .transposed, m: outChannels, n: inChannels, k: t, a: p + xi * sp, lda: t,
                 b: v + xi * sv, ldb: t, beta: accumulate ? 1 : 0, c: z + xi * sz, ldc: inChannels)
        }
    }

    /// `dw[o][i] += Gᵀ z[·][o][i] G` for output channels `rows` (default all): the 3×3 weight
    /// gradient from the summed products.
    public func finishWeightGradient(
        _ z: UnsafePointer<Float>, outChannels: Int, inChannels: Int, rows: Range<Int>? = nil,
        into dw: UnsafeMutablePointer<Float>
    ) {
        let r = rows ?? 0..<outChannels
        stwino_weight_gradient(Int32(tile), z, Int32(outChannels), Int32(inChannels), Int32(r.lowerBound), Int32(r.upperBound), dw)
    }
}
