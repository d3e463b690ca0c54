import Tensor

/// `y = max(x, 0)`; backward `dx = dy · [y > 0]`.
///
/// `inPlace` overwrites the input instead of writing a buffer of its own: safe (and one
/// activation buffer less) when nothing else reads that input afterwards — the output of a batch
/// norm or a linear layer, whose backward passes need their inputs, not their outputs.
public final class ReLU: Layer {
    public let inPlace: Bool
    private let output = Tensor()
    private unowned(unsafe) var result: Tensor?

    public init(inPlace: Bool = false) { self.inPlace = inPlace }

    public func outputShape(for s: Shape) throws -> Shape { s }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.relu) {
            let y = inPlace ? x : output
            if !inPlace { output.reshape(x.shape) }
            relu(x.data, y.data, x.count, ctx)
            result = y
            return y
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.relu) {
            guard let y = result else { preconditionFailure("ReLU.backward before forward") }
            let inputGradient = ctx.gradientBuffer(dy.shape)
            reluBackward(y.data, dy.data, inputGradient.data, dy.count, ctx)
            ctx.release(dy)
            return inputGradient
        }
    }
}

/// `y[i] = x[i] > 0 ? x[i] : 0`, in parallel chunks for large tensors.
func relu(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ ctx: Context) {
    let xp = SendablePointer(x), yp = SendablePointer(y)
    parallelChunks(n, chunks: ctx.chunks(for: n)) { r in
        let a = xp.pointer, b = yp.pointer
        var i = r.lowerBound
        while i < r.upperBound { let v = a[i]; b[i] = v > 0 ? v : 0; i &+= 1 }
    }
}

/// `dx[i] = y[i] > 0 ? dy[i] : 0`.
func reluBackward(_ y: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>,
                  _ dx: UnsafeMutablePointer<Float>, _ n: Int, _ ctx: Context) {
    let yp = SendablePointer(y), dyp = SendablePointer(dy), dxp = SendablePointer(dx)
    parallelChunks(n, chunks: ctx.chunks(for: n)) { r in
        let a = yp.pointer, d = dyp.pointer, o = dxp.pointer
        var i = r.lowerBound
        while i < r.upperBound { o[i] = a[i] > 0 ? d[i] : 0; i &+= 1 }
    }
}

/// (C, N, H, W) → (C·H·W, N, 1, 1): feature `c·H·W + h·W + w` of image n, as PyTorch's flatten
/// orders an NCHW tensor. The identity (a copy) when H = W = 1.
public final class Flatten: Layer {
    private let output = Tensor()
    private var inputShape = Shape(n: 0, c: 0)
    /// False when it is the network's first layer: backward then returns an empty tensor.
    public var needsInputGradient = true

    public init() {}

    public func outputShape(for s: Shape) throws -> Shape { Shape(n: s.n, c: s.c * s.plane) }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.flatten) {
            let s = x.shape
            inputShape = s
            output.reshape(Shape(n: s.n, c: s.c * s.plane))
            let n = s.n, p = s.plane
            // Per channel, the [n][p] block to [p][n] in 16 × 16 tiles (reads and writes stay
            // within a few cache lines per tile instead of one line per written float).
            let tile = 16
            for c in 0..<s.c {
                let src = x.data + c * n * p, dst = output.data + c * p * n
                for i0 in Swift.stride(from: 0, to: n, by: tile) {
                    let i1 = min(i0 + tile, n)
                    for k0 in Swift.stride(from: 0, to: p, by: tile) {
                        let k1 = min(k0 + tile, p)
                        for i in i0..<i1 {
                            for k in k0..<k1 { dst[k * n + i] = src[i * p + k] }
                        }
                    }
                }
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.flatten) {
            guard needsInputGradient else {
                ctx.release(dy)
                return ctx.gradientBuffer(Shape(n: 0, c: 0))
            }
            let s = inputShape
            let inputGradient = ctx.gradientBuffer(s)
            let n = s.n, p = s.plane
            for c in 0..<s.c {
                for i in 0..<n {
                    let dst = inputGradient.data + (c * n + i) * p
                    for k in 0..<p { dst[k] = dy.data[(c * p + k) * n + i] }
                }
            }
            ctx.release(dy)
            return inputGradient
        }
    }
}
