import Tensor

/// Batch normalisation per channel (2-d over N·H·W, 1-d over N when H = W = 1).
///
/// Training: `x̂ = (x − μ_B)/√(σ²_B + ε)`, `y = γ·x̂ + β`, with biased σ²_B; running statistics
/// `r ← (1 − m)·r + m·stat` with the unbiased variance, m = 0.1, ε = 1e-5 (PyTorch's values).
/// Evaluation uses the running statistics (and backward is then the per-channel affine map).
/// Backward (training):
/// `dx = γ/(M·√(σ²+ε)) · (M·dy − Σdy − x̂·Σ(dy·x̂))`, M = N·H·W.
/// Built on a store with `batchNormAffine == false` it has no parameters: γ = 1, β = 0.
///
/// With `relu` it is followed by a ReLU in the same passes: `y = max(γ·x̂ + β, 0)`, and backward
/// uses `dy·[γ·x̂ + β > 0]` in place of dy — the activations are read and written once less each
/// way than by a separate ReLU layer, with the same results.
public final class BatchNorm: Layer {
    /// γ and β; nil for a non-affine layer.
    public let weight: ParameterRef?
    public let bias: ParameterRef?
    public let channels: Int
    public let momentum: Float
    public let eps: Float
    /// A ReLU follows in the same passes.
    public let relu: Bool
    /// Running mean and variance (checkpointed with the model).
    public private(set) var runningMean: [Float]
    public private(set) var runningVar: [Float]
    public let name: String
    /// When set, per-channel sums are reduced across ranks before use (synchronised BN):
    /// called with [Σx…, Σx²…] in forward and [Σdy…, Σdy·x̂…] in backward, and must return
    /// the sums over all ranks together with the global element count per channel.
    public var crossReplicaSum: ((inout [Double]) -> Void)?
    public var crossReplicaCount: Int = 1

    private let store: ParameterStore
    private let output = Tensor()
    private unowned(unsafe) var input: Tensor?
    private var mean: [Float]
    private var invStd: [Float]
    /// γ = 1 and β = 0 of a non-affine layer.
    private let unitScale: UnsafeMutablePointer<Float>, zeroShift: UnsafeMutablePointer<Float>

    public init(_ name: String, store: ParameterStore, channels: Int, momentum: Float = 0.1, eps: Float = 1e-5,
                relu: Bool = false) {
        self.name = name
        self.relu = relu
        self.store = store
        self.channels = channels
        self.momentum = momentum
        self.eps = eps
        if store.batchNormAffine {
            weight = store.register("\(name).weight", shape: [channels], maskable: false, initializer: .ones)
            bias = store.register("\(name).bias", shape: [channels], maskable: false, initializer: .zeros)
        } else {
            weight = nil
            bias = nil
        }
        unitScale = .allocate(capacity: channels)
        unitScale.initialize(repeating: 1, count: channels)
        zeroShift = .allocate(capacity: channels)
        zeroShift.initialize(repeating: 0, count: channels)
        runningMean = Array(repeating: 0, count: channels)
        runningVar = Array(repeating: 1, count: channels)
        mean = Array(repeating: 0, count: channels)
        invStd = Array(repeating: 1, count: channels)
    }

    deinit {
        unitScale.deallocate()
        zeroShift.deallocate()
    }

    public var parameterRefs: [ParameterRef] { [weight, bias].compactMap { $0 } }
    /// γ (per channel) as used by forward and backward.
    private var gammaValues: UnsafeMutablePointer<Float> { weight.map(store.value) ?? unitScale }
    /// β (per channel) as used by forward and backward.
    private var betaValues: UnsafeMutablePointer<Float> { bias.map(store.value) ?? zeroShift }
    public var batchNorms: [BatchNorm] { [self] }

    public func outputShape(for s: Shape) throws -> Shape {
        guard s.c == channels else {
            throw ModelError("batch norm '\(name)' expects \(channels) channels, got \(s.c)")
        }
        return s
    }

    /// Overwrites the running statistics (checkpoint restore).
    public func setRunningStatistics(mean: [Float], variance: [Float]) {
        precondition(mean.count == channels && variance.count == channels)
        runningMean = mean
        runningVar = variance
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        let xP = SendablePointer(x.data), fused = relu, m = x.shape.n * x.shape.plane
        output.reshape(x.shape)
        let yP = SendablePointer(output.data)
        forward(x, ctx) { c, scale, shift in
            Self.normalize(xP.pointer + c * m, yP.pointer + c * m, m, scale: scale, shift: shift, relu: fused)
        }
        return output
    }

    /// `y = relu(BN(x) + residual)` into `y` (reshaped to x's shape): a residual block's last
    /// batch norm with the block's shortcut and ReLU in the same pass (`relu` must be off). The
    /// backward is the plain one: the block gates its gradient by `y > 0` before.
    public func forward(_ x: Tensor, adding residual: Tensor, into y: Tensor, _ ctx: Context) -> Tensor {
        precondition(!relu && residual.shape == x.shape, "\(name): a residual sum needs a plain batch norm of the same shape")
        let xP = SendablePointer(x.data), rP = SendablePointer(residual.data), m = x.shape.n * x.shape.plane
        y.reshape(x.shape)
        let yP = SendablePointer(y.data)
        forward(x, ctx) { c, scale, shift in
            reluAffineAdd(xP.pointer + c * m, rP.pointer + c * m, yP.pointer + c * m, m, scale: scale, shift: shift)
        }
        return y
    }

    /// The training or evaluation forward pass up to the affine map of each channel: statistics
    /// (reduced across ranks when set), running statistics, then `write(c, scale, shift)` for
    /// every channel — which produces the layer's output (`y = x·scale + shift`, or what a fused
    /// consumer makes of it: the residual sum, a max pooling). Keeps x for the backward.
    func forward(_ x: Tensor, _ ctx: Context, write: @Sendable (_ c: Int, _ scale: Float, _ shift: Float) -> Void) {
        ctx.timed(.batchNorm) {
            input = x
            let s = x.shape
            let m = s.n * s.plane
            let gamma = gammaValues, beta = betaValues
            let xP = SendablePointer(x.data)
            let g = SendablePointer(gamma), b = SendablePointer(beta), eps = eps
            if ctx.training {
                // Per channel: mean, Σ(x − μ)² and — without a cross-rank reduction — the output
                // right away, while the channel is still in cache (one pass over memory, not two).
                let local = crossReplicaSum == nil
                var sums = [Double](repeating: 0, count: 2 * channels)
                sums.withUnsafeMutableBufferPointer { buf in
                    let sp = SendablePointer(buf.baseAddress!)
                    let ch = channels
                    parallelChunks(channels, chunks: ctx.chunks(for: s.count)) { range in
                        for c in range {
                            let p = xP.pointer + c * m
                            let mu = sum(p, m) / Float(m)
                            sp.pointer[c] = Double(mu)
                            sp.pointer[ch + c] = Double(sumSquaredDeviations(p, m, mean: mu))
                            guard local else { continue }
                            let (mean, _, invStd) = Self.statistics(mean: sp.pointer[c], m2: sp.pointer[ch + c], count: m, eps: eps)
                            let (scale, shift) = Self.affine(gamma: g.pointer[c], beta: b.pointer[c], mean: mean, invStd: invStd)
                            write(c, scale, shift)
                        }
                    }
                }
                var count = m
                if let reduce = crossReplicaSum {
                    // Turn (mean, M2) into (Σx, Σx²) so that sums over ranks combine exactly.
                    for c in 0..<channels {
                        let mu = sums[c]
                        sums[channels + c] += Double(m) * mu * mu
                        sums[c] = mu * Double(m)
                    }
                    reduce(&sums)
                    count = crossReplicaCount * m
                    for c in 0..<channels {
                        let mu = sums[c] / Double(count)
                        sums[channels + c] -= Double(count) * mu * mu
                        sums[c] = mu
                    }
                }
                for c in 0..<channels {
                    let (mu, variance, inv) = Self.statistics(mean: sums[c], m2: sums[channels + c], count: count, eps: eps)
                    (mean[c], invStd[c]) = (mu, inv)
                    let unbiased = count > 1 ? variance * Float(count) / Float(count - 1) : variance
                    runningMean[c] = (1 - momentum) * runningMean[c] + momentum * mu
                    runningVar[c] = (1 - momentum) * runningVar[c] + momentum * unbiased
                }
                if local { return }
            } else {
                for c in 0..<channels {
                    mean[c] = runningMean[c]
                    invStd[c] = 1 / (runningVar[c] + eps).squareRoot()
                }
            }
            let meanC = mean, invC = invStd
            parallelChunks(channels, chunks: ctx.chunks(for: s.count)) { range in
                for c in range {
                    let (scale, shift) = Self.affine(gamma: g.pointer[c], beta: b.pointer[c], mean: meanC[c], invStd: invC[c])
                    write(c, scale, shift)
                }
            }
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        // dx overwrites dy when nothing else reads it (each element after its own reads).
        let inPlace = ctx.isSoleReference(dy)
        defer { if !inPlace { ctx.release(dy) } }
        let dyP = SendablePointer(dy.data), m = dy.shape.n * dy.shape.plane
        return backward(ctx, usesScratch: false, into: inPlace ? dy : nil) { c, _ in UnsafePointer(dyP.pointer + c * m) }
    }

    /// The backward pass with dY given channel by channel: `gradient(c, scratch)` returns channel
    /// c's N·H·W values, from dY itself or (`usesScratch`) written into `scratch`, that many
    /// floats per worker — a fused max pooling expands its gradient there, so dY is never
    /// written whole. The input gradient goes `into` that tensor (dY itself, which then must not be
    /// read elsewhere) or a new gradient buffer.
    func backward(
        _ ctx: Context, usesScratch: Bool, into target: Tensor? = nil,
        gradient: @Sendable (_ c: Int, _ scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float>
    ) -> Tensor {
        ctx.timed(.batchNorm) {
            guard let x = input else { preconditionFailure("BatchNorm.backward before forward") }
            let s = x.shape
            let m = s.n * s.plane
            let inputGradient = target ?? ctx.gradientBuffer(s)
            let scratch = usesScratch ? ctx.workerScratch(count: m) : Array(repeating: SendablePointer(inputGradient.data), count: ctx.threads)
            // Σdy and Σdy·x̂ per channel; Σdy·x̂ = (Σdy·x − μ·Σdy)·invStd.
            // With a fused ReLU, dy is gated by [γ·x̂ + β > 0] (recomputed from x as forward did).
            var sums = [Double](repeating: 0, count: 2 * channels)
            let xP = SendablePointer(x.data)
            let meanC = mean, invC = invStd, ch = channels, fused = relu
            let gamma = SendablePointer(gammaValues), beta = SendablePointer(betaValues)
            // Without a cross-rank reduction in training, each channel's dx follows its sums while
            // the channel's x and dy are still in cache.
            let local = ctx.training && crossReplicaSum == nil
            let dxP = SendablePointer(inputGradient.data), total = Float(m)
            sums.withUnsafeMutableBufferPointer { buf in
                let sp = SendablePointer(buf.baseAddress!)
                parallelNumberedChunks(channels, chunks: ctx.chunks(for: s.count)) { worker, range in
                    for c in range {
                        let d = gradient(c, scratch[worker].pointer)
                        let (scale, shift) = Self.affine(gamma: gamma.pointer[c], beta: beta.pointer[c], mean: meanC[c], invStd: invC[c])
                        let (sdy, sdyx) = fused
                            ? gatedSumAndDot(d, xP.pointer + c * m, m, scale: scale, shift: shift)
                            : sumAndDot(d, xP.pointer + c * m, m)
                        sp.pointer[c] = Double(sdy)
                        sp.pointer[ch + c] = Double((sdyx - meanC[c] * sdy) * invC[c])
                        guard local else { continue }
                        Self.inputGradient(x: xP.pointer + c * m, dy: d, dx: dxP.pointer + c * m, m,
                                           gamma: gamma.pointer[c], beta: beta.pointer[c], mean: meanC[c], invStd: invC[c],
                                           meanDy: Float(sp.pointer[c]) / total, meanDyXhat: Float(sp.pointer[ch + c]) / total,
                                           relu: fused)
                    }
                }
            }
            if let weight, let bias {
                let gw = store.gradient(weight), gb = store.gradient(bias)
                for c in 0..<channels {
                    gw[c] += Float(sums[channels + c])
                    gb[c] += Float(sums[c])
                }
                store.onGradientReady?(bias)
                store.onGradientReady?(weight)
            }
            if !ctx.training {
                // Evaluation mode is an affine map per channel: dx = γ / √(r_var + ε) · dy.
                parallelNumberedChunks(channels, chunks: ctx.chunks(for: s.count)) { worker, range in
                    for c in range {
                        let k = gamma.pointer[c] * invC[c]
                        let (scale, shift) = Self.affine(gamma: gamma.pointer[c], beta: beta.pointer[c], mean: meanC[c], invStd: invC[c])
                        let d = gradient(c, scratch[worker].pointer), out = dxP.pointer + c * m, src = xP.pointer + c * m
                        var i = 0
                        if fused {
                            while i < m { out[i] = src[i] * scale + shift > 0 ? k * d[i] : 0; i &+= 1 }
                        } else {
                            while i < m { out[i] = k * d[i]; i &+= 1 }
                        }
                    }
                }
                return inputGradient
            }
            if local { return inputGradient }
            var count = m
            if let reduce = crossReplicaSum {
                reduce(&sums)
                count = crossReplicaCount * m
            }
            let sumsC = sums, reduced = Float(count)
            parallelNumberedChunks(channels, chunks: ctx.chunks(for: s.count)) { worker, range in
                for c in range {
                    Self.inputGradient(x: xP.pointer + c * m, dy: gradient(c, scratch[worker].pointer), dx: dxP.pointer + c * m, m,
                                       gamma: gamma.pointer[c], beta: beta.pointer[c], mean: meanC[c], invStd: invC[c],
                                       meanDy: Float(sumsC[c]) / reduced, meanDyXhat: Float(sumsC[ch + c]) / reduced,
                                       relu: fused)
                }
            }
            return inputGradient
        }
    }

    /// Batch mean, biased variance σ² and 1/√(σ² + ε) from the mean and Σ(x − μ)² over `count` elements.
    @inline(__always)
    static func statistics(mean: Double, m2: Double, count: Int, eps: Float) -> (mean: Float, variance: Float, invStd: Float) {
        let variance = Float(max(0, m2) / Double(count))
        return (Float(mean), variance, 1 / (variance + eps).squareRoot())
    }

    /// One channel's `y = x·scale + shift`, through a ReLU when `relu`.
    @inline(__always)
    static func normalize(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ m: Int,
                          scale: Float, shift: Float, relu: Bool) {
        if relu {
            reluAffine(x, y, m, scale: scale, shift: shift)
        } else {
            var i = 0
            while i < m { y[i] = x[i] * scale + shift; i &+= 1 }
        }
    }

    /// One channel's training-mode input gradient from the means of dy and dy·x̂ over the batch:
    /// `dx = γ·invStd·(g − mean(g) − x̂·mean(g·x̂))`, g = dy (gated by the ReLU when `relu`).
    @inline(__always)
    static func inputGradient(x src: UnsafePointer<Float>, dy d: UnsafePointer<Float>, dx out: UnsafeMutablePointer<Float>,
                              _ m: Int, gamma: Float, beta: Float, mean mu: Float, invStd inv: Float,
                              meanDy sdy: Float, meanDyXhat sdyx: Float, relu: Bool) {
        // Explicit vectors: dx may be dy itself, which would stop the compiler's own
        // vectorisation (its overlap check fails) — each vector is read before it is written.
        typealias V = SIMD16<Float>
        let k = gamma * inv
        let vk = V(repeating: k), vsdy = V(repeating: sdy), vmu = V(repeating: mu), vinv = V(repeating: inv)
        let vsdyx = V(repeating: sdyx)
        let rx = UnsafeRawPointer(src), rd = UnsafeRawPointer(d), ro = UnsafeMutableRawPointer(out)
        var i = 0
        if relu {
            let (scale, shift) = affine(gamma: gamma, beta: beta, mean: mu, invStd: inv)
            let vscale = V(repeating: scale), vshift = V(repeating: shift)
            while i &+ 16 <= m {
                let v = rx.loadUnaligned(fromByteOffset: i &* 4, as: V.self)
                let g = rd.loadUnaligned(fromByteOffset: i &* 4, as: V.self).replacing(with: 0, where: .!(v * vscale + vshift .> 0))
                ro.storeBytes(of: vk * (g - vsdy - (v - vmu) * vinv * vsdyx), toByteOffset: i &* 4, as: V.self)
                i &+= 16
            }
            while i < m {
                let v = src[i]
                let g = v * scale + shift > 0 ? d[i] : 0
                out[i] = k * (g - sdy - (v - mu) * inv * sdyx)
                i &+= 1
            }
        } else {
            while i &+ 16 <= m {
                let xhat = (rx.loadUnaligned(fromByteOffset: i &* 4, as: V.self) - vmu) * vinv
                ro.storeBytes(of: vk * (rd.loadUnaligned(fromByteOffset: i &* 4, as: V.self) - vsdy - xhat * vsdyx),
                              toByteOffset: i &* 4, as: V.self)
                i &+= 16
            }
            while i < m {
                let xhat = (src[i] - mu) * inv
                out[i] = k * (d[i] - sdy - xhat * sdyx)
                i &+= 1
            }
        }
    }

    /// Per-channel `y = x·scale + shift` of the forward pass: scale = γ/√(σ²+ε), shift = β − μ·scale.
    @inline(__always)
    static func affine(gamma: Float, beta: Float, mean: Float, invStd: Float) -> (scale: Float, shift: Float) {
        let scale = gamma * invStd
        return (scale, beta - mean * scale)
    }
}
