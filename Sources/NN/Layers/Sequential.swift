/// Layers applied one after another; backward runs them in reverse.
public final class Sequential: Layer {
    public private(set) var layers: [Layer]

    public init(_ layers: [Layer] = []) { self.layers = layers }

    public func append(_ layer: Layer) { layers.append(layer) }

    public func outputShape(for s: Shape) throws -> Shape {
        try layers.reduce(s) { try $1.outputShape(for: $0) }
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        forward(layers[...], x, ctx)
    }

    /// The forward pass of all layers but the last.
    func forwardAllButLast(_ x: Tensor, _ ctx: Context) -> Tensor {
        forward(layers.dropLast(), x, ctx)
    }

    /// Runs `list` forward. A batch norm with its ReLU followed by a 2×2 max pooling that tiles
    /// its output runs as one pass (`MaxPool2d.forward(normalizing:by:_:)`): the batch norm's
    /// output is neither written nor read back.
    private func forward(_ list: ArraySlice<Layer>, _ x: Tensor, _ ctx: Context) -> Tensor {
        var y = x, i = list.startIndex
        while i < list.endIndex {
            if let bn = list[i] as? BatchNorm, i + 1 < list.endIndex, let pool = list[i + 1] as? MaxPool2d,
               pool.fuses(after: bn, y.shape) {
                y = pool.forward(normalizing: y, by: bn, ctx)
                i += 2
            } else {
                y = list[i].forward(y, ctx)
                i += 1
            }
        }
        return y
    }

    /// Runs the layers backward; a batch norm and max pooling that ran as one pass forward run
    /// as one backward (`MaxPool2d.backward(_:throughNormalization:_:)`).
    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        var g = dy, i = layers.count - 1
        while i >= 0 {
            if i > 0, let pool = layers[i] as? MaxPool2d, let bn = layers[i - 1] as? BatchNorm,
               pool.fuses(after: bn, pool.inputShape) {
                g = pool.backward(g, throughNormalization: bn, ctx)
                i -= 2
            } else {
                g = layers[i].backward(g, ctx)
                i -= 1
            }
        }
        return g
    }

    public var parameterRefs: [ParameterRef] { layers.flatMap(\.parameterRefs) }
    public var batchNorms: [BatchNorm] { layers.flatMap(\.batchNorms) }

    public var kernelReports: [KernelReport] { layers.flatMap(\.kernelReports) }
    public func refreshSparseKernels(_ ctx: Context) { for l in layers { l.refreshSparseKernels(ctx) } }

    public func weightFlops(for s: Shape) -> [(ref: ParameterRef, flops: Double)] {
        var shape = s
        var all: [(ref: ParameterRef, flops: Double)] = []
        for l in layers {
            all += l.weightFlops(for: shape)
            shape = (try? l.outputShape(for: shape)) ?? shape
        }
        return all
    }

    public func forwardFlops(for s: Shape) -> Double {
        var shape = s
        var total = 0.0
        for l in layers {
            total += l.forwardFlops(for: shape)
            shape = (try? l.outputShape(for: shape)) ?? shape
        }
        return total
    }
}
