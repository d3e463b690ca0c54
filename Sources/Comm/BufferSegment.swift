/// A named contiguous range of a flat buffer (one layer's parameters or gradients).
///
/// `masked` segments have a mask in the mask buffer of the same layout; the others are dense
/// (BN parameters, biases, thresholds) and always take part in reductions in full.
public struct BufferSegment: Sendable, Equatable {
    public var name: String
    public var offset: Int
    public var count: Int
    public var masked: Bool

    public init(name: String, offset: Int, count: Int, masked: Bool) {
        self.name = name
        self.offset = offset
        self.count = count
        self.masked = masked
    }

    public var range: Range<Int> { offset..<(offset + count) }
}

extension Array where Element == BufferSegment {
    /// Checks that the segments tile `0..<total` in order without gaps or overlaps.
    public func validateTiling(total: Int) throws {
        var next = 0
        for s in self {
            guard s.offset == next, s.count >= 0 else {
                throw CommError.invalidArgument(
                    "segment '\(s.name)' starts at \(s.offset), expected \(next)")
            }
            next += s.count
        }
        guard next == total else {
            throw CommError.invalidArgument("segments cover \(next) elements, buffer has \(total)")
        }
    }
}
