import Comm
import Dispatch
import Foundation
import NN
import Sparsity
import Tensor

/// One mask change, as the progress output and `metrics.jsonl` show it.
public struct MaskEvent: Codable, Sendable {
    public var event = "mask_change"
    /// What changed it ("rigl", "prune 3/10 + rewire α=0.41", "imp cycle 2/4").
    public var kind: String
    /// Epoch (1-based) and global step after which it happened.
    public var epoch: Int
    public var step: Int
    public var generation: Int
    public var dropped: Int
    public var grown: Int
    public var density: Double
    public var layer_density: [String: Double]
    /// Bytes rank 0 broadcast: 1 bit per masked weight.
    public var bytes_broadcast: Int
    /// Milliseconds: the whole change and its parts (rank 0's decision, broadcast, applying it to
    /// weights and momentum with the policy's follow-up, rebuilding the reducer, checksums).
    public var ms: Double
    public var ms_decide: Double
    public var ms_broadcast: Double
    public var ms_apply: Double
    public var ms_rebuild: Double
    public var ms_verify: Double

    /// One line for the progress output.
    public var line: String {
        String(format: "mask %d (%@) after step %d: %d weights moved, density %.4f, %@ broadcast from rank 0, %.1f ms",
               generation, kind, step, dropped + grown, density, byteCount(bytes_broadcast), ms)
    }
}

/// A phase starting (an IMP cycle, the final retrain), for `metrics.jsonl`.
public struct PhaseEvent: Codable, Sendable {
    public var event = "phase"
    public var name: String
    /// First epoch of the phase (1-based), its length, and the density it starts at.
    public var epoch: Int
    public var epochs: Int
    public var density: Double
}

/// The one path by which a mask changes during training: rank 0's policy proposes the new mask,
/// rank 0 broadcasts it bit-packed, every rank applies it to weights and momentum (entries that
/// leave or join the mask become +0) through `MaskState`, the policy follows up (IMP rewinds),
/// the gradient reducer is rebuilt for the new active sets, and mask and weight checksums are
/// compared across ranks — a mismatch is an error naming the layer.
final class MaskChangePath {
    let masks: MaskState
    let comm: Communicator
    let step: TrainingStep
    /// Rank 0's proposal, in the store's layout (mapped once; its pages given back after each
    /// change).
    private let proposal: UnsafeMutableBufferPointer<Float>

    init(masks: MaskState, communicator: Communicator, step: TrainingStep) {
        self.masks = masks
        self.comm = communicator
        self.step = step
        proposal = PageMappedFloats.allocate(masks.store.count, for: "the mask proposal")
    }

    deinit { PageMappedFloats.deallocate(proposal) }

    /// Changes the mask after global step `t` (of epoch `epoch`, 0-based) as `policy` decides.
    func apply(afterStep t: Int, epoch: Int, policy: MaskPolicy) throws -> MaskEvent {
        let store = masks.store
        let buffer = UnsafeMutableBufferPointer(rebasing: proposal[0..<store.count])
        let t0 = now()
        var kind = ""
        if comm.rank == 0 {
            _ = buffer.update(fromContentsOf: store.mask)
            kind = policy.propose(afterStep: t, masks: masks, proposal: buffer)
        }
        let t1 = now()
        let bytes = try MaskSync.broadcastMask(buffer, segments: store.segments, root: 0, communicator: comm)
        let t2 = now()
        let delta = masks.replace(with: UnsafeBufferPointer(buffer))
        policy.didChangeMask(afterStep: t, masks: masks)
        let t3 = now()
        try step.rebuildReducer()
        let t4 = now()
        try MaskSync.verifyAgreement(masks.mask, segments: store.segments, what: "mask", maskedOnly: true, communicator: comm)
        try MaskSync.verifyAgreement(UnsafeBufferPointer(store.values), segments: store.segments, what: "weights",
                                     maskedOnly: false, communicator: comm)
        // Nothing reads the dense mask until the next change: sparse weights' masks live in
        // their positions, and the proposal takes no memory in between.
        store.releaseMaskPages()
        PageMappedFloats.zeroReleasingPages(proposal.baseAddress!, proposal.count)
        let t5 = now()
        let ms = { (a: Double, b: Double) in (b - a) * 1e3 }
        return MaskEvent(
            kind: kind, epoch: epoch + 1, step: t, generation: masks.generation,
            dropped: delta.dropped.reduce(0, +), grown: delta.grown.reduce(0, +), density: masks.globalDensity,
            layer_density: Dictionary(uniqueKeysWithValues: zip(masks.layers.map(\.name), masks.layerDensities)),
            bytes_broadcast: bytes, ms: ms(t0, t5), ms_decide: ms(t0, t1), ms_broadcast: ms(t1, t2), ms_apply: ms(t2, t3),
            ms_rebuild: ms(t3, t4), ms_verify: ms(t4, t5))
    }
}

/// Monotonic seconds.
func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// "812 B", "1.4 KB", "3.2 MB".
func byteCount(_ n: Int) -> String {
    if n >= 1_000_000 { return String(format: "%.1f MB", Double(n) / 1e6) }
    if n >= 1000 { return String(format: "%.1f KB", Double(n) / 1e3) }
    return "\(n) B"
}
