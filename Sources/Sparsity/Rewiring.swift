/// RiGL's drop-and-grow for one layer (Evci et al. 2020, as dynamic sparse training runs it):
/// drop the `r = ⌈α·nnz⌉` active weights of smallest |w|, then grow `r` entries of largest |g|
/// (dense gradient) among those inactive after the drop — just-dropped entries are eligible and
/// then simply stay. Ties go to the lower position. The layer's active count is unchanged.
/// - Parameters:
///   - values, gradients: buffers with the store's layout (read at the layer's positions).
///   - mask: the proposed mask (store layout), changed in place at the layer's positions.
///   - dropFraction: α in [0, 1].
/// - Returns: the number of weights dropped (and grown), `r`.
@discardableResult
public func rewire(
    _ layer: MaskableLayer, values: UnsafeBufferPointer<Float>, gradients: UnsafeBufferPointer<Float>,
    mask: UnsafeMutableBufferPointer<Float>, dropFraction: Double
) -> Int {
    let base = layer.offset
    var active: [Int] = [], inactive: [Int] = []
    for i in 0..<layer.count {
        if mask[base + i] != 0 { active.append(i) } else { inactive.append(i) }
    }
    let r = min(active.count, Int((dropFraction * Double(active.count)).rounded(.up)))
    guard r > 0 else { return 0 }
    let magnitudes = active.map { abs(values[base + $0]) }
    let dropped = magnitudes.withUnsafeBufferPointer { smallestIndices($0, count: r) }
    for k in dropped { mask[base + active[Int(k)]] = 0 }
    // Candidates in position order: previously inactive and just dropped.
    var candidates = inactive + dropped.map { active[Int($0)] }
    candidates.sort()
    let negatedGradients = candidates.map { -abs(gradients[base + $0]) }
    let grown = negatedGradients.withUnsafeBufferPointer { smallestIndices($0, count: r) }
    for k in grown { mask[base + candidates[Int(k)]] = 1 }
    return r
}
