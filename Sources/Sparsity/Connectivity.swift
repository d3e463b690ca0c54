/// What a mask cuts off: per layer, the output units left without any active incoming weight
/// (in-degree 0). In the last layer those are classes whose logit no input can move.
public struct Disconnection: Sendable {
    public struct Layer: Sendable {
        public let name: String
        public let deadOutputs: Int, outputs: Int, active: Int
    }
    public let layers: [Layer]

    public init(_ layers: [MaskableLayer], mask: UnsafeBufferPointer<Float>) {
        let active = activeCounts(layers, mask: mask)
        self.layers = zip(layers, active).map { layer, n in
            Layer(name: layer.name, deadOutputs: deadUnits(layer, mask: mask.baseAddress!).outputs.count,
                  outputs: layer.outUnits, active: n)
        }
    }

    /// Units without inputs over all layers.
    public var deadUnitCount: Int { layers.reduce(0) { $0 + $1.deadOutputs } }
    public var units: Int { layers.reduce(0) { $0 + $1.outputs } }
    /// Classes (outputs of the last layer) without inputs.
    public var deadClasses: Int { layers.last?.deadOutputs ?? 0 }
    /// Layers with no active weight at all.
    public var emptyLayers: [String] { layers.filter { $0.active == 0 }.map(\.name) }
    /// The network still reaches every class through layers that all keep weights.
    public var isConnected: Bool { deadClasses == 0 && emptyLayers.isEmpty }

    /// "n of N units have no inputs (layer a 3/64, …)", listing the worst layers first.
    public var summary: String {
        let worst = layers.filter { $0.deadOutputs > 0 }.sorted { $0.deadOutputs * $1.outputs > $1.deadOutputs * $0.outputs }
        let listed = worst.prefix(4).map { "\($0.name) \($0.deadOutputs)/\($0.outputs)" }.joined(separator: ", ")
        return "\(deadUnitCount) of \(units) units have no inputs (\(listed)\(worst.count > 4 ? ", …" : ""))"
    }
}
