import Tensor

/// How a random mask is drawn for a layer of density `p_l`.
public enum MaskDraw: String, CaseIterable, Sendable {
    /// Exactly `nnz_l` positions, uniformly without replacement (the density is exact).
    case count
    /// Each entry independently active with probability `p_l` (the paper's definition).
    case bernoulli
}

/// Draws random Erdős–Rényi masks into `mask` (the flat mask buffer, 1 = active) for `layers`.
///
/// Layer l uses its own generator seeded from (`seed`, l), so a mask depends only on the seed,
/// the layer's index and its density. Count mode uses selection sampling (Knuth's algorithm S):
/// one pass, exact count, positions uniform among all subsets of that size.
/// - Returns: active entries per layer.
@discardableResult
public func drawMasks(
    _ layers: [MaskableLayer], densities: [Double], nonZeros: [Int]? = nil, mode: MaskDraw, seed: UInt64,
    into mask: UnsafeMutableBufferPointer<Float>
) -> [Int] {
    precondition(densities.count == layers.count)
    return layers.indices.map { l in
        let layer = layers[l]
        var rng = layerGenerator(seed: seed, layer: l)
        let out = mask.baseAddress! + layer.offset
        let m = layer.count
        switch mode {
        case .bernoulli:
            let p = densities[l]
            var active = 0
            for i in 0..<m {
                let on = rng.nextDouble() < p
                out[i] = on ? 1 : 0
                if on { active += 1 }
            }
            return active
        case .count:
            let want = nonZeros?[l] ?? Int((densities[l] * Double(m)).rounded())
            var needed = want
            for i in 0..<m {
                // Select i with probability needed / (remaining entries).
                let on = needed > 0 && rng.nextIndex(below: m - i) < needed
                out[i] = on ? 1 : 0
                if on { needed -= 1 }
            }
            return want
        }
    }
}

/// The generator for layer `l` of a mask drawn with `seed`.
func layerGenerator(seed: UInt64, layer l: Int) -> Xoshiro256 {
    var sm = SplitMix64(seed: seed ^ 0x5EED_0F_3A5C)
    for _ in 0...l { _ = sm.next() }
    return Xoshiro256(seed: sm.next() ^ UInt64(l))
}

/// Active entries of each layer in `mask`.
public func activeCounts(_ layers: [MaskableLayer], mask: UnsafeBufferPointer<Float>) -> [Int] {
    layers.map { l in
        Int(sum(mask.baseAddress! + l.offset, l.count))
    }
}
