import Foundation
import Tensor

/// 2-D convolution over channel-major activations, as im2col + one GEMM per chunk of images.
///
/// Weight (Cout, Cin, kh, kw), Kaiming-normal with fan-out (`std = √(2 / (Cout·kh·kw))`);
/// optional bias (Cout), uniform ±1/√fan-in. Forward: `Y[Cout, n·Ho·Wo] = W · col(X)`.
/// Backward: `dW += dY · colᵀ`, `dcol = Wᵀ · dY`, `dX = col2im(dcol)`. A 1×1, stride-1,
/// unpadded convolution skips im2col: X is already the column matrix.
public final class Conv2d: Layer {
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    /// False for the first layer: its input gradient is never used.
    public var needsInputGradient = true

    private let store: ParameterStore
    private let output = Tensor()
    private unowned(unsafe) var input: Tensor?

    public init(
        _ name: String, store: ParameterStore, inChannels: Int, outChannels: Int,
        kernelSize: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false
    ) {
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

    public func forwardFlops(for s: Shape) -> Double {
        let g = geometry(s)
        return 2 * Double(outChannels * g.patchSize * g.outPlane * s.n)
    }

    /// Images per chunk so one worker's column scratch stays within the context's budget
    /// (small enough to stay in cache between im2col and the GEMM that reads it).
    private func chunk(_ g: ConvGeometry, batch: Int, _ ctx: Context) -> Int {
        max(1, min(batch, ctx.columnBudget / max(1, g.patchSize * g.outPlane)))
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv) {
            input = x
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            output.reshape(Shape(n: n, c: outChannels, h: g.outHeight, w: g.outWidth))
            let w = SendablePointer(store.value(weight)), y = SendablePointer(output.data)
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
            if let bias {
                let b = store.value(bias)
                for o in 0..<outChannels {
                    let row = output.data + o * cols
                    let v = b[o]
                    for i in 0..<cols { row[i] += v }
                }
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv) {
            guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            let wCount = weight.count
            let needDx = needsInputGradient
            let inputGradient = ctx.gradientBuffer(needDx ? s : Shape(n: 0, c: 0))
            let w = SendablePointer(store.value(weight))
            let d = SendablePointer(dy.data), dx = SendablePointer(inputGradient.data)
            let per = chunk(g, batch: n, ctx)
            let scratch = ctx.workerScratch(count: isPointwise ? 1 : g.patchSize * per * plane)
            let partials = ctx.workerPartials(count: wCount)
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
            if let bias {
                let db = store.gradient(bias)
                for o in 0..<outChannels { db[o] += sum(dy.data + o * cols, cols) }
                store.onGradientReady?(bias)
            }
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
