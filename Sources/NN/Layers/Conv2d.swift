import Foundation
import Tensor

/// 2-D convolution over channel-major activations. Dense passes (`Conv2d+DensePasses.swift`):
/// im2col + one GEMM per chunk of images, or for 3×3 stride-1 padding-1 layers the pixel
/// product (images ≤ 2×2), Winograd (from 64 channels) or the direct kernel `Conv3x3`. With
/// sparse kernels on, each pass is dense or sparse (`MaskedPasses`): a 1×1 unpadded convolution
/// as a `MaskedMatmul` over `n·Ho·Wo` columns (X, or with stride s > 1 its copy subsampled to
/// every s-th row and column, is the column matrix), any other as a `MaskedConvolution`.
///
/// Weight (Cout, Cin, kh, kw), Kaiming-normal with fan-out (`std = √(2 / (Cout·kh·kw))`);
/// optional bias (Cout), uniform ±1/√fan-in. Forward: `Y[Cout, n·Ho·Wo] = W · col(X)`.
/// Backward: `dW += dY · colᵀ`, `dcol = Wᵀ · dY`, `dX = col2im(dcol)`.
public final class Conv2d: Layer {
    public let weight: ParameterRef
    public let bias: ParameterRef?
    public let inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int, padding: Int
    /// False for the first layer: its input gradient is never used.
    public var needsInputGradient = true

    public let name: String
    let store: ParameterStore
    let output = Tensor()
    /// A strided pointwise convolution's input at every `stride`-th row and column
    /// (Cin, n, Ho, Wo): what its passes read, kept for the weight gradient.
    private let subsampledInput = Tensor()
    /// The pixel product's W' (kept from the forward pass for the input gradient) and its
    /// activations image-major: input side (n × Cin·P), output side (n × Cout·P); see
    /// `Conv2d+PixelProduct.swift`.
    let pixelWeights = Tensor(), imageMajorInput = Tensor(), imageMajorOutput = Tensor()
    /// Whether `pixelWeights` holds this step's weights (built by this forward pass).
    var pixelWeightsCurrent = false
    private var matmul: MaskedMatmul?
    private var convolution: MaskedConvolution?
    /// Forward + backward seconds while profiling.
    private var profiledSeconds = 0.0
    /// What the dense passes of the last forward's input run (`denseAlgorithm`).
    private var denseAlgorithmName: String?
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

    /// A 1×1 unpadded convolution: a product with the (subsampled, if strided) input.
    var isPointwise: Bool { kernelSize == 1 && padding == 0 }

    /// The geometry the passes see for an input of shape `s` as they read it: a strided
    /// pointwise convolution's passes read its subsampled input with stride 1.
    func passGeometry(_ s: Shape) -> ConvGeometry {
        isPointwise ? ConvGeometry(channels: s.c, height: s.h, width: s.w, kernelH: 1, kernelW: 1, stride: 1, padding: 0)
            : geometry(s)
    }

    /// What the passes read for input `x`: `x` itself, or for a strided pointwise convolution
    /// its subsampled copy (im2col of a 1×1 kernel with stride s).
    private func passInput(_ x: Tensor, _ ctx: Context) -> Tensor {
        guard isPointwise && stride > 1 else { return x }
        let g = geometry(x.shape)
        subsampledInput.reshape(Shape(n: x.shape.n, c: inChannels, h: g.outHeight, w: g.outWidth))
        im2col(x.data, batch: x.shape.n, first: 0, count: x.shape.n, geometry: g, col: subsampledInput.data,
               threads: ctx.threads)
        return subsampledInput
    }

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
        var report = kernelReport(matmul ?? convolution, name: name, weight: weight, store: store,
                                  computesInputGradient: needsInputGradient, seconds: profiledSeconds)
        report.denseAlgorithm = denseAlgorithmName
        return [report]
    }

    public func refreshSparseKernels(_ ctx: Context) { _ = sparsePasses(ctx) }

    /// The masked passes of this layer when they may run sparse: a matmul over images × pixels
    /// for a pointwise convolution, the framed sparse convolution for any other.
    private func sparsePasses(_ ctx: Context) -> MaskedPasses? {
        if isPointwise {
            return maskedMatmul(&matmul, name: name, weight: weight, rows: outChannels, cols: inChannels, transposedIndex: true,
                                store: store, ctx)
        }
        return maskedPasses(&convolution, store: store, weight: weight, ctx) {
            MaskedConvolution(name: name, weight: weight, outChannels: outChannels, inChannels: inChannels,
                              kernelSize: kernelSize, stride: stride, padding: padding)
        }
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv, layerSeconds: &profiledSeconds) {
            input = x
            pixelWeightsCurrent = false
            let g = geometry(x.shape), cols = x.shape.n * g.outPlane
            output.reshape(Shape(n: x.shape.n, c: outChannels, h: g.outHeight, w: g.outWidth))
            let x = passInput(x, ctx), s = x.shape
            denseAlgorithmName = denseAlgorithm(s, ctx)
            let dense = { self.denseForward(x, ctx) }
            switch sparsePasses(ctx) {
            case let m as MaskedMatmul:
                m.forward(store, x: x.data, ldx: cols, n: cols, y: output.data, ldy: cols, accumulate: false,
                          inputGradientFollows: needsInputGradient && ctx.training, ctx, prepare: {}, dense: dense)
            case let m as MaskedConvolution:
                m.forward(store, x: x.data, shape: s, outputPixels: cols, y: output.data, ctx, dense: dense)
            default:
                dense()
            }
            addBias(cols: cols)
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.conv, layerSeconds: &profiledSeconds) {
            guard let input else { preconditionFailure("Conv2d.backward before forward") }
            let x = isPointwise && stride > 1 ? subsampledInput : input
            let s = x.shape, cols = s.n * passGeometry(s).outPlane, passes = sparsePasses(ctx)
            let denseGradient = { (target: UnsafeMutablePointer<Float>, beta: Float) in
                self.denseWeightGradient(x, dy, into: target, beta: beta, ctx)
            }
            switch passes {
            case let m as MaskedMatmul:
                m.weightGradient(store, dy: dy.data, lddy: cols, x: x.data, ldx: cols, n: cols, ctx, dense: denseGradient)
            case let m as MaskedConvolution:
                m.weightGradient(store, x: x.data, shape: s, dy: dy.data, outputPixels: cols, ctx, dense: denseGradient)
            default:
                denseGradient(store.gradient(weight), 1)
            }
            biasGradient(dy, cols: cols)
            store.onGradientReady?(weight)
            let inputGradient = ctx.gradientBuffer(needsInputGradient ? input.shape : Shape(n: 0, c: 0))
            if needsInputGradient {
                // A strided pointwise convolution's gradient lands on the subsampled positions.
                let subsampled = x !== input ? ctx.gradientBuffer(s) : nil
                let dx = (subsampled ?? inputGradient).data
                let dense = { self.denseInputGradient(dy, into: dx, inputShape: s, ctx) }
                switch passes {
                case let m as MaskedMatmul:
                    m.inputGradient(store, dy: dy.data, lddy: cols, n: cols, dx: dx, lddx: cols, ctx, dense: dense)
                case let m as MaskedConvolution:
                    m.inputGradient(store, dy: dy.data, shape: s, outputPixels: cols, dx: dx, ctx, dense: dense)
                default:
                    dense()
                }
                if let subsampled {
                    inputGradient.zero()
                    col2im(subsampled.data, batch: s.n, first: 0, count: s.n, geometry: geometry(input.shape),
                           dx: inputGradient.data, threads: ctx.threads)
                    ctx.release(subsampled)
                }
            }
            ctx.release(dy)
            return inputGradient
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

    public func forwardFlops(for s: Shape) -> Double {
        let g = geometry(s)
        return 2 * Double(outChannels * g.patchSize * g.outPlane * s.n)
    }

}
