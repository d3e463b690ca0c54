import Dispatch
import Tensor

/// Fully connected layer on feature columns: `Y[out, N] = W[out, in] · X[in, N] + b`.
///
/// Weight and bias uniform ±1/√in (PyTorch's default). Backward: `dW += dY·Xᵀ`,
/// `db += Σ_n dY`, `dX = Wᵀ·dY`.
///
/// With `ctx.sparseKernels` on (and no weight transform installed) each pass runs dense (sgemm)
/// or sparse over the mask's positions only (`SparseKernels`): forward `Y = (W⊙M)·X`, input
/// gradient `(W⊙M)ᵀ·dY` over the transposed index, weight gradient `dY·Xᵀ` at the active
/// entries (inactive entries of the gradient stay untouched) unless `ctx.denseWeightGradient`.
public final class Linear: Layer {
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inFeatures: Int, outFeatures: Int
    public var needsInputGradient = true
    public let name: String

    private let store: ParameterStore
    private let output = Tensor()
    private unowned(unsafe) var input: Tensor?
    private var sparse: SparseLinearKernels?
    /// Forward + backward seconds while profiling.
    private var profiledSeconds = 0.0

    public init(_ name: String, store: ParameterStore, inFeatures: Int, outFeatures: Int, bias: Bool = true) {
        self.name = name
        self.store = store
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = store.register("\(name).weight", shape: [outFeatures, inFeatures], maskable: true,
                                initializer: .uniform(bound: bound))
        self.bias = bias
            ? store.register("\(name).bias", shape: [outFeatures], maskable: false,
                             initializer: .uniform(bound: bound))
            : nil
    }

    public var parameterRefs: [ParameterRef] { [weight] + (bias.map { [$0] } ?? []) }

    public func outputShape(for s: Shape) throws -> Shape {
        guard s.c * s.h * s.w == inFeatures else {
            throw ModelError("linear layer expects \(inFeatures) input features, got \(s.c * s.h * s.w) (\(s))")
        }
        guard s.h == 1, s.w == 1 else { throw ModelError("linear layer needs flattened input, got \(s)") }
        return Shape(n: s.n, c: outFeatures)
    }

    public func forwardFlops(for s: Shape) -> Double { 2 * Double(inFeatures * outFeatures * s.n) }
    public func weightFlops(for s: Shape) -> [(ref: ParameterRef, flops: Double)] { [(weight, forwardFlops(for: s))] }
    public var kernelReports: [KernelReport] { kernelReport.map { [$0] } ?? [] }

    /// The sparse kernels' state when this pass may run sparse, indices up to date.
    private func sparseKernels(_ ctx: Context) -> SparseLinearKernels? {
        guard ctx.sparseKernels != .off, store.transform == nil else { return nil }
        let k = sparse ?? SparseLinearKernels(rows: outFeatures, cols: inFeatures)
        sparse = k
        k.refresh(mask: store.maskValues(weight), generation: store.maskGeneration)
        return k
    }

    /// Density and paths of the last step (dense paths when sparse kernels are off).
    public var kernelReport: KernelReport? {
        let density = sparse?.density ?? Double(sum(store.maskValues(weight), weight.count)) / Double(weight.count)
        let paths = sparse?.lastPaths ?? [.dense, .dense, .dense]
        return KernelReport(name: name, density: density, forward: paths[0], inputGradient: paths[1],
                            weightGradient: paths[2], seconds: profiledSeconds)
    }

    /// Runs `body`, adding its time to `profiledSeconds` when profiling.
    private func measured<T>(_ ctx: Context, _ body: () -> T) -> T {
        guard ctx.profiling else { return body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        defer { profiledSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 }
        return body()
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear) { measured(ctx) {
            input = x
            let n = x.shape.n
            output.reshape(Shape(n: n, c: outFeatures))
            let w = store.forwardWeight(weight), y = output.data
            let dense = {
                if let bias = self.bias {
                    let b = self.store.value(bias)
                    for o in 0..<self.outFeatures { (y + o * n).update(repeating: b[o], count: n) }
                }
                BLAS.withThreads(ctx.threads) {
                    gemm(.none, .none, m: self.outFeatures, n: n, k: self.inFeatures, a: w, lda: self.inFeatures,
                         b: x.data, ldb: n, beta: self.bias == nil ? 0 : 1, c: y, ldc: n)
                }
            }
            guard let k = sparseKernels(ctx) else {
                dense()
                return output
            }
            let sparse = {
                if let bias = self.bias {
                    let b = self.store.value(bias)
                    for o in 0..<self.outFeatures { (y + o * n).update(repeating: b[o], count: n) }
                }
                SparseKernels.gatherValues(k.byRow, weights: w, into: k.values, threads: ctx.threads)
                SparseKernels.multiply(k.byRow, weights: k.values, weightsInIndexOrder: true, x: x.data, ldx: n, n: n,
                                       y: y, ldy: n, accumulate: self.bias != nil, isa: ctx.sparseISA, threads: ctx.threads)
            }
            let path = k.path(.forward, layer: name, n: n, ctx, time: dense, sparse)
            k.lastPaths[KernelPass.forward.rawValue] = path
            if path == .sparse { sparse() } else { dense() }
            return output
        } }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear) { measured(ctx) {
            guard let x = input else { preconditionFailure("Linear.backward before forward") }
            let n = x.shape.n
            let kernels = sparseKernels(ctx)
            weightGradient(x: x, dy: dy, n: n, kernels: kernels, ctx)
            if let bias {
                let db = store.gradient(bias)
                for o in 0..<outFeatures { db[o] += sum(dy.data + o * n, n) }
                store.onGradientReady?(bias)
            }
            store.onGradientReady?(weight)
            let inputGradient = ctx.gradientBuffer(needsInputGradient ? x.shape : Shape(n: 0, c: 0))
            if needsInputGradient {
                let w = store.forwardWeight(weight), dx = inputGradient.data
                let dense = {
                    BLAS.withThreads(ctx.threads) {
                        gemm(.transposed, .none, m: self.inFeatures, n: n, k: self.outFeatures, a: w, lda: self.inFeatures,
                             b: dy.data, ldb: n, c: dx, ldc: n)
                    }
                }
                if let k = kernels {
                    let sparse = {
                        SparseKernels.gatherValues(k.byColumn, weights: w, into: k.values, threads: ctx.threads)
                        SparseKernels.multiply(k.byColumn, weights: k.values, weightsInIndexOrder: true,
                                               x: dy.data, ldx: n, n: n, y: dx, ldy: n, isa: ctx.sparseISA,
                                               threads: ctx.threads)
                    }
                    let path = k.path(.inputGradient, layer: name, n: n, ctx, time: dense, sparse)
                    k.lastPaths[KernelPass.inputGradient.rawValue] = path
                    if path == .sparse { sparse() } else { dense() }
                } else {
                    dense()
                }
            }
            ctx.release(dy)
            return inputGradient
        } }
    }

    /// `dW += dY·Xᵀ`: dense, or only at the mask's positions (into the dense gradient or born
    /// packed into the reducer's slot).
    ///
    /// The training step zeroes a weight's dense gradient according to where the previous step
    /// put it (`gradientPlacement`, still the previous one here): all of it after `.dense`, the
    /// active entries after `.atMaskOnly`, nothing after `.packed`. So after a sparse step the
    /// dense GEMM overwrites (β = 0; this layer is the weight's only writer in a step) and the
    /// sampled kernel into the dense gradient first zeroes the active entries it adds to.
    private func weightGradient(x: Tensor, dy: Tensor, n: Int, kernels: SparseLinearKernels?, _ ctx: Context) {
        let g = store.gradient(weight)
        let previous = store.gradientPlacement[weight.index]
        let denseBeta: Float = previous == .dense ? 1 : 0
        let dense = { (target: UnsafeMutablePointer<Float>, beta: Float) in
            BLAS.withThreads(ctx.threads) {
                gemm(.none, .transposed, m: self.outFeatures, n: self.inFeatures, k: n, a: dy.data, lda: n,
                     b: x.data, ldb: n, beta: beta, c: target, ldc: self.inFeatures)
            }
        }
        store.gradientPlacement[weight.index] = .dense
        guard let k = kernels, !ctx.denseWeightGradient else {
            dense(g, denseBeta)
            kernels?.lastPaths[KernelPass.weightGradient.rawValue] = .dense
            return
        }
        let sampled = { (output: SampledOutput) in
            SparseKernels.sampledProduct(k.byRow, dy: dy.data, lddy: n, x: x.data, ldx: n, n: n, into: output,
                                         isa: ctx.sparseISA, threads: ctx.threads)
        }
        // Timing writes into scratch: the gradient accumulates and must see one pass only.
        var scratch: UnsafeMutablePointer<Float>?
        defer { scratch?.deallocate() }
        let path = k.path(.weightGradient, layer: self.name, n: n, ctx, time: {
            if scratch == nil { scratch = .allocate(capacity: self.outFeatures * self.inFeatures) }
            dense(scratch!, 0)
        }, {
            if scratch == nil { scratch = .allocate(capacity: self.outFeatures * self.inFeatures) }
            scratch!.update(repeating: 0, count: max(1, k.byRow.count))
            sampled(.packed(scratch!))
        })
        k.lastPaths[KernelPass.weightGradient.rawValue] = path
        if path == .sparse {
            if let slot = store.packedGradientSlot?(weight), slot.count == k.byRow.count {
                // Born packed: the reducer sends this slot as it is, the optimizer reads it.
                slot.update(repeating: 0)
                sampled(.packed(slot.baseAddress!))
                store.gradientPlacement[weight.index] = .packed
            } else {
                if previous == .packed {
                    for e in 0..<k.byRow.count { g[Int(k.byRow.weightOffset[e])] = 0 }
                }
                sampled(.dense(g))
                store.gradientPlacement[weight.index] = .atMaskOnly
            }
        } else {
            dense(g, denseBeta)
        }
    }
}
