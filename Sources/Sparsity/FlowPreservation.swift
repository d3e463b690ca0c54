import Tensor

/// Repairs of units that a random mask cut off (paper §4, Tables 6–7).
///
/// Within a layer, output unit o is *dead* when no weight `w[o, ·, ·, ·]` is active (in-degree 0)
/// and input unit i when no weight `w[·, i, ·, ·]` is (out-degree 0).
public enum FlowPreservation: String, CaseIterable, Sendable {
    case none
    /// Connect each dead unit to one random partner (one random kernel position).
    case randomAddition = "random-addition"
    /// Redraw each dead unit's row or column (Bernoulli with the layer's density) until it has
    /// an edge.
    case rejection
}

/// What flow preservation did to one layer.
public struct FlowRepair: Sendable, Equatable {
    /// Dead output units and dead input units found before repair.
    public var deadOutputs: Int
    public var deadInputs: Int
    /// Weights switched on.
    public var edgesAdded: Int
    /// Weights switched off to keep the count (random addition with `keepCount`).
    public var edgesRemoved: Int
}

/// Units with in-degree 0 (outputs) and out-degree 0 (inputs) in `layer`.
public func deadUnits(_ layer: MaskableLayer, mask: UnsafePointer<Float>) -> (outputs: [Int], inputs: [Int]) {
    let k = layer.kernel, cin = layer.inUnits
    var inDegree = [Int](repeating: 0, count: layer.outUnits)
    var outDegree = [Int](repeating: 0, count: cin)
    let w = mask + layer.offset
    for o in 0..<layer.outUnits {
        for i in 0..<cin {
            let base = (o * cin + i) * k
            var any = false
            for t in 0..<k where w[base + t] != 0 { any = true; break }
            if any { inDegree[o] += 1; outDegree[i] += 1 }
        }
    }
    return (inDegree.indices.filter { inDegree[$0] == 0 }, outDegree.indices.filter { outDegree[$0] == 0 })
}

/// Applies `method` to every layer of `mask`; returns what was repaired per layer.
/// - Parameter keepCount: random addition also switches off one random other weight per weight
///   added (never one whose removal would create a new dead unit), keeping the layer's count.
public func preserveFlow(
    _ layers: [MaskableLayer], densities: [Double], method: FlowPreservation, keepCount: Bool = false,
    seed: UInt64, mask: UnsafeMutableBufferPointer<Float>
) -> [FlowRepair] {
    layers.indices.map { l in
        let layer = layers[l]
        let (deadOut, deadIn) = deadUnits(layer, mask: mask.baseAddress!)
        var repair = FlowRepair(deadOutputs: deadOut.count, deadInputs: deadIn.count, edgesAdded: 0, edgesRemoved: 0)
        guard method != .none, !(deadOut.isEmpty && deadIn.isEmpty) else { return repair }
        var rng = layerGenerator(seed: seed ^ 0xF10E, layer: l)
        let w = mask.baseAddress! + layer.offset
        let k = layer.kernel, cin = layer.inUnits, cout = layer.outUnits
        var added: [Int] = []
        func set(_ index: Int) {
            if w[index] == 0 { w[index] = 1; added.append(index); repair.edgesAdded += 1 }
        }
        switch method {
        case .none:
            break
        case .randomAddition:
            for o in deadOut { set((o * cin + rng.nextIndex(below: cin)) * k + rng.nextIndex(below: k)) }
            // Re-check inputs: an edge added for a dead output may already have revived one.
            for i in deadUnits(layer, mask: mask.baseAddress!).inputs {
                set((rng.nextIndex(below: cout) * cin + i) * k + rng.nextIndex(below: k))
            }
        case .rejection:
            let p = max(densities[l], 1 / Double(cin * k))
            for o in deadOut {
                repeat {
                    for j in 0..<(cin * k) where rng.nextDouble() < p { set(o * cin * k + j) }
                } while (0..<(cin * k)).allSatisfy { w[o * cin * k + $0] == 0 }
            }
            let pIn = max(densities[l], 1 / Double(cout * k))
            for i in deadUnits(layer, mask: mask.baseAddress!).inputs {
                repeat {
                    for o in 0..<cout { for t in 0..<k where rng.nextDouble() < pIn { set((o * cin + i) * k + t) } }
                } while (0..<cout).allSatisfy { o in (0..<k).allSatisfy { w[(o * cin + i) * k + $0] == 0 } }
            }
        }
        if keepCount && method == .randomAddition {
            repair.edgesRemoved = removeKeepingFlow(layer, count: added.count, protected: Set(added), rng: &rng, w: w)
        }
        return repair
    }
}

/// Switches off up to `count` random active weights that are not `protected`, never the last
/// active weight of a row or column (so no unit dies). Returns how many were removed.
private func removeKeepingFlow(
    _ layer: MaskableLayer, count: Int, protected: Set<Int>, rng: inout Xoshiro256, w: UnsafeMutablePointer<Float>
) -> Int {
    let k = layer.kernel, cin = layer.inUnits
    var rowActive = [Int](repeating: 0, count: layer.outUnits)
    var colActive = [Int](repeating: 0, count: cin)
    var candidates: [Int] = []
    for idx in 0..<layer.count where w[idx] != 0 {
        rowActive[idx / (cin * k)] += 1
        colActive[(idx / k) % cin] += 1
        if !protected.contains(idx) { candidates.append(idx) }
    }
    var removed = 0
    while removed < count && !candidates.isEmpty {
        let pick = rng.nextIndex(below: candidates.count)
        let idx = candidates.swapAt(pick)
        let o = idx / (cin * k), i = (idx / k) % cin
        if rowActive[o] > 1 && colActive[i] > 1 {
            w[idx] = 0
            rowActive[o] -= 1
            colActive[i] -= 1
            removed += 1
        }
    }
    return removed
}

private extension Array {
    /// Removes and returns element `i` in O(1) (order not kept).
    mutating func swapAt(_ i: Int) -> Element {
        swapAt(i, count - 1)
        return removeLast()
    }
}
