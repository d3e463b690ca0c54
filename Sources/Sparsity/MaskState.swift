import NN
import Tensor

/// The one owner of a model's mask: the 0/1 mask buffer of the parameter store, the active
/// positions of every maskable layer, and a generation number that goes up with every change.
///
/// The reducer, the optimizer, the kernels and the checkpoint read the mask through here or are
/// rebuilt when `generation` moves; `replace(with:)` is the only way a mask changes once training
/// has started. Masked weights and their momentum are +0 whenever the mask is not being changed.
public final class MaskState {
    public let store: ParameterStore
    public let layers: [MaskableLayer]
    /// Number of changes applied since the state was built (0 = the initial mask).
    public private(set) var generation = 0
    /// Active positions of each layer, relative to its offset, ascending. `[layer][k]`.
    public private(set) var activeIndices: [[Int32]] = []

    /// `generation`: changes already applied before this state was built (a resumed run's).
    public init(store: ParameterStore, generation: Int = 0) {
        self.store = store
        self.generation = generation
        layers = MaskableLayer.all(in: store)
        layerAtOffset = Dictionary(uniqueKeysWithValues: layers.enumerated().map { ($1.offset, $0) })
        weights = store.parameters.filter(\.maskable).map(\.ref)
        packsMomentum = store.transform == nil
        rebuildIndices()
        store.maskDidChange()
        indexedGeneration = store.maskGeneration
        store.activePositions = { [weak self] ref in self?.activePositions(of: ref) }
    }

    /// Layer number by the offset of its weights.
    private let layerAtOffset: [Int: Int]
    /// The store's reference of each layer's weight.
    private let weights: [ParameterRef]
    /// Whether the layers' momentum is kept packed at their active positions (always, except
    /// under a weight transform, which trains every entry).
    private let packsMomentum: Bool
    /// The store's mask generation that `activeIndices` describe.
    private var indexedGeneration = -1

    /// The active positions of the weight `ref`, or nil when it is not a maskable weight or the
    /// store's mask has changed by another way since this state indexed it.
    public func activePositions(of ref: ParameterRef) -> [Int32]? {
        guard store.maskGeneration == indexedGeneration, let l = layerAtOffset[ref.offset], layers[l].count == ref.count else { return nil }
        return activeIndices[l]
    }

    /// Active weights per layer.
    public var activeCounts: [Int] { activeIndices.map(\.count) }
    /// Active weights over all maskable layers.
    public var activeTotal: Int { activeIndices.reduce(0) { $0 + $1.count } }
    /// Weights in all maskable layers, `N = Σ m_l`.
    public var maskableTotal: Int { layers.reduce(0) { $0 + $1.count } }
    /// `activeTotal / N`.
    public var globalDensity: Double { Double(activeTotal) / Double(max(1, maskableTotal)) }
    /// Active fraction of each layer.
    public var layerDensities: [Double] { zip(activeIndices, layers).map { Double($0.count) / Double($1.count) } }
    /// The mask buffer (store layout), for readers.
    public var mask: UnsafeBufferPointer<Float> { UnsafeBufferPointer(store.mask) }

    /// Makes the maskable entries of `newMask` (a buffer with the store's layout; non-zero =
    /// active) the mask. Entries that leave the mask and entries that join it get weight and
    /// momentum +0 (entries active before and after keep theirs); the index lists are rebuilt,
    /// packed momentum and values move to the new positions, and the generation goes up.
    /// - Returns: how many entries left and joined each layer.
    @discardableResult
    public func replace(with newMask: UnsafeBufferPointer<Float>) -> MaskDelta {
        precondition(newMask.count == store.count, "a mask needs the store's layout (\(store.count) entries)")
        let m = store.mask, w = store.values
        var delta = MaskDelta(dropped: [], grown: [])
        for l in layers {
            var dropped = 0, grown = 0
            for i in l.offset..<(l.offset + l.count) {
                let was = m[i] != 0, now = newMask[i] != 0
                if was != now {
                    if was { dropped &+= 1 } else { grown &+= 1 }
                    w[i] = 0
                    m[i] = now ? 1 : 0
                }
            }
            delta.dropped.append(dropped)
            delta.grown.append(grown)
        }
        // Dense momentum: the entries that left get +0 (those that joined were masked, so +0).
        if !packsMomentum { store.applyMask() }
        rebuildIndices()
        generation += 1
        store.maskDidChange()
        indexedGeneration = store.maskGeneration
        return delta
    }

    /// `w ← +0`, `v ← +0` wherever the mask is 0 (after a rewind or a load).
    public func zeroInactive() { store.applyMask() }

    private func rebuildIndices() {
        let m = store.mask.baseAddress!
        activeIndices = layers.map { l in nonZeroPositions(of: m + l.offset, count: l.count) }
        if packsMomentum {
            for (ref, active) in zip(weights, activeIndices) { store.pack(ref, positions: active) }
        }
    }
}

/// What one mask change did, per layer (in `MaskState.layers` order).
public struct MaskDelta: Sendable, Equatable {
    public var dropped: [Int]
    public var grown: [Int]
    /// Entries that changed state (dropped + grown).
    public var moved: Int { dropped.reduce(0, +) + grown.reduce(0, +) }
}
