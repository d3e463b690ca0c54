/// Magnitude pruning: keep the weights of largest |w| among the active ones, either over all
/// maskable layers together (`global`, as IMP does) or within each layer at its own density.
/// Masks only shrink: inactive weights stay inactive.
/// - Parameters:
///   - density: fraction of all maskable weights to keep (global), or per-layer densities.
/// - Returns: active weights per layer after pruning, written into `mask`.
@discardableResult
public func magnitudePrune(
    _ layers: [MaskableLayer], values: UnsafeBufferPointer<Float>, mask: UnsafeMutableBufferPointer<Float>,
    density: MagnitudeTarget
) -> [Int] {
    func prune(_ candidates: [Int], keep: Int) {
        guard keep < candidates.count else { return }
        // Smallest |w| first, ties by position, so the result is deterministic.
        let order = candidates.sorted {
            let a = abs(values[$0]), b = abs(values[$1])
            return a != b ? a < b : $0 < $1
        }
        for i in order.prefix(candidates.count - max(0, keep)) { mask[i] = 0 }
    }
    func active(_ l: MaskableLayer) -> [Int] { (l.offset..<(l.offset + l.count)).filter { mask[$0] != 0 } }
    switch density {
    case .global(let d):
        let total = layers.reduce(0) { $0 + $1.count }
        prune(layers.flatMap(active), keep: Int((d * Double(total)).rounded()))
    case .perLayer(let ds):
        precondition(ds.count == layers.count, "one density per layer")
        for (l, d) in zip(layers, ds) { prune(active(l), keep: Int((d * Double(l.count)).rounded())) }
    }
    return layers.map { l in (l.offset..<(l.offset + l.count)).reduce(0) { $0 + (mask[$1] != 0 ? 1 : 0) } }
}

/// What magnitude pruning keeps.
public enum MagnitudeTarget: Sendable {
    /// This fraction of all maskable weights, ranked together.
    case global(Double)
    /// These fractions of each layer, ranked within the layer.
    case perLayer([Double])
}
