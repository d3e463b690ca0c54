import Foundation
import NN
import Tensor

/// Edge-popup (Ramanujan et al. 2020) inside the mask: the weights `W` are frozen at a
/// Kaiming-normal draw (fan-in, std √(2/fan_in)); the trained parameters in the store's weight
/// slots are scores `S` (Kaiming-uniform, ±1/√fan_in), and
///
///     w_eff = W ⊙ Z,   Z = the `keep[l]` entries of largest |S| among layer l's active entries
///
/// (ties to the lower position), so exactly `keep[l]` weights of layer l are used. Backward is
/// straight-through to |S|: `dL/dS = sign(S) ⊙ dL/dw_eff ⊙ W` on active entries (a score whose
/// entry would lower the loss grows in magnitude, whatever its sign). Every other parameter (biases)
/// is set to 0 and frozen; batch norms should be built without γ, β.
public final class EdgePopupScores: WeightTransform {
    public let layers: [MaskableLayer]
    /// Frozen weights of every maskable layer, concatenated in store order.
    public private(set) var frozen: [Float] = []
    /// Entries each layer uses (clamped to its active count when selecting).
    public var keep: [Int]
    /// Selected positions (relative to the layer's offset, ascending) from the last `writeEffective`.
    public private(set) var selected: [[Int32]] = []
    private var frozenOffsets: [Int] = []

    public init(store: ParameterStore) {
        layers = MaskableLayer.all(in: store)
        keep = layers.map(\.count)
    }

    public func didAllocate(_ store: ParameterStore, seed: UInt64) {
        var offset = 0
        frozenOffsets = layers.map { l in defer { offset += l.count }; return offset }
        frozen = Array(repeating: 0, count: offset)
        for (k, l) in layers.enumerated() {
            let fanIn = Float(l.inUnits * l.kernel)
            // Streams of their own: the frozen draw does not depend on the store's.
            var rng = Xoshiro256(seed: seed ^ 0x5EED_F00D ^ (UInt64(k) &* 0x9E37_79B9_7F4A_7C15))
            frozen.withUnsafeMutableBufferPointer { f in
                fillNormal(f.baseAddress! + frozenOffsets[k], l.count, std: (2 / fanIn).squareRoot(), rng: &rng)
            }
            var scoreRNG = Xoshiro256(seed: seed ^ 0x5C0_2E5 ^ (UInt64(k) &* 0xBF58_476D_1CE4_E5B9))
            let bound = 1 / fanIn.squareRoot(), s = store.values.baseAddress! + l.offset
            for i in 0..<l.count { s[i] = (scoreRNG.nextFloat() * 2 - 1) * bound }
        }
        for p in store.parameters where !p.maskable { store.value(p.ref).update(repeating: 0, count: p.ref.count) }
        store.applyMask()
    }

    public func writeEffective(_ store: ParameterStore) {
        selected = layers.enumerated().map { k, l in
            let s = store.values.baseAddress! + l.offset, m = store.mask.baseAddress! + l.offset
            var active: [Int32] = [], keys: [Float] = []
            for i in 0..<l.count where m[i] != 0 {
                active.append(Int32(truncatingIfNeeded: i))
                keys.append(-abs(s[i]))
            }
            let chosen = keys.withUnsafeBufferPointer { smallestIndices($0, count: min(keep[k], active.count)) }
            let positions = chosen.map { active[Int($0)] }
            let e = store.effective.baseAddress! + l.offset, f = frozenOffsets[k]
            e.update(repeating: 0, count: l.count)
            for i in positions { e[Int(i)] = frozen[f + Int(i)] }
            return positions
        }
    }

    public func backpropagate(_ store: ParameterStore) {
        frozen.withUnsafeBufferPointer { f in
            for (k, l) in layers.enumerated() {
                let g = store.gradients.baseAddress! + l.offset, m = store.mask.baseAddress! + l.offset
                let w = f.baseAddress! + frozenOffsets[k]
                let sc = store.values.baseAddress! + l.offset
                for i in 0..<l.count { g[i] = m[i] != 0 ? (sc[i] < 0 ? -g[i] * w[i] : g[i] * w[i]) : 0 }
            }
        }
        for p in store.parameters where !p.maskable { store.gradient(p.ref).update(repeating: 0, count: p.ref.count) }
    }

    public func effectiveCounts(_ store: ParameterStore) -> [Int] {
        zip(layers.indices, selected).map { k, positions in
            let f = frozenOffsets[k]
            return positions.reduce(0) { $0 + (frozen[f + Int($1)] != 0 ? 1 : 0) }
        }
    }

    /// Writes the selection of the last `writeEffective` into `proposal` as a mask (the final
    /// subnetwork: exactly `keep[l]` entries per layer).
    public func selectionMask(proposal: UnsafeMutableBufferPointer<Float>) {
        for (l, positions) in zip(layers, selected) {
            (proposal.baseAddress! + l.offset).update(repeating: 0, count: l.count)
            for i in positions { proposal[l.offset + Int(i)] = 1 }
        }
    }

    public func stateTensors(_ store: ParameterStore) -> [(name: String, shape: [Int], values: [Float])] {
        layers.enumerated().map { k, l in
            ("frozen/" + l.name, l.shape, Array(frozen[frozenOffsets[k]..<(frozenOffsets[k] + l.count)]))
        }
    }

    public func restoreState(_ store: ParameterStore, _ tensor: (String) -> [Float]?) throws {
        for (k, l) in layers.enumerated() {
            guard let v = tensor("frozen/" + l.name), v.count == l.count else {
                throw SparsityError("the checkpoint lacks the frozen weights frozen/\(l.name) of this edge-popup run")
            }
            frozen.replaceSubrange(frozenOffsets[k]..<(frozenOffsets[k] + l.count), with: v)
        }
    }
}
