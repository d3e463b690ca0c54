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
    private let inputGradient = Tensor()
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

    /// Images per GEMM so the column scratch stays within the context's budget.
    private func chunk(_ g: ConvGeometry, batch: Int, _ ctx: Context) -> Int {
        max(1, min(batch, ctx.columnBudget / max(1, g.patchSize * g.outPlane)))
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        do {
            input = x
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            output.reshape(Shape(n: n, c: outChannels, h: g.outHeight, w: g.outWidth))
            let w = store.value(weight)
            if isPointwise {
                ctx.timed(.conv) {
                    gemm(.none, .none, m: outChannels, n: cols, k: inChannels, a: w, lda: inChannels,
                         b: x.data, ldb: cols, c: output.data, ldc: cols)
                }
            } else {
                let per = chunk(g, batch: n, ctx)
                ctx.columns.reshape(Shape(n: 1, c: g.patchSize * per * plane))
                let col = ctx.columns.data
                for first in Swift.stride(from: 0, to: n, by: per) {
                    let count = min(per, n - first)
                    ctx.timed(.im2col) {
                        im2col(x.data, batch: n, first: first, count: count, geometry: g, col: col,
                               threads: ctx.threads)
                    }
                    ctx.timed(.conv) {
                        gemm(.none, .none, m: outChannels, n: count * plane, k: g.patchSize,
                             a: w, lda: g.patchSize, b: col, ldb: count * plane,
                             c: output.data + first * plane, ldc: cols)
                    }
                }
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
        do {
            guard let x = input else { preconditionFailure("Conv2d.backward before forward") }
            let s = x.shape, g = geometry(s)
            let n = s.n, plane = g.outPlane, cols = n * plane
            let w = store.value(weight), dw = store.gradient(weight)
            if needsInputGradient {
                inputGradient.reshape(s)
                if !isPointwise { inputGradient.zero() }
            }
            if isPointwise {
                ctx.timed(.conv) {
                    gemm(.none, .transposed, m: outChannels, n: inChannels, k: cols, a: dy.data,
                         lda: cols, b: x.data, ldb: cols, beta: 1, c: dw, ldc: inChannels)
                }
                if needsInputGradient {
                    ctx.timed(.conv) {
                        gemm(.transposed, .none, m: inChannels, n: cols, k: outChannels, a: w,
                             lda: inChannels, b: dy.data, ldb: cols, c: inputGradient.data, ldc: cols)
                    }
                }
            } else {
                let per = chunk(g, batch: n, ctx)
                ctx.columns.reshape(Shape(n: 1, c: g.patchSize * per * plane))
                let col = ctx.columns.data
                for first in Swift.stride(from: 0, to: n, by: per) {
                    let count = min(per, n - first)
                    ctx.timed(.im2col) {
                        im2col(x.data, batch: n, first: first, count: count, geometry: g, col: col,
                               threads: ctx.threads)
                    }
                    ctx.timed(.conv) {
                        gemm(.none, .transposed, m: outChannels, n: g.patchSize, k: count * plane,
                             a: dy.data + first * plane, lda: cols, b: col, ldb: count * plane,
                             beta: 1, c: dw, ldc: g.patchSize)
                    }
                    if needsInputGradient {
                        ctx.timed(.conv) {
                            gemm(.transposed, .none, m: g.patchSize, n: count * plane, k: outChannels,
                                 a: w, lda: g.patchSize, b: dy.data + first * plane, ldb: cols,
                                 c: col, ldc: count * plane)
                        }
                        ctx.timed(.im2col) {
                            col2im(col, batch: n, first: first, count: count, geometry: g,
                                   dx: inputGradient.data, threads: ctx.threads)
                        }
                    }
                }
            }
            if let bias {
                let db = store.gradient(bias)
                for o in 0..<outChannels { db[o] += sum(dy.data + o * cols, cols) }
                store.onGradientReady?(bias)
            }
            store.onGradientReady?(weight)
            return inputGradient
        }
    }
}
