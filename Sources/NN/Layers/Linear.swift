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
    private var matmul: MaskedMatmul?
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
    public var kernelReports: [KernelReport] {
        [kernelReport(matmul, name: name, weight: weight, store: store,
                      computesInputGradient: needsInputGradient, seconds: profiledSeconds)]
    }

    public func refreshSparseKernels(_ ctx: Context) { _ = sparseMatmul(ctx) }
    /// Whether the layer holds a sparse index now.
    var holdsSparseIndex: Bool { matmul != nil }

    private func sparseMatmul(_ ctx: Context) -> MaskedMatmul? {
        maskedMatmul(&matmul, name: name, weight: weight, rows: outFeatures, cols: inFeatures, transposedIndex: false,
                     store: store, ctx)
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear, layerSeconds: &profiledSeconds) {
            input = x
            let n = x.shape.n
            output.reshape(Shape(n: n, c: outFeatures))
            let y = output.data
            let writeBias = {
                if let bias = self.bias {
                    let b = self.store.value(bias)
                    for o in 0..<self.outFeatures { (y + o * n).update(repeating: b[o], count: n) }
                }
            }
            let beta: Float = bias == nil ? 0 : 1
            let dense = {
                let w = self.store.forwardWeight(self.weight)
                BLAS.withThreads(ctx.threads) {
                    gemm(.none, .none, m: self.outFeatures, n: n, k: self.inFeatures, a: w, lda: self.inFeatures,
                         b: x.data, ldb: n, beta: beta, c: y, ldc: n)
                }
            }
            if let m = sparseMatmul(ctx) {
                m.forward(store, x: x.data, ldx: n, n: n, y: y, ldy: n, accumulate: bias != nil,
                          inputGradientFollows: needsInputGradient && ctx.training, ctx, prepare: writeBias, dense: dense)
            } else {
                writeBias()
                dense()
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear, layerSeconds: &profiledSeconds) {
            guard let x = input else { preconditionFailure("Linear.backward before forward") }
            let n = x.shape.n
            let m = sparseMatmul(ctx)
            let denseWeightGradient = { (target: UnsafeMutablePointer<Float>, beta: Float) in
                BLAS.withThreads(ctx.threads) {
                    gemm(.none, .transposed, m: self.outFeatures, n: self.inFeatures, k: n, a: dy.data, lda: n,
                         b: x.data, ldb: n, beta: beta, c: target, ldc: self.inFeatures)
                }
            }
            if let m {
                m.weightGradient(store, dy: dy.data, lddy: n, x: x.data, ldx: n, n: n, ctx, dense: denseWeightGradient)
            } else {
                denseWeightGradient(store.gradient(weight), 1)
            }
            if let bias {
                let db = store.gradient(bias)
                for o in 0..<outFeatures { db[o] += sum(dy.data + o * n, n) }
                store.onGradientReady?(bias)
            }
            store.onGradientReady?(weight)
            let inputGradient = ctx.gradientBuffer(needsInputGradient ? x.shape : Shape(n: 0, c: 0))
            if needsInputGradient {
                let dx = inputGradient.data
                let dense = {
                    let w = self.store.forwardWeight(self.weight)
                    BLAS.withThreads(ctx.threads) {
                        gemm(.transposed, .none, m: self.inFeatures, n: n, k: self.outFeatures, a: w, lda: self.inFeatures,
                             b: dy.data, ldb: n, c: dx, ldc: n)
                    }
                }
                if let m {
                    m.inputGradient(store, dy: dy.data, lddy: n, n: n, dx: dx, lddx: n, ctx, dense: dense)
                } else {
                    dense()
                }
            }
            ctx.release(dy)
            return inputGradient
        }
    }
}
