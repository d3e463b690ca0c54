import Foundation
import Tensor

/// 2-D convolution over channel-major activations, as im2col + one GEMM per chunk of images,
/// or, for 3×3 stride-1 padding-1 layers with few channels, the direct kernel `Conv3x3`.
///
/// Weight (Cout, Cin, kh, kw), Kaiming-normal with fan-out (`std = √(2 / (Cout·kh·kw))`);
/// optional bias (Cout), uniform ±1/√fan-in. Forward: `Y[Cout, n·Ho·Wo] = W · col(X)`.
/// Backward: `dW += dY · colᵀ`, `dcol = Wᵀ · dY`, `dX = col2im(dcol)`. A 1×1, stride-1,
/// unpadded convolution skips im2col: X is already the column matrix — and with sparse kernels
/// on it runs as a `MaskedMatmul` over `n·H·W` columns (each pass dense or sparse).
public final class Conv2d: Layer {
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    /// False for the first layer: its input gradient is never used.
    public var needsInputGradient = true

    public let name: String
    private let store: ParameterStore
    private let output = Tensor()
    private var matmul: MaskedMatmul?
    /// Forward + backward seconds while profiling.
    private var profiledSeconds = 0.0
    /// Weights packed for the direct kernel: forward, and flipped for the input gradient.
    private let packed = Tensor(), packedFlipped = Tensor()
    private unowned(unsafe) var input: Tensor?

    public init(
        _ name: String, store: ParameterStore, inChannels: Int, outChannels: Int,
        kernelSize: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false
    ) {
        self.name = name
        self.store = store
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        let fanOut = Float(outChannels * kernelSize * kernelSize)
        weight = store.register(
            "\(name).weight", shape: [outChannels, inChannels, kernelSize, kernelSize],
            maskable: true, initializer: .normal(std: (2 / fanOut).squareRoot()))
        self.bias = bias
            ? store.register("\(name).bias", shape: [outChannels], maskable: false,
                             initializer: .uniform(bound: 1 / Float(inChannels * kernelSize * kernelSize).squareRoot()))
            : nil
    }

    public var parameterRefs: [ParameterRef] { [weight] + (bias.map { [$0] } ?? []) }

    func geometry(_ s: Shape) -> ConvGeometry {
        ConvGeometry(channels: s.c, height: s.h, width: s.w, kernelH: kernelSize,
                     kernelW: kernelSize, stride: stride, padding: padding)
    }

    private var isPointwise: Bool { kernelSize == 1 && stride == 1 && padding == 0 }

    public func outputShape(for s: Shape) throws -> Shape {
        guard s.c == inChannels else {
            throw ModelError("convolution expects \(inChannels) input channels, got \(s.c)")
        }
        let g = geometry(s)
        guard g.outHeight > 0, g.outWidth > 0 else {
            throw ModelError("input \(s.h)×\(s.w) is too small for a \(kernelSize)×\(kernelSize) "
                + "convolution with stride \(stride) and padding \(padding)")
        }
        return Shape(n: s.n, c: outChannels, h: g.outHeight, w: g.outWidth)
    }

    public func weightFlops(for s: Shape) -> [(ref: ParameterRef, flops: Double)] { [(weight, forwardFlops(for: s))] }

    public var kernelReports: [KernelReport] {
        [kernelReport(matmul, name: name, weight: weight, store: store, seconds: profiledSeconds)]
    }


    /// The masked matmul of a pointwise convolution when its passes may run sparse.
    private func sparseMatmul(_ ctx: Context) -> MaskedMatmul? {
        guard isPointwise else { return nil }
        return maskedMatmul(&matmul, name: name, weight: weight, rows: outChannels, cols: inChannels, store: store, ctx)
    }

    /// Forward of a pointwise convolution through `MaskedMatmul`: `Y[Cout, cols] = W·X[Cin, cols]`;
    /// the dense path is one GEMM per chunk of images on the workers, as elsewhere.
    private func matmulForward(_ x: Tensor, _ m: MaskedMatmul, _ ctx: Context) -> Tensor {
        let s = x.shape, plane = s.plane, cols = s.n * plane
        output.reshape(Shape(n: s.n, c: outChannels, h: s.h, w: s.w))
        let w = SendablePointer(store.forwardWeight(weight)), y = SendablePointer(output.data), xp = SendablePointer(x.data)
        let cout = outChannels, cin = inChannels, per = chunk(geometry(s), batch: s.n, ctx)
        m.forward(w.pointer, x: x.data, ldx: cols, n: cols, y: y.pointer, ldy: cols, accumulate: false, ctx, prepare: {}, dense: {
            ctx.forEachChunk(of: s.n, size: per) { _, first, count, _ in
                gemm(.none, .none, m: cout, n: count * plane, k: cin, a: w.pointer, lda: cin,
                     b: xp.pointer + first * plane, ldb: cols, c: y.pointer + first * plane, ldc: cols)
            }
        })
        addBias(cols: cols)
        return output
    }

    /// Backward of a pointwise convolution through `MaskedMatmul` (dense paths chunked by images).
    private func matmulBackward(_ x: Tensor, _ dy: Tensor, _ m: MaskedMatmul, _ ctx: Context) -> Tensor {
        let s = x.shape, plane = s.plane, cols = s.n * plane
        let cout = outChannels, cin = inChannels, per = chunk(geometry(s), batch: s.n, ctx), wCount = weight.count
        let xp = SendablePointer(x.data), d = SendablePointer(dy.data)
        m.weightGradient(store, dy: dy.data, lddy: cols, x: x.data, ldx: cols, n: cols, ctx) { target, beta in
            if beta == 0 { target.update(repeating: 0, count: wCount) }
            let partials = ctx.workerPartials(count: wCount, target: target)
            ctx.forEachChunk(of: s.n, size: per) { worker, first, count, _ in
                gemm(.none, .transposed, m: cout, n: cin, k: count * plane, a: d.pointer + first * plane, lda: cols,
                     b: xp.pointer + first * plane, ldb: cols, beta: 1, c: partials[worker].pointer, ldc: cin)
            }
            ctx.addPartials(partials, count: wCount, into: target)
        }
        biasGradient(dy, cols: cols)
        store.onGradientReady?(weight)
        let inputGradient = ctx.gradientBuffer(needsInputGradient ? s : Shape(n: 0, c: 0))
        if needsInputGradient {
            let w = SendablePointer(store.forwardWeight(weight)), dx = SendablePointer(inputGradient.data)
            m.inputGradient(w.pointer, dy: dy.data, lddy: cols, n: cols, dx: dx.pointer, lddx: cols, ctx) {
                ctx.forEachChunk(of: s.n, size: per) { _, first, count, _ in
                    gemm(.transposed, .none, m: cin, n: count * plane, k: cout, a: w.pointer, lda: cin,
                         b: d.pointer + first * plane, ldb: cols, c: dx.pointer + first * plane, ldc: cols)
                }
            }
        }
        ctx.release(dy)
        return inputGradient
    }

    public func forwardFlops(for s: Shape) -> Double {
        let g = geometry(s)
        return 2 * Double(outChannels * g.patchSize * g.outPlane * s.n)
    }

    /// Images per chunk so one worker's column scratch stays within the context's budget
    /// (small enough to stay in cache between im2col and the GEMM that reads it).
    private func chunk(_ g: ConvGeometry, batch: Int, _ ctx: Context) -> Int {
        balancedChunk(batch: batch, most: ctx.columnBudget / max(1, g.patchSize * g.outPlane), ctx)
    }

    /// Images per chunk: at most `most` (at least 1), with the number of chunks a multiple of
    /// the workers so that they get equal shares.
    private func balancedChunk(batch: Int, most: Int, _ ctx: Context) -> Int {
        let most = max(1, most)
        var chunks = (batch + most - 1) / most
        chunks = min(batch, (chunks + ctx.threads - 1) / ctx.threads * ctx.threads)
        return (batch + chunks - 1) / max(1, chunks)
    }

    /// Whether this layer runs the direct 3×3 kernel on inputs of shape `s`: a 3×3, stride-1,
    /// padding-1 convolution the kernel supports, and under `.automatic` at most
    /// `Conv2d.directChannelLimit` channels in and out (beyond that sgemm's blocking wins).
    public func usesDirectKernel(_ s: Shape, _ ctx: Context) -> Bool {
        guard ctx.convolutionAlgorithm != .gemm, kernelSize == 3, stride == 1, padding == 1,
              Conv3x3.supports(outChannels: outChannels, width: s.w),
              !needsInputGradient || inChannels % 4 == 0 else { return false }
        return ctx.convolutionAlgorithm == .direct
            || max(inChannels, outChannels) <= Conv2d.directChannelLimit
    }

    /// Channel count up to which `.automatic` prefers the direct kernel.
    public static let directChannelLimit = 256

    /// Images per chunk for the direct kernel: padded copies of `planesPerImage` planes fit
    /// the column budget, and the chunks divide evenly among the workers.
    private func directChunk(_ s: Shape, planesPerImage: Int, _ ctx: Context) -> Int {
        balancedChunk(batch: s.n, most: ctx.columnBudget / (planesPerImage * (s.h + 2) * (s.w + 2)), ctx)
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv, layerSeconds: &profiledSeconds) {
            input = x
            if let m = sparseMatmul(ctx) { return matmulForward(x, m, ctx) }
            if usesDirectKernel(x.shape, ctx) { return directForward(x, ctx) }
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            output.reshape(Shape(n: n, c: outChannels, h: g.outHeight, w: g.outWidth))
            let w = SendablePointer(store.forwardWeight(weight)), y = SendablePointer(output.data)
            let per = chunk(g, batch: n, ctx)
            let scratch = ctx.workerScratch(count: isPointwise ? 1 : g.patchSize * per * plane)
            let cout = outChannels, patch = g.patchSize, pointwise = isPointwise
            let xp = SendablePointer(x.data)
            ctx.forEachChunk(of: n, size: per) { worker, first, count, inner in
                let (col, ld) = convColumns(xp, batch: n, g, pointwise: pointwise, first: first,
                                            count: count, scratch: scratch[worker].pointer, threads: inner)
                gemm(.none, .none, m: cout, n: count * plane, k: patch, a: w.pointer, lda: patch,
                     b: col, ldb: ld, c: y.pointer + first * plane, ldc: cols)
            }
            addBias(cols: cols)
            return output
        }
    }

    private func addBias(cols: Int) {
        guard let bias else { return }
        let b = store.value(bias)
        for o in 0..<outChannels {
            let row = output.data + o * cols
            let v = b[o]
            for i in 0..<cols { row[i] += v }
        }
    }

    private func biasGradient(_ dy: Tensor, cols: Int) {
        guard let bias else { return }
        let db = store.gradient(bias)
        for o in 0..<outChannels { db[o] += sum(dy.data + o * cols, cols) }
        store.onGradientReady?(bias)
    }

    /// Forward through `Conv3x3`: each worker pads its chunk of images, then runs the kernel.
    private func directForward(_ x: Tensor, _ ctx: Context) -> Tensor {
        let s = x.shape, n = s.n, plane = s.plane, cols = n * plane
        output.reshape(Shape(n: n, c: outChannels, h: s.h, w: s.w))
        packed.reshape(Shape(n: 1, c: weight.count))
        Conv3x3.packWeights(store.forwardWeight(weight), outChannels: outChannels, inChannels: inChannels,
                            flipped: false, into: packed.data)
        let per = directChunk(s, planesPerImage: inChannels, ctx)
        let scratch = ctx.workerScratch(count: Conv3x3.paddedCount(channels: inChannels, count: per, height: s.h, width: s.w))
        let xp = SendablePointer(x.data), y = SendablePointer(output.data), w = SendablePointer(packed.data)
        let cin = inChannels, cout = outChannels
        ctx.forEachChunk(of: n, size: per) { worker, first, count, _ in
            let xpad = scratch[worker].pointer
            Conv3x3.pad(xp.pointer + first * plane, channelStride: cols, channels: cin, count: count,
                        height: s.h, width: s.w, into: xpad)
            Conv3x3.forward(xpad, inChannels: cin, count: count, height: s.h, width: s.w, packed: w.pointer,
                            outChannels: cout, y: y.pointer + first * plane, yChannelStride: cols)
        }
        addBias(cols: cols)
        return output
    }

    /// Backward through `Conv3x3`: dW from padded input and dY; dX as the forward kernel on
    /// padded dY with the flipped, transposed weights.
    private func directBackward(_ x: Tensor, _ dy: Tensor, _ ctx: Context) -> Tensor {
        let s = x.shape, n = s.n, plane = s.plane, cols = n * plane
        let needDx = needsInputGradient
        let inputGradient = ctx.gradientBuffer(needDx ? s : Shape(n: 0, c: 0))
        if needDx {
            packedFlipped.reshape(Shape(n: 1, c: weight.count))
            Conv3x3.packWeights(store.forwardWeight(weight), outChannels: outChannels, inChannels: inChannels,
                                flipped: true, into: packedFlipped.data)
        }
        let cin = inChannels, cout = outChannels
        let per = directChunk(s, planesPerImage: cin + (needDx ? cout : 0), ctx)
        let xCount = Conv3x3.paddedCount(channels: cin, count: per, height: s.h, width: s.w)
        let scratch = ctx.workerScratch(count: Conv3x3.paddedCount(channels: cin + cout, count: per, height: s.h, width: s.w))
        let partials = ctx.workerPartials(count: weight.count, target: store.gradient(weight))
        let xp = SendablePointer(x.data), d = SendablePointer(dy.data)
        let dx = SendablePointer(inputGradient.data), w = SendablePointer(packedFlipped.data)
        ctx.forEachChunk(of: n, size: per) { worker, first, count, _ in
            let xpad = scratch[worker].pointer, dpad = xpad + xCount
            Conv3x3.pad(xp.pointer + first * plane, channelStride: cols, channels: cin, count: count,
                        height: s.h, width: s.w, into: xpad)
            Conv3x3.weightGradient(xpad, inChannels: cin, count: count, height: s.h, width: s.w,
                                   dy: d.pointer + first * plane, dyChannelStride: cols, outChannels: cout,
                                   dw: partials[worker].pointer)
            guard needDx else { return }
            Conv3x3.pad(d.pointer + first * plane, channelStride: cols, channels: cout, count: count,
                        height: s.h, width: s.w, into: dpad)
            Conv3x3.forward(dpad, inChannels: cout, count: count, height: s.h, width: s.w, packed: w.pointer,
                            outChannels: cin, y: dx.pointer + first * plane, yChannelStride: cols)
        }
        ctx.addPartials(partials, count: weight.count, into: store.gradient(weight))
        biasGradient(dy, cols: cols)
        store.onGradientReady?(weight)
        ctx.release(dy)
        return inputGradient
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv, layerSeconds: &profiledSeconds) {
            guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
            if let m = sparseMatmul(ctx) { return matmulBackward(x, dy, m, ctx) }
            if usesDirectKernel(x.shape, ctx) { return directBackward(x, dy, ctx) }
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            let wCount = weight.count
            let needDx = needsInputGradient
            let inputGradient = ctx.gradientBuffer(needDx ? s : Shape(n: 0, c: 0))
            let w = SendablePointer(store.forwardWeight(weight))
            let d = SendablePointer(dy.data), dx = SendablePointer(inputGradient.data)
            let per = chunk(g, batch: n, ctx)
            let scratch = ctx.workerScratch(count: isPointwise ? 1 : g.patchSize * per * plane)
            let partials = ctx.workerPartials(count: wCount, target: store.gradient(weight))
            let cout = outChannels, patch = g.patchSize, pointwise = isPointwise
            let inPlane = s.plane, cin = s.c
            let xp = SendablePointer(x.data)
            ctx.forEachChunk(of: n, size: per) { worker, first, count, inner in
                let (col, ld) = convColumns(xp, batch: n, g, pointwise: pointwise, first: first,
                                            count: count, scratch: scratch[worker].pointer, threads: inner)
                // dW (this worker's partial) += dY_chunk · colᵀ
                gemm(.none, .transposed, m: cout, n: patch, k: count * plane,
                     a: d.pointer + first * plane, lda: cols, b: col, ldb: ld,
                     beta: 1, c: partials[worker].pointer, ldc: patch)
                guard needDx else { return }
                if pointwise {
                    gemm(.transposed, .none, m: cin, n: count * plane, k: cout, a: w.pointer, lda: cin,
                         b: d.pointer + first * plane, ldb: cols, c: dx.pointer + first * inPlane, ldc: cols)
                } else {
                    // dcol = Wᵀ · dY_chunk, then scatter-add into this chunk's images of dX.
                    gemm(.transposed, .none, m: patch, n: count * plane, k: cout, a: w.pointer, lda: patch,
                         b: d.pointer + first * plane, ldb: cols, c: col, ldc: count * plane)
                    for c in 0..<cin {
                        (dx.pointer + (c * n + first) * inPlane).update(repeating: 0, count: count * inPlane)
                    }
                    col2im(col, batch: n, first: first, count: count, geometry: g, dx: dx.pointer, threads: inner)
                }
            }
            ctx.addPartials(partials, count: wCount, into: store.gradient(weight))
            biasGradient(dy, cols: cols)
            store.onGradientReady?(weight)
            ctx.release(dy)
            return inputGradient
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
