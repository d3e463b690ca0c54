import Tensor
/// Mask broadcast (bit-packed) and cross-rank agreement checks.
///
/// Masks live in a Float buffer with the layout of the parameters: 1 = active, 0 = pruned.
/// Rank 0 owns the mask; after it draws or changes one, `broadcastMask` sends 1 bit per weight
/// of every masked segment, and `verifyAgreement` compares per-segment checksums so that any
/// divergence between ranks is an error naming the segment, never a silent drift.
public enum MaskSync {
    /// Number of bytes that hold `count` bits.
    public static func packedByteCount(_ count: Int) -> Int { (count + 7) / 8 }

    /// Packs `mask` (non-zero = 1) into bits, least significant bit first.
    /// - Parameter bits: `packedByteCount(mask.count)` bytes.
    public static func pack(_ mask: UnsafeBufferPointer<Float>, into bits: UnsafeMutableBufferPointer<UInt8>) {
        precondition(bits.count >= packedByteCount(mask.count), "bit buffer too small")
        let n = mask.count
        let full = n / 8
        for b in 0..<full {
            var byte: UInt8 = 0
            let base = b &* 8
            for j in 0..<8 where mask[base &+ j] != 0 { byte |= 1 << UInt8(j) }
            bits[b] = byte
        }
        if full * 8 < n {
            var byte: UInt8 = 0
            for j in 0..<(n - full * 8) where mask[full * 8 + j] != 0 { byte |= 1 << UInt8(j) }
            bits[full] = byte
        }
    }

    /// Unpacks bits into a 0/1 Float mask of `mask.count` entries.
    public static func unpack(_ bits: UnsafeBufferPointer<UInt8>, into mask: UnsafeMutableBufferPointer<Float>) {
        precondition(bits.count >= packedByteCount(mask.count), "bit buffer too small")
        for i in 0..<mask.count {
            mask[i] = (bits[i >> 3] >> UInt8(i & 7)) & 1 == 1 ? 1 : 0
        }
    }

    /// Sends the masked segments of rank `root`'s mask to every rank, 1 bit per weight.
    /// Dense segments are left alone. Returns the number of bytes broadcast.
    @discardableResult
    public static func broadcastMask(
        _ mask: UnsafeMutableBufferPointer<Float>, segments: [BufferSegment], root: Int = 0,
        communicator comm: Communicator
    ) throws -> Int {
        try segments.validateTiling(total: mask.count)
        let masked = segments.filter(\.masked)
        let offsets = masked.reduce(into: [0]) { $0.append($0.last! + packedByteCount($1.count)) }
        var bits = [UInt8](repeating: 0, count: offsets.last!)
        try bits.withUnsafeMutableBufferPointer { bitBuffer in
            if comm.rank == root {
                for (k, s) in masked.enumerated() {
                    pack(UnsafeBufferPointer(rebasing: mask[s.range]),
                         into: UnsafeMutableBufferPointer(rebasing: bitBuffer[offsets[k]..<offsets[k + 1]]))
                }
            }
            try comm.broadcast(bitBuffer, root: root, counts: .verify)
            if comm.rank != root {
                for (k, s) in masked.enumerated() {
                    unpack(UnsafeBufferPointer(rebasing: bitBuffer[offsets[k]..<offsets[k + 1]]),
                           into: UnsafeMutableBufferPointer(rebasing: mask[s.range]))
                }
            }
        }
        return bits.count
    }

    /// Throws `CommError.disagreement` on every rank if any segment's contents differ between
    /// ranks. `what` names the buffer in the message ("mask", "weights").
    /// - Parameter maskedOnly: compare only masked segments (for masks).
    public static func verifyAgreement(
        _ buffer: UnsafeBufferPointer<Float>, segments: [BufferSegment], what: String,
        maskedOnly: Bool, communicator comm: Communicator
    ) throws {
        try segments.validateTiling(total: buffer.count)
        let chosen = maskedOnly ? segments.filter(\.masked) : segments
        try comm.verifySameCount(chosen.count, operation: "\(what) agreement")
        let sums = chosen.map {
            Int64(bitPattern: checksum64(UnsafeBufferPointer(rebasing: buffer[$0.range])))
        }
        let (lo, hi) = try comm.minMax(sums)
        let differing = chosen.indices.filter { lo[$0] != hi[$0] }
        if let first = differing.first {
            throw CommError.disagreement(
                what: what, segment: chosen[first].name, segmentsDiffering: differing.count)
        }
    }
}
