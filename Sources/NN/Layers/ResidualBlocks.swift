import Tensor

/// How a residual block's input reaches its output when shapes differ.
public enum Shortcut: String, Sendable {
    /// Option A (He et al. 2016, CIFAR): stride-2 subsampling and zero channels, no parameters.
    case zeroPad
    /// Option B: 1×1 convolution with stride, then batch norm.
    case projection
}

/// Adds a shortcut branch to a main branch and applies ReLU:
/// `y = relu(main(x) + shortcut(x))`. Used by the basic and bottleneck blocks.
public final class ResidualBlock: Layer {
    public let main: Sequential
    /// nil: identity.
    public let shortcut: Layer?
    private let output = Tensor()
    /// The block's output feeds the next block straight (see `chain`): the gradient it is given
    /// is already gated by its ReLU, which the next block applied while summing its branches.
    private(set) var receivesGatedGradient = false
    /// The block's input is the previous block's output (`chain`): its input gradient is gated by
    /// `x > 0` — the previous block's ReLU, whose output x is — in the pass that sums the branches.
    private(set) var gatesInputGradient = false
    private unowned(unsafe) var input: Tensor?

    public init(main: Sequential, shortcut: Layer?) {
        self.main = main
        self.shortcut = shortcut
    }

    public func outputShape(for s: Shape) throws -> Shape {
        let m = try main.outputShape(for: s)
        let r = try shortcut?.outputShape(for: s) ?? s
        guard m == r else { throw ModelError("residual branches disagree: \(m) vs \(r)") }
        return m
    }

    /// Links consecutive blocks of `layers` (`linked`), or unlinks them: each such pair gates the
    /// gradient once, in the later block's sum of its branches, instead of in a pass of its own
    /// in the earlier block (the same values: that block's output is the later one's input).
    static func chain(_ layers: [Layer], linked: Bool = true) {
        for (earlier, later) in zip(layers, layers.dropFirst()) {
            guard let a = earlier as? ResidualBlock, let b = later as? ResidualBlock else { continue }
            a.receivesGatedGradient = linked
            b.gatesInputGradient = linked
        }
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        input = x
        if let last = main.layers.last as? BatchNorm, !last.relu {
            // The main branch's last batch norm adds the shortcut and applies the ReLU in its own
            // pass over the activations (its output is neither written nor read back).
            let z = main.forwardAllButLast(x, ctx)
            let r = shortcut?.forward(x, ctx) ?? x
            return last.forward(z, adding: r, into: output, ctx)
        }
        let m = main.forward(x, ctx)
        let r = shortcut?.forward(x, ctx) ?? x
        return ctx.timed(.add) {
            output.reshape(m.shape)
            let a = SendablePointer(m.data), b = SendablePointer(r.data), y = SendablePointer(output.data)
            parallelChunks(m.count, chunks: ctx.chunks(for: m.count)) { range in
                var i = range.lowerBound
                while i < range.upperBound {
                    let v = a.pointer[i] + b.pointer[i]
                    y.pointer[i] = v > 0 ? v : 0
                    i &+= 1
                }
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        let sumGradient = receivesGatedGradient ? dy : ctx.timed(.add) { () -> Tensor in
            let g = ctx.gradientBuffer(dy.shape)
            reluBackward(output.data, dy.data, g.data, dy.count, ctx)
            ctx.release(dy)
            return g
        }
        // Both branches read the gradient: one extra reference, dropped by whichever releases.
        ctx.retain(sumGradient)
        // Shortcut first: in reverse layer order its parameters come after the main branch's.
        let dShort = shortcut?.backward(sumGradient, ctx) ?? sumGradient
        let dMain = main.backward(sumGradient, ctx)
        return ctx.timed(.add) {
            // The sum overwrites the main branch's gradient when nothing else reads it.
            let inPlace = dMain !== dShort && ctx.isSoleReference(dMain)
            let inputGradient = inPlace ? dMain : ctx.gradientBuffer(dMain.shape)
            defer { if !inPlace { ctx.release(dMain) }; ctx.release(dShort) }
            let a = SendablePointer(dMain.data), b = SendablePointer(dShort.data)
            let o = SendablePointer(inputGradient.data)
            let gate = gatesInputGradient ? input.map { SendablePointer($0.data) } : nil
            parallelChunks(dMain.count, chunks: ctx.chunks(for: dMain.count)) { range in
                let i = range.lowerBound
                sumGated(a.pointer + i, b.pointer + i, gate: gate.map { UnsafePointer($0.pointer + i) }, o.pointer + i, range.count)
            }
            return inputGradient
        }
    }

    public var parameterRefs: [ParameterRef] { main.parameterRefs + (shortcut?.parameterRefs ?? []) }
    public var batchNorms: [BatchNorm] { main.batchNorms + (shortcut?.batchNorms ?? []) }
    public var kernelReports: [KernelReport] { main.kernelReports + (shortcut?.kernelReports ?? []) }
    public func refreshSparseKernels(_ ctx: Context) {
        main.refreshSparseKernels(ctx)
        shortcut?.refreshSparseKernels(ctx)
    }
    public func weightFlops(for s: Shape) -> [(ref: ParameterRef, flops: Double)] {
        main.weightFlops(for: s) + (shortcut?.weightFlops(for: s) ?? [])
    }

    public func forwardFlops(for s: Shape) -> Double {
        main.forwardFlops(for: s) + (shortcut?.forwardFlops(for: s) ?? 0)
    }
}

/// Option-A shortcut: `y[c + pad, n, h, w] = x[c, n, s·h, s·w]`, zero elsewhere, with
/// `pad = (Cout − Cin) / 2` channels on each side.
public final class ZeroPadShortcut: Layer {
    public let outChannels: Int, stride: Int
    private let output = Tensor()
    private var inputShape = Shape(n: 0, c: 0)

    public init(outChannels: Int, stride: Int) {
        self.outChannels = outChannels
        self.stride = stride
    }

    public func outputShape(for s: Shape) throws -> Shape {
        guard outChannels >= s.c, (outChannels - s.c) % 2 == 0 else {
            throw ModelError("zero-pad shortcut cannot map \(s.c) to \(outChannels) channels")
        }
        return Shape(n: s.n, c: outChannels, h: (s.h + stride - 1) / stride, w: (s.w + stride - 1) / stride)
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.add) {
            let s = x.shape
            inputShape = s
            let o = try! outputShape(for: s)
            output.reshape(o)
            output.zero()
            let pad = (outChannels - s.c) / 2
            for c in 0..<s.c {
                for n in 0..<s.n {
                    let src = x.data + (c * s.n + n) * s.plane
                    let dst = output.data + ((c + pad) * s.n + n) * o.plane
                    for h in 0..<o.h { for w in 0..<o.w { dst[h * o.w + w] = src[h * stride * s.w + w * stride] } }
                }
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.add) {
            let s = inputShape, o = dy.shape
            let inputGradient = ctx.gradientBuffer(s)
            defer { ctx.release(dy) }
            inputGradient.zero()
            let pad = (outChannels - s.c) / 2
            for c in 0..<s.c {
                for n in 0..<s.n {
                    let dst = inputGradient.data + (c * s.n + n) * s.plane
                    let src = dy.data + ((c + pad) * s.n + n) * o.plane
                    for h in 0..<o.h { for w in 0..<o.w { dst[h * stride * s.w + w * stride] = src[h * o.w + w] } }
                }
            }
            return inputGradient
        }
    }
}
