import Tensor

/// Fully connected layer on feature columns: `Y[out, N] = W[out, in] · X[in, N] + b`.
///
/// Weight and bias uniform ±1/√in (PyTorch's default). Backward: `dW += dY·Xᵀ`,
/// `db += Σ_n dY`, `dX = Wᵀ·dY`.
public final class Linear: Layer {
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inFeatures: Int, outFeatures: Int
    public var needsInputGradient = true

    private let store: ParameterStore
    private let output = Tensor()
    private unowned(unsafe) var input: Tensor?

    public init(_ name: String, store: ParameterStore, inFeatures: Int, outFeatures: Int, bias: Bool = true) {
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

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear) {
            input = x
            let n = x.shape.n
            output.reshape(Shape(n: n, c: outFeatures))
            if let bias {
                let b = store.value(bias)
                for o in 0..<outFeatures { (output.data + o * n).update(repeating: b[o], count: n) }
            }
            gemm(.none, .none, m: outFeatures, n: n, k: inFeatures, a: store.forwardWeight(weight),
                 lda: inFeatures, b: x.data, ldb: n, beta: bias == nil ? 0 : 1, c: output.data, ldc: n)
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.linear) {
            guard let x = input else { preconditionFailure("Linear.backward before forward") }
            let n = x.shape.n
            gemm(.none, .transposed, m: outFeatures, n: inFeatures, k: n, a: dy.data, lda: n,
                 b: x.data, ldb: n, beta: 1, c: store.gradient(weight), ldc: inFeatures)
            if let bias {
                let db = store.gradient(bias)
                for o in 0..<outFeatures { db[o] += sum(dy.data + o * n, n) }
                store.onGradientReady?(bias)
            }
            store.onGradientReady?(weight)
            let inputGradient = ctx.gradientBuffer(needsInputGradient ? x.shape : Shape(n: 0, c: 0))
            if needsInputGradient {
                gemm(.transposed, .none, m: inFeatures, n: n, k: outFeatures, a: store.forwardWeight(weight),
                     lda: inFeatures, b: dy.data, ldb: n, c: inputGradient.data, ldc: n)
            }
            ctx.release(dy)
            return inputGradient
        }
    }
}
