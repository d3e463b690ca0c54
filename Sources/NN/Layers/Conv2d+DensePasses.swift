import Tensor

/// The dense passes of a convolution, each on its own (so that a masked layer can run any of
/// them dense and the others sparse): im2col + GEMM per chunk of images, or the pixel product,
/// Winograd or the direct 3×3 kernel where they apply and are faster (`denseAlgorithm`).
extension Conv2d {
    /// Images per chunk so one worker's column scratch stays within the context's budget
    /// (small enough to stay in cache between im2col and the GEMM that reads it).
    func chunk(_ g: ConvGeometry, batch: Int, _ ctx: Context) -> Int {
        balancedChunk(batch: batch, most: ctx.columnBudget / max(1, g.patchSize * g.outPlane), ctx)
    }

    /// Images per chunk: at most `most` (at least 1), with the number of chunks a multiple of
    /// the workers so that they get equal shares.
    func balancedChunk(batch: Int, most: Int, _ ctx: Context) -> Int {
        let most = max(1, most)
        var chunks = (batch + most - 1) / most
        chunks = min(batch, (chunks + ctx.threads - 1) / ctx.threads * ctx.threads)
        return (batch + chunks - 1) / max(1, chunks)
    }

    /// What the dense passes run on pass inputs of shape `s`, as `bench step` names it.
    func denseAlgorithm(_ s: Shape, _ ctx: Context) -> String {
        if usesPixelProduct(s, ctx) { return "pixel product" }
        if let variant = winograd(s, ctx) { return "Winograd \(variant.tile)×\(variant.tile)" }
        if let kernel = directKernel(s, ctx) { return kernel == .smallImages ? "direct small images" : "direct" }
        return isPointwise ? "GEMM" : "im2col + GEMM"
    }

    /// Whether this layer runs a direct 3×3 kernel on inputs of shape `s` (see `directKernel`).
    public func usesDirectKernel(_ s: Shape, _ ctx: Context) -> Bool { directKernel(s, ctx) != nil }

    /// The direct 3×3 kernel this layer runs on inputs of shape `s`, if any: for a 3×3, stride-1,
    /// padding-1 convolution, the small-image kernel where it applies (forward and, when needed,
    /// input gradient; AVX-512, H·W divides 16), else the padded kernel where it applies, under
    /// `.automatic` only up to `Conv2d.directChannelLimit` channels in and out (beyond that
    /// sgemm's blocking wins).
    public func directKernel(_ s: Shape, _ ctx: Context) -> DirectKernel? {
        guard ctx.convolutionAlgorithm != .gemm, kernelSize == 3, stride == 1, padding == 1 else { return nil }
        let isa = ctx.kernelISA
        if Conv3x3.smallImagesApply(outChannels: outChannels, height: s.h, width: s.w, widest: isa),
           !needsInputGradient || Conv3x3.smallImagesApply(outChannels: inChannels, height: s.h, width: s.w, widest: isa) {
            return .smallImages
        }
        guard Conv3x3.supports(outChannels: outChannels, width: s.w, widest: isa),
              !needsInputGradient || Conv3x3.supports(outChannels: inChannels, width: s.w, widest: isa),
              ctx.convolutionAlgorithm == .direct || max(inChannels, outChannels) <= Conv2d.directChannelLimit
        else { return nil }
        return .padded
    }

    /// Channel count up to which `.automatic` prefers the direct kernel.
    public static let directChannelLimit = 256

    /// Images per chunk for the direct kernel: padded copies of `planesPerImage` planes fit
    /// the column budget, and the chunks divide evenly among the workers.
    func directChunk(_ s: Shape, planesPerImage: Int, _ ctx: Context) -> Int {
        balancedChunk(batch: s.n, most: ctx.columnBudget / (planesPerImage * (s.h + 2) * (s.w + 2)), ctx)
    }

    /// The direct 3×3 kernel over images of shape `s`: `out[outCount] = W ⊛ src[inCount]` (forward),
    /// or with the flipped, transposed weights `W̃ ⊛ src` (the input gradient from dY); with the
    /// padded kernel each worker pads its chunk of images, then runs the kernel.
    private func directProduct(
        _ src: SendablePointer<Float>, channels inCount: Int, into out: SendablePointer<Float>, channels outCount: Int,
        flipped: Bool, shape s: Shape, kernel: DirectKernel, _ ctx: Context
    ) {
        let plane = s.plane, cols = s.n * plane
        let isa = kernel == .smallImages ? .avx512 : Conv3x3.variant(outChannels: outCount, width: s.w, widest: ctx.kernelISA)!
        let w = SendablePointer(ctx.packedWeightScratch(count: weight.count))
        Conv3x3.packWeights(store.forwardWeight(weight), outChannels: outChannels, inChannels: inChannels,
                            flipped: flipped, isa: isa, into: w.pointer)
        if kernel == .smallImages {
            ctx.forEachChunk(of: s.n, size: balancedChunk(batch: s.n, most: s.n, ctx)) { _, first, count, _ in
                Conv3x3.smallForward(src.pointer + first * plane, xChannelStride: cols, inChannels: inCount, count: count,
                                     height: s.h, width: s.w, packed: w.pointer, outChannels: outCount,
                                     y: out.pointer + first * plane, yChannelStride: cols)
            }
            return
        }
        let per = directChunk(s, planesPerImage: inCount, ctx)
        let scratch = ctx.workerScratch(count: Conv3x3.paddedCount(channels: inCount, count: per, height: s.h, width: s.w))
        ctx.forEachChunk(of: s.n, size: per) { worker, first, count, _ in
            let padded = scratch[worker].pointer
            Conv3x3.pad(src.pointer + first * plane, channelStride: cols, channels: inCount, count: count,
                        height: s.h, width: s.w, into: padded)
            Conv3x3.forward(padded, inChannels: inCount, count: count, height: s.h, width: s.w, packed: w.pointer,
                            outChannels: outCount, y: out.pointer + first * plane, yChannelStride: cols, isa: isa)
        }
    }

    /// Forward into `output` (shaped by the caller; no bias).
    func denseForward(_ x: Tensor, _ ctx: Context) {
        let s = x.shape, g = passGeometry(s), n = s.n, plane = g.outPlane, cols = n * plane
        let y = SendablePointer(output.data), xp = SendablePointer(x.data), cin = inChannels, cout = outChannels
        if usesPixelProduct(s, ctx) {
            pixelProductForward(x, ctx)
            return
        }
        if let variant = winograd(s, ctx) {
            winogradProduct(x.data, channels: cin, into: output.data, channels: cout, flipped: false, shape: s, variant, ctx)
            return
        }
        if let kernel = directKernel(s, ctx) {
            directProduct(xp, channels: cin, into: y, channels: cout, flipped: false, shape: s, kernel: kernel, ctx)
            return
        }
        let w = SendablePointer(store.forwardWeight(weight)), per = chunk(g, batch: n, ctx)
        let scratch = ctx.workerScratch(count: isPointwise ? 1 : g.patchSize * per * plane)
        let patch = g.patchSize, pointwise = isPointwise
        ctx.forEachChunk(of: n, size: per) { worker, first, count, inner in
            let (col, ld) = convColumns(xp, batch: n, g, pointwise: pointwise, first: first,
                                        count: count, scratch: scratch[worker].pointer, threads: inner)
            gemm(.none, .none, m: cout, n: count * plane, k: patch, a: w.pointer, lda: patch,
                 b: col, ldb: ld, c: y.pointer + first * plane, ldc: cols)
        }
    }

    /// `target = β·target + dY · col(X)ᵀ` (each worker into its partial, folded at the end).
    func denseWeightGradient(_ x: Tensor, _ dy: Tensor, into target: UnsafeMutablePointer<Float>, beta: Float,
                             _ ctx: Context) {
        let s = x.shape, g = passGeometry(s), n = s.n, plane = g.outPlane, cols = n * plane, wCount = weight.count
        if beta == 0 { target.update(repeating: 0, count: wCount) }
        if usesPixelProduct(s, ctx) {
            pixelProductWeightGradient(x, dy, into: target, ctx)
            return
        }
        if let variant = winograd(s, ctx) {
            winogradWeightGradient(x, dy, into: target, variant, ctx)
            return
        }
        let partials = ctx.workerPartials(count: wCount, target: target)
        let xp = SendablePointer(x.data), d = SendablePointer(dy.data), cin = inChannels, cout = outChannels
        let kernel = directKernel(s, ctx)
        if kernel == .smallImages {
            ctx.forEachChunk(of: n, size: balancedChunk(batch: n, most: n, ctx)) { worker, first, count, _ in
                Conv3x3.smallWeightGradient(xp.pointer + first * plane, xChannelStride: cols, inChannels: cin, count: count,
                                            height: s.h, width: s.w, dy: d.pointer + first * plane, dyChannelStride: cols,
                                            outChannels: cout, dw: partials[worker].pointer)
            }
        } else if kernel == .padded {
            let per = directChunk(s, planesPerImage: cin, ctx)
            let isa = Conv3x3.variant(outChannels: cout, width: s.w, widest: ctx.kernelISA)!
            let scratch = ctx.workerScratch(count: Conv3x3.paddedCount(channels: cin, count: per, height: s.h, width: s.w))
            ctx.forEachChunk(of: n, size: per) { worker, first, count, _ in
                let xpad = scratch[worker].pointer
                Conv3x3.pad(xp.pointer + first * plane, channelStride: cols, channels: cin, count: count,
                            height: s.h, width: s.w, into: xpad)
                Conv3x3.weightGradient(xpad, inChannels: cin, count: count, height: s.h, width: s.w,
                                       dy: d.pointer + first * plane, dyChannelStride: cols, outChannels: cout,
                                       dw: partials[worker].pointer, isa: isa)
            }
        } else {
            let per = chunk(g, batch: n, ctx)
            let scratch = ctx.workerScratch(count: isPointwise ? 1 : g.patchSize * per * plane)
            let patch = g.patchSize, pointwise = isPointwise
            ctx.forEachChunk(of: n, size: per) { worker, first, count, inner in
                let (col, ld) = convColumns(xp, batch: n, g, pointwise: pointwise, first: first,
                                            count: count, scratch: scratch[worker].pointer, threads: inner)
                gemm(.none, .transposed, m: cout, n: patch, k: count * plane, a: d.pointer + first * plane, lda: cols,
                     b: col, ldb: ld, beta: 1, c: partials[worker].pointer, ldc: patch)
            }
        }
        ctx.addPartials(partials, count: wCount, into: target)
    }

    /// `dx = col2im(Wᵀ · dY)` for an input of shape `s` (overwrites dx); the direct kernel runs
    /// the forward kernel on padded dY with the flipped, transposed weights.
    func denseInputGradient(_ dy: Tensor, into dx: UnsafeMutablePointer<Float>, inputShape s: Shape, _ ctx: Context) {
        let g = passGeometry(s), n = s.n, plane = g.outPlane, cols = n * plane, inPlane = s.plane
        let d = SendablePointer(dy.data), dxp = SendablePointer(dx), cin = inChannels, cout = outChannels
        if usesPixelProduct(s, ctx) {
            pixelProductInputGradient(dy, into: dx, inputShape: s, ctx)
            return
        }
        if let variant = winograd(s, ctx) {
            winogradProduct(dy.data, channels: cout, into: dx, channels: cin, flipped: true, shape: s, variant, ctx)
            return
        }
        if let kernel = directKernel(s, ctx) {
            directProduct(d, channels: cout, into: dxp, channels: cin, flipped: true, shape: s, kernel: kernel, ctx)
            return
        }
        let w = SendablePointer(store.forwardWeight(weight)), per = chunk(g, batch: n, ctx), patch = g.patchSize
        if isPointwise {
            ctx.forEachChunk(of: n, size: per) { _, first, count, _ in
                gemm(.transposed, .none, m: cin, n: count * plane, k: cout, a: w.pointer, lda: cin,
                     b: d.pointer + first * plane, ldb: cols, c: dxp.pointer + first * inPlane, ldc: cols)
            }
            return
        }
        let scratch = ctx.workerScratch(count: patch * per * plane)
        ctx.forEachChunk(of: n, size: per) { worker, first, count, inner in
            // dcol = Wᵀ · dY_chunk, then scatter-add into this chunk's images of dX.
            let col = scratch[worker].pointer
            gemm(.transposed, .none, m: patch, n: count * plane, k: cout, a: w.pointer, lda: patch,
                 b: d.pointer + first * plane, ldb: cols, c: col, ldc: count * plane)
            for c in 0..<cin {
                (dxp.pointer + (c * n + first) * inPlane).update(repeating: 0, count: count * inPlane)
            }
            col2im(col, batch: n, first: first, count: count, geometry: g, dx: dxp.pointer, threads: inner)
        }
    }
}

/// Where chunk `first ..< first + count` of a convolution's column matrix lives, with its
/// leading dimension: the input itself for pointwise convolutions, else `scratch` after im2col.
@inline(__always)
private func convColumns(
    _ x: SendablePointer<Float>, batch: Int, _ g: ConvGeometry, pointwise: Bool, first: Int, count: Int,
    scratch: UnsafeMutablePointer<Float>, threads: Int
) -> (UnsafeMutablePointer<Float>, Int) {
    let plane = g.outPlane
    if pointwise { return (x.pointer + first * plane, batch * plane) }
    im2col(x.pointer, batch: batch, first: first, count: count, geometry: g, col: scratch, threads: threads)
    return (scratch, count * plane)
}
