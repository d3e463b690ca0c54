import Foundation

/// The momentum of a maskable weight kept packed: entry k belongs to position `positions[k]`
/// (ascending, relative to the weight's offset) — the mask's active positions. At density d it
/// takes d of the dense momentum's memory, and the optimizer reads it in order.
struct PackedMomentum {
    var positions: [Int32]
    var values: UnsafeMutableBufferPointer<Float>
}

/// Momentum access that hides whether a weight's momentum is dense or packed.
extension ParameterStore {
    /// The packed momentum of `ref` (entry k at position `packedMomentumPositions(ref)[k]`), or
    /// nil when it lives in the dense layout.
    public func packedMomentum(_ ref: ParameterRef) -> UnsafeMutableBufferPointer<Float>? {
        packedMomenta[ref.index]?.values
    }

    /// The positions a packed momentum is kept at, or nil when it is dense.
    public func packedMomentumPositions(_ ref: ParameterRef) -> [Int32]? { packedMomenta[ref.index]?.positions }

    /// Whether some weight keeps its momentum packed.
    public var hasPackedMomentum: Bool { !packedMomenta.isEmpty }

    /// Keeps the momentum of the maskable weight `ref` packed at `positions` (ascending) from
    /// now on: a packed momentum keeps the entries at positions in both lists and gets +0 at
    /// new ones (a mask change); a dense one is gathered at `positions` and its range of the
    /// dense buffer released. Entries off `positions` must be +0 (masked momentum is).
    public func packMomentum(_ ref: ParameterRef, positions: [Int32]) {
        precondition(parameters[ref.index].maskable, "only a maskable weight's momentum is packed")
        precondition(transform == nil, "under a weight transform every entry is trained: momentum stays dense")
        let packed = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(positions.count, 1))
        let next = UnsafeMutableBufferPointer(rebasing: packed[0..<positions.count])
        if let old = packedMomenta[ref.index] {
            // Merge of two ascending lists: a shared position keeps its value.
            var j = 0
            for (k, p) in positions.enumerated() {
                while j < old.positions.count && old.positions[j] < p { j += 1 }
                next[k] = j < old.positions.count && old.positions[j] == p ? old.values[j] : 0
            }
            old.values.deallocate()
        } else {
            let dense = momentum.baseAddress! + ref.offset
            for (k, p) in positions.enumerated() { next[k] = dense[Int(p)] }
            Self.zeroReleasingPages(dense, ref.count)
        }
        packedMomenta[ref.index] = PackedMomentum(positions: positions, values: next)
    }

    /// The momentum of `ref` in the dense layout (a packed one scattered, +0 elsewhere).
    public func momentum(_ ref: ParameterRef) -> [Float] {
        guard let p = packedMomenta[ref.index] else {
            return Array(UnsafeBufferPointer(start: momentum.baseAddress! + ref.offset, count: ref.count))
        }
        var out = [Float](repeating: 0, count: ref.count)
        for (k, i) in p.positions.enumerated() { out[Int(i)] = p.values[k] }
        return out
    }

    /// The whole store's momentum in the dense layout (checkpoint comparisons, tests).
    public func momentumInStoreLayout() -> [Float] { parameters.flatMap { momentum($0.ref) } }

    /// Sets the momentum of `ref` from `dense` (its `ref.count` values in the dense layout); a
    /// packed momentum takes the entries at its positions (the others must be +0).
    public func setMomentum(_ ref: ParameterRef, from dense: UnsafePointer<Float>) {
        if let p = packedMomenta[ref.index] {
            for (k, i) in p.positions.enumerated() { p.values[k] = dense[Int(i)] }
        } else {
            (momentum.baseAddress! + ref.offset).update(from: dense, count: ref.count)
        }
    }

    /// Every momentum entry to +0.
    public func zeroMomentum() {
        for p in parameters {
            if let packed = packedMomenta[p.ref.index] {
                packed.values.update(repeating: 0)
            } else {
                (momentum.baseAddress! + p.ref.offset).update(repeating: 0, count: p.ref.count)
            }
        }
    }

    /// Whether every momentum entry is finite.
    public var momentumIsFinite: Bool {
        momentum.allSatisfy(\.isFinite) && packedMomenta.values.allSatisfy { $0.values.allSatisfy(\.isFinite) }
    }
}
