/// Magnitude pruning: keep the weights of largest |w| among the active ones, either over all
/// maskable layers together (`global`, as IMP does) or within each layer at its own density.
/// Masks only shrink: inactive weights stay inactive. The smallest |w| go first, ties by lower
/// position, so the result is deterministic and the kept count exact.
/// - Parameters:
///   - density: fraction or count of all maskable weights to keep (global), or per-layer densities.
/// - Returns: active weights per layer after pruning, written into `mask`.
@discardableResult
public func magnitudePrune(
    _ layers: [MaskableLayer], values: UnsafeBufferPointer<Float>, mask: UnsafeMutableBufferPointer<Float>,
    density: MagnitudeTarget
) -> [Int] {
    /// Drops the smallest |w| among the active entries of `ls` until `keep` remain.
    func prune(_ ls: [MaskableLayer], keep: Int) {
        var positions: [Int] = []
        var keys: [Float] = []
        for l in ls {
            for i in l.offset..<(l.offset + l.count) where mask[i] != 0 {
                positions.append(i)
                keys.append(abs(values[i]))
            }
        }
        guard keep < positions.count else { return }
        let drop = keys.withUnsafeBufferPointer { smallestIndices($0, count: positions.count - max(0, keep)) }
        for k in drop { mask[positions[Int(k)]] = 0 }
    }
    let total = layers.reduce(0) { $0 + $1.count }
    switch density {
    case .global(let d):
        prune(layers, keep: Int((d * Double(total)).rounded()))
    case .globalCount(let keep):
        prune(layers, keep: keep)
    case .perLayer(let ds):
        precondition(ds.count == layers.count, "one density per layer")
        for (l, d) in zip(layers, ds) { prune([l], keep: Int((d * Double(l.count)).rounded())) }
    }
    return activeCounts(layers, mask: UnsafeBufferPointer(mask))
}

/// What magnitude pruning keeps.
public enum MagnitudeTarget: Sendable {
    /// This fraction of all maskable weights, ranked together.
    case global(Double)
    /// Exactly this many weights over all maskable layers, ranked together.
    case globalCount(Int)
    /// These fractions of each layer, ranked within the layer.
    case perLayer([Double])
}
