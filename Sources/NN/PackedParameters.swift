import Foundation
import Tensor

/// A maskable weight's state kept packed at its mask's active positions: entry k belongs to
/// position `positions[k]` (ascending, relative to the weight's offset). The momentum always; the
/// values when the weight is sparse enough (`ParameterStore.packedValuesMaxDensity`), so that the
/// optimizer and the sparse passes read them in order, and the dense range takes no memory.
///
/// Packed values and the dense range are two copies with flags saying which is current: the
/// optimizer updates the packed copy, the dense passes and every reader of the dense layout
/// get the dense copy written out first. At least one copy is current.
struct PackedParameter {
    var positions: [Int32]
    var momentum: UnsafeMutableBufferPointer<Float>
    /// The weights at `positions`, or nil: the values live in the dense buffer only.
    var values: UnsafeMutableBufferPointer<Float>?
    /// `values` hold the current weights.
    var packedCurrent = true
    /// The dense range holds the current weights.
    var denseCurrent = false
    /// The dense range was written since its pages were last given back.
    var densePagesUsed = false
    /// A dense pass read the dense range since the last update (keep its pages).
    var denseReadByPasses = false
    /// The weight's range of the mask buffer was given back (it reads as zeros): the mask is
    /// `positions`, written out when the dense mask is asked for.
    var maskReleased = false

    func deallocate() {
        momentum.deallocate()
        values?.deallocate()
    }
}

/// Packed momentum and values, and the access that hides whether a weight's state is packed.
extension ParameterStore {
    /// Weights denser than this keep their values dense (their passes run dense, and the packed
    /// copy would be written out every step).
    public static let packedValuesMaxDensity = 0.5

    /// The packed momentum of `ref` (entry k at position `packedPositions(ref)[k]`), or nil when
    /// it lives in the dense layout.
    public func packedMomentum(_ ref: ParameterRef) -> UnsafeMutableBufferPointer<Float>? { packed[ref.index]?.momentum }

    /// The positions a weight's state is packed at, or nil when it is dense.
    public func packedPositions(_ ref: ParameterRef) -> [Int32]? { packed[ref.index]?.positions }

    /// Whether some weight keeps its momentum packed.
    public var hasPackedMomentum: Bool { !packed.isEmpty }

    /// The packed values of `ref` to read (entry k at `packedPositions(ref)[k]`, the row-major
    /// order of its active weights), or nil when its values are dense.
    public func packedValues(_ ref: ParameterRef) -> UnsafePointer<Float>? {
        guard var p = packed[ref.index], let v = p.values else { return nil }
        if !p.packedCurrent {
            let dense = valueStorage.baseAddress! + ref.offset
            for (k, i) in p.positions.enumerated() { v[k] = dense[Int(i)] }
            p.packedCurrent = true
            packed[ref.index] = p
            // A later write through `values` must make this copy stale again.
            denseCurrentForAll = false
        }
        return UnsafePointer(v.baseAddress!)
    }

    /// The packed values of `ref` to update (the optimizer), or nil when its values are dense.
    /// The dense copy becomes stale; its pages are given back unless a dense pass read it since
    /// the last update.
    func packedValuesForUpdate(_ ref: ParameterRef) -> UnsafeMutableBufferPointer<Float>? {
        guard packedValues(ref) != nil, var p = packed[ref.index] else { return nil }
        p.denseCurrent = false
        if p.densePagesUsed && !p.denseReadByPasses {
            PageMappedFloats.zeroReleasingPages(valueStorage.baseAddress! + ref.offset, ref.count)
            p.densePagesUsed = false
        }
        p.denseReadByPasses = false
        packed[ref.index] = p
        denseCurrentForAll = false
        return p.values
    }

    /// Writes a packed weight's values out to its dense range if they changed since.
    private func writeDense(_ ref: ParameterRef, _ p: inout PackedParameter) {
        guard let v = p.values, !p.denseCurrent else { return }
        let dense = valueStorage.baseAddress! + ref.offset
        dense.update(repeating: 0, count: ref.count)
        for (k, i) in p.positions.enumerated() { dense[Int(i)] = v[k] }
        p.denseCurrent = true
        p.densePagesUsed = true
    }

    /// For a dense pass: the dense range current, the packed copy still current too.
    func denseForReading(_ ref: ParameterRef) {
        guard var p = packed[ref.index], p.values != nil else { return }
        writeDense(ref, &p)
        p.denseReadByPasses = true
        packed[ref.index] = p
    }

    /// For a reader or writer of the dense layout: the dense range current, and the one the
    /// next update starts from.
    func makeDenseCurrent(_ ref: ParameterRef) {
        guard var p = packed[ref.index], p.values != nil else { return }
        writeDense(ref, &p)
        p.packedCurrent = false
        packed[ref.index] = p
    }

    /// `makeDenseCurrent` for every packed weight (once until the next update).
    func makeDenseCurrentForAll() {
        guard !denseCurrentForAll else { return }
        for p in parameters where packed[p.ref.index] != nil { makeDenseCurrent(p.ref) }
        denseCurrentForAll = true
    }

    /// Writes a released mask range out from its positions (ones there, zeros elsewhere).
    func writeOutMask(_ ref: ParameterRef) {
        guard var p = packed[ref.index], p.maskReleased else { return }
        let m = maskStorage.baseAddress! + ref.offset
        for i in p.positions { m[Int(i)] = 1 }
        p.maskReleased = false
        packed[ref.index] = p
    }

    /// `writeOutMask` for every weight whose mask range was released.
    func writeOutMasks() {
        guard anyMaskReleased else { return }
        for p in parameters where packed[p.ref.index] != nil { writeOutMask(p.ref) }
        anyMaskReleased = false
    }

    /// Gives back the pages of the mask ranges of weights whose values are packed and whose mask
    /// is exactly their packed positions (the mask's owner packed them from it): their mask lives
    /// in the positions until the dense mask is read again. Called where nothing reads the dense
    /// mask for a while (after a training step's setup and after each mask change).
    public func releaseMaskPages() {
        for p in parameters { releaseMaskPages(p.ref) }
    }

    /// `releaseMaskPages` for one weight.
    public func releaseMaskPages(_ ref: ParameterRef) {
        guard var state = packed[ref.index], state.values != nil, !state.maskReleased else { return }
        let m = maskStorage.baseAddress! + ref.offset
        var next = 0
        for i in 0..<ref.count where m[i] != 0 {
            guard m[i] == 1, next < state.positions.count, state.positions[next] == Int32(i) else { return }
            next += 1
        }
        guard next == state.positions.count else { return }
        PageMappedFloats.zeroReleasingPages(m, ref.count)
        state.maskReleased = true
        packed[ref.index] = state
        anyMaskReleased = true
    }

    /// Keeps the state of the maskable weight `ref` packed at `positions` (its mask's active
    /// positions, ascending) from now on — the momentum always, the values when at most
    /// `packedValuesMaxDensity` of the weight is active. An entry at a position in both the old
    /// and the new list keeps its weight and momentum; a new one gets +0 (a mask change). Entries
    /// off `positions` must be +0 in the dense layout (masked weights are), and their dense range
    /// is given back when the values are packed.
    public func pack(_ ref: ParameterRef, positions: [Int32]) {
        precondition(parameters[ref.index].maskable, "only a maskable weight's state is packed")
        precondition(transform == nil, "under a weight transform every entry is trained: its state stays dense")
        let dense = valueStorage.baseAddress! + ref.offset, denseMomentum = momentum.baseAddress! + ref.offset
        writeOutMask(ref)
        let old = packed[ref.index]
        let momentum = Self.allocatePacked(positions.count)
        let values: UnsafeMutableBufferPointer<Float>?
        if let old {
            Self.merge(old.positions, old.momentum, into: positions, momentum)
        } else {
            for (k, p) in positions.enumerated() { momentum[k] = denseMomentum[Int(p)] }
            PageMappedFloats.zeroReleasingPages(denseMomentum, ref.count)
        }
        // The weights at the new positions, from the current copy.
        let wantPacked = Double(positions.count) <= Self.packedValuesMaxDensity * Double(max(1, ref.count))
        if let old, let oldValues = old.values, old.packedCurrent {
            let next = Self.allocatePacked(positions.count)
            Self.merge(old.positions, oldValues, into: positions, next)
            if wantPacked {
                values = next
                PageMappedFloats.zeroReleasingPages(dense, ref.count)
            } else {
                dense.update(repeating: 0, count: ref.count)
                for (k, p) in positions.enumerated() { dense[Int(p)] = next[k] }
                next.deallocate()
                values = nil
            }
        } else if wantPacked {
            // The dense copy is current and +0 off `positions`.
            let next = Self.allocatePacked(positions.count)
            for (k, p) in positions.enumerated() { next[k] = dense[Int(p)] }
            values = next
            PageMappedFloats.zeroReleasingPages(dense, ref.count)
        } else {
            values = nil
        }
        old?.deallocate()
        packed[ref.index] = PackedParameter(positions: positions, momentum: momentum, values: values,
                                            packedCurrent: true, denseCurrent: values == nil)
        if values != nil { denseCurrentForAll = false }
    }

    private static func allocatePacked(_ n: Int) -> UnsafeMutableBufferPointer<Float> {
        let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(n, 1))
        return UnsafeMutableBufferPointer(rebasing: b[0..<n])
    }

    /// `next[k]` = the entry of `old` at `positions[k]`, or +0 when `oldPositions` lacks it (two
    /// ascending lists).
    private static func merge(_ oldPositions: [Int32], _ old: UnsafeMutableBufferPointer<Float>, into positions: [Int32],
                              _ next: UnsafeMutableBufferPointer<Float>) {
        var j = 0
        for (k, p) in positions.enumerated() {
            while j < oldPositions.count && oldPositions[j] < p { j += 1 }
            next[k] = j < oldPositions.count && oldPositions[j] == p ? old[j] : 0
        }
    }

    /// The momentum of `ref` in the dense layout (a packed one scattered, +0 elsewhere).
    public func momentum(_ ref: ParameterRef) -> [Float] {
        guard let p = packed[ref.index] else {
            return Array(UnsafeBufferPointer(start: momentum.baseAddress! + ref.offset, count: ref.count))
        }
        var out = [Float](repeating: 0, count: ref.count)
        for (k, i) in p.positions.enumerated() { out[Int(i)] = p.momentum[k] }
        return out
    }

    /// The whole store's momentum in the dense layout (checkpoint comparisons, tests).
    public func momentumInStoreLayout() -> [Float] { parameters.flatMap { momentum($0.ref) } }

    /// Sets the momentum of `ref` from `dense` (its `ref.count` values in the dense layout); a
    /// packed momentum takes the entries at its positions (the others must be +0).
    public func setMomentum(_ ref: ParameterRef, from dense: UnsafePointer<Float>) {
        if let p = packed[ref.index] {
            for (k, i) in p.positions.enumerated() { p.momentum[k] = dense[Int(i)] }
        } else {
            (momentum.baseAddress! + ref.offset).update(from: dense, count: ref.count)
        }
    }

    /// Every momentum entry to +0.
    public func zeroMomentum() {
        for p in parameters {
            if let state = packed[p.ref.index] {
                state.momentum.update(repeating: 0)
            } else {
                (momentum.baseAddress! + p.ref.offset).update(repeating: 0, count: p.ref.count)
            }
        }
    }

    /// Whether every momentum entry is finite.
    public var momentumIsFinite: Bool {
        momentum.allSatisfy(\.isFinite) && packed.values.allSatisfy { $0.momentum.allSatisfy(\.isFinite) }
    }
}
