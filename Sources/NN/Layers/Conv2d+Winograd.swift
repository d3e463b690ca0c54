import Tensor

/// The dense passes of a 3×3, stride-1, padding-1 convolution by Winograd F(2×2, 3×3) or
/// F(4×4, 3×3) (`Winograd`): the batch in chunks of images split among the workers, each transforming its
/// chunk into its own scratch and running the 16 position GEMMs single-threaded.
extension Conv2d {
    /// The fewer of input and output channels from which `.automatic` runs Winograd: below it
    /// the GEMMs are too thin to pay for the transforms. `bench conv` (forward + backward, 2
    /// threads, AVX-512 host, ms), F(4×4) / F(2×2) / the best direct kernel: batch 128, 16 → 16
    /// at 32×32 15.3 / 14.8 / 9.9, 32 → 32 at 16×16 8.1 / 12.4 / 9.2, 64 → 64 at 8×8 5.2 / 8.4 /
    /// 9.1, at 32×32 92 / 111 / 138, 128 → 128 at 16×16 70 / 98 / 142, 256 → 256 at 8×8 61 / 85 /
    /// 142, 512 → 512 at 4×4 84 / 92 / 139; batch 32, 64 → 64 at 56×56 71 / 84 / 107, 128 → 128
    /// at 28×28 58 / 72 / 120 (im2col), 256 → 256 at 14×14 68 / 68 / 117 (im2col), 512 → 512 at
    /// 7×7 71 / 97 / 120 (im2col). At 32 channels F(4×4) gains 12% but rounds less exactly
    /// (its transforms multiply by up to 8 and divide by 24), so it starts at 64.
    public static let winogradChannelMinimum = 64

    /// The Winograd variant the dense passes over inputs of shape `s` run, if any: F(2×2) under
    /// `.winograd`, F(4×4) under `.winograd4`; under `.automatic` F(4×4) from
    /// `winogradChannelMinimum` channels on images larger than the pixel product's, as long as
    /// one image's transforms fit the transform budget (a chunk holds at least one image: VGG
    /// at 224×224 would take 57 MB per worker).
    public func winograd(_ s: Shape, _ ctx: Context) -> Winograd? {
        guard kernelSize == 3, stride == 1, padding == 1 else { return nil }
        switch ctx.convolutionAlgorithm {
        case .winograd: return .f2x2
        case .winograd4: return .f4x4
        case .automatic:
            let variant = Winograd.f4x4
            let image = variant.scratchCount(inChannels: inChannels, outChannels: outChannels, count: 1, height: s.h, width: s.w)
            guard min(inChannels, outChannels) >= Self.winogradChannelMinimum, !usesPixelProduct(s, ctx),
                  image <= ctx.transformBudget else { return nil }
            return variant
        case .gemm, .direct: return nil
        }
    }

    /// Whether the dense passes over inputs of shape `s` run Winograd (`winograd(_:_:)`).
    public func usesWinograd(_ s: Shape, _ ctx: Context) -> Bool { winograd(s, ctx) != nil }

    /// Tiles a chunk aims at: enough columns for the GEMMs (and rows for the weight gradient's),
    /// few enough that a chunk's transforms stay near the cache. `bench step --model vgg16`
    /// (F(4×4), ms per layer): chunks of 32 tiles at 4×4 (an 8 MiB budget) 95 ms, 64 tiles 61;
    /// at 32×32 448 tiles 94 ms, 1792 tiles 114.
    static let winogradChunkTiles = 512

    /// Images per chunk: about `winogradChunkTiles` tiles within the transform budget
    /// (`Context.transformBudget`), and the chunks divide evenly among the workers.
    private func winogradChunk(_ s: Shape, _ variant: Winograd, inChannels cin: Int, outChannels cout: Int, _ ctx: Context) -> Int {
        let perImage = variant.scratchCount(inChannels: cin, outChannels: cout, count: 1, height: s.h, width: s.w)
        let tiles = variant.tiles(count: 1, height: s.h, width: s.w)
        return balancedChunk(batch: s.n, most: min(ctx.transformBudget / perImage, max(1, Self.winogradChunkTiles / tiles)), ctx)
    }

    /// `out = W ⊛ src` (forward, `flipped` false) or `out = W̃ ⊛ src` (the input gradient from
    /// dY with the flipped, transposed kernels) over images of shape `s`. Overwrites out.
    func winogradProduct(
        _ src: UnsafePointer<Float>, channels inCount: Int, into out: UnsafeMutablePointer<Float>, channels outCount: Int,
        flipped: Bool, shape s: Shape, _ variant: Winograd, _ ctx: Context
    ) {
        let plane = s.plane, cols = s.n * plane, h = s.h, w = s.w
        let u = SendablePointer(ctx.packedWeightScratch(count: variant.weightCount(outChannels: outCount, inChannels: inCount)))
        let weights = SendablePointer(UnsafeMutablePointer(mutating: store.forwardWeight(weight)))
        let cout = outChannels, cin = inChannels
        parallelChunks(outCount, chunks: ctx.chunks(for: 9 * cin * cout)) { rows in
            variant.transformWeights(weights.pointer, outChannels: cout, inChannels: cin, flipped: flipped, rows: rows,
                                      into: u.pointer)
        }
        let per = winogradChunk(s, variant, inChannels: inCount, outChannels: outCount, ctx)
        let scratch = ctx.workerScratch(count: variant.scratchCount(
            inChannels: inCount, outChannels: outCount, count: per, height: h, width: w))
        let x = SendablePointer(UnsafeMutablePointer(mutating: src)), y = SendablePointer(out)
        ctx.forEachChunk(of: s.n, size: per) { worker, first, count, _ in
            variant.forward(x.pointer + first * plane, xChannelStride: cols, inChannels: inCount, count: count,
                             height: h, width: w, transformedWeights: u.pointer, outChannels: outCount,
                             y: y.pointer + first * plane, yChannelStride: cols, scratch: scratch[worker].pointer)
        }
    }

    /// `target += dW` by Winograd: each worker sums its chunks' (M+2)² products `P[ξ]·V[ξ]ᵀ` in
    /// its scratch (its first chunk writes them, so nothing is zeroed), the sums of the workers
    /// that ran are added, and the total is folded onto the 3×3 taps once.
    func winogradWeightGradient(
        _ x: Tensor, _ dy: Tensor, into target: UnsafeMutablePointer<Float>, _ variant: Winograd, _ ctx: Context
    ) {
        let s = x.shape, plane = s.plane, cols = s.n * plane, h = s.h, w = s.w
        let cin = inChannels, cout = outChannels, sums = variant.weightCount(outChannels: cout, inChannels: cin)
        let per = winogradChunk(s, variant, inChannels: cin, outChannels: cout, ctx)
        let chunkCount = variant.scratchCount(inChannels: cin, outChannels: cout, count: per, height: h, width: w)
        let scratch = ctx.workerScratch(count: chunkCount + sums)
        let started = SendablePointer(UnsafeMutablePointer<Bool>.allocate(capacity: scratch.count))
        started.pointer.initialize(repeating: false, count: scratch.count)
        defer { started.pointer.deallocate() }
        let xp = SendablePointer(x.data), d = SendablePointer(dy.data)
        ctx.forEachChunk(of: s.n, size: per) { worker, first, count, _ in
            let own = scratch[worker].pointer
            variant.accumulateWeightGradient(xp.pointer + first * plane, xChannelStride: cols, inChannels: cin, count: count,
                                             height: h, width: w, dy: d.pointer + first * plane, dyChannelStride: cols,
                                             outChannels: cout, z: own + chunkCount, accumulate: started.pointer[worker],
                                             scratch: own)
            started.pointer[worker] = true
        }
        let total = SendablePointer(scratch[0].pointer + chunkCount), dw = SendablePointer(target)
        for (worker, part) in scratch.enumerated().dropFirst() where started.pointer[worker] {
            axpy(sums, x: part.pointer + chunkCount, y: total.pointer)
        }
        parallelChunks(cout, chunks: ctx.chunks(for: 9 * cin * cout)) { rows in
            variant.finishWeightGradient(total.pointer, outChannels: cout, inChannels: cin, rows: rows, into: dw.pointer)
        }
    }
}
