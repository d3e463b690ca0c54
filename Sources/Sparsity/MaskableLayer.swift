import NN

/// A prunable weight tensor seen as a bipartite layer: `outUnits × inUnits` connections, each
/// made of `kernel` weights (kh·kw for a convolution, 1 for a linear layer).
public struct MaskableLayer: Sendable, Equatable {
    public var name: String
    /// Offset of the weights in the flat parameter buffer.
    public var offset: Int
    public var outUnits: Int
    public var inUnits: Int
    public var kernelH: Int
    public var kernelW: Int
    /// A convolution (4-d weight); otherwise a linear layer.
    public var isConvolution: Bool

    public init(name: String, offset: Int, outUnits: Int, inUnits: Int, kernelH: Int = 1, kernelW: Int = 1,
                isConvolution: Bool? = nil) {
        self.isConvolution = isConvolution ?? (kernelH * kernelW > 1)
        self.name = name
        self.offset = offset
        self.outUnits = outUnits
        self.inUnits = inUnits
        self.kernelH = kernelH
        self.kernelW = kernelW
    }

    /// Weights in the tensor, `m_l`.
    public var count: Int { outUnits * inUnits * kernel }
    /// Weights per (out, in) connection.
    public var kernel: Int { kernelH * kernelW }
    public var shape: [Int] { isConvolution ? [outUnits, inUnits, kernelH, kernelW] : [outUnits, inUnits] }
}

extension MaskableLayer {
    /// The maskable tensors of a parameter store, in order (conv and linear weights).
    public static func all(in store: ParameterStore) -> [MaskableLayer] {
        store.parameters.filter(\.maskable).map { p in
            let s = p.shape
            return MaskableLayer(
                name: p.name, offset: p.ref.offset, outUnits: s[0], inUnits: s.count > 1 ? s[1] : 1,
                kernelH: s.count > 2 ? s[2] : 1, kernelW: s.count > 3 ? s[3] : 1, isConvolution: s.count == 4)
        }
    }
}

/// Errors of the sparsity tools, each a sentence for the user.
public struct SparsityError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
