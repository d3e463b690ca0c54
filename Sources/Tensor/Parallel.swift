import Dispatch

/// A pointer that may cross into `concurrentPerform`'s `@Sendable` closure. The caller
/// guarantees that chunks write disjoint elements.
public struct SendablePointer<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// Runs `body(range)` over `0..<count` split into `chunks` contiguous ranges, in parallel when
/// `chunks > 1`. Parallel only pays for large work (above ~1 MB of data on these machines).
@inlinable
public func parallelChunks(
    _ count: Int, chunks: Int, _ body: @Sendable (Range<Int>) -> Void
) {
    parallelNumberedChunks(count, chunks: chunks) { body($1) }
}

/// `parallelChunks` that also passes each chunk's number (0 ..< chunks, at most `chunks`
/// running at once): for per-worker scratch.
@inlinable
public func parallelNumberedChunks(
    _ count: Int, chunks: Int, _ body: @Sendable (_ chunk: Int, Range<Int>) -> Void
) {
    let c = max(1, min(chunks, count))
    if c == 1 {
        body(0, 0..<count)
        return
    }
    DispatchQueue.concurrentPerform(iterations: c) { k in
        body(k, (count * k / c)..<(count * (k + 1) / c))
    }
}
