import Tensor
import Dispatch

/// Packed masked gradient allreduce over a flat gradient buffer, in buckets, non-blocking.
///
/// Only active entries travel: for each masked segment the reducer keeps the list of active
/// positions, gathers those gradient values (and the values of small dense segments) into one
/// packed buffer, allreduces it and scatters back. Large dense segments, and masked segments whose
/// mask is all ones, are reduced in place without copying (runs of adjacent such segments form
/// one bucket). Bytes per step are therefore exactly
/// `4 × (active masked entries + dense entries)`.
///
/// Buckets are formed in reverse segment order (the order backward finishes layers), closing a
/// packed bucket once it reaches `bucketCapBytes`. During backward call `segmentReady(_:)` as
/// each segment's gradient is final; a bucket starts (non-blocking) once all its segments are
/// ready and all earlier buckets have started, so the start order is the same on every rank.
/// `finishStep()` starts what is left, waits for everything and scatters.
///
/// After `finishStep()` active entries hold the sum (`.sum`) or mean (`.average`) over ranks.
/// Inactive entries of masked segments keep their local values: the optimizer multiplies by the
/// mask, so they never reach the weights.
public final class GradientReducer {
    /// What the reduced gradient holds.
    public enum Result: String, Sendable {
        /// Sum over ranks (pair it with a loss normalised by the global batch).
        case sum
        /// Mean over ranks (one extra scale of in-place buckets).
        case average
    }

    /// How one bucket travels.
    public enum Transport: Equatable, Sendable {
        /// Gathered into `packed[range]`, reduced there, scattered back.
        case packed(Range<Int>)
        /// Reduced in place in the gradient buffer over this range.
        case inPlace(Range<Int>)
    }

    /// A group of segments reduced by one collective call.
    public struct Bucket: Sendable {
        /// Indices into `segments`, in the order they were added (reverse layer order).
        public let segmentIndices: [Int]
        public let transport: Transport
        /// Number of Float elements this bucket reduces.
        public var elementCount: Int {
            switch transport { case .packed(let r), .inPlace(let r): return r.count }
        }
    }

    /// How one segment enters its bucket.
    private enum Entry {
        case none                      // masked with no active entry
        case whole(packedAt: Int)      // contiguous copy of the whole segment
        case indexed(packedAt: Int)    // gather through `activeOffsets[segment]`
        case inPlace                   // its own in-place bucket
    }

    public let segments: [BufferSegment]
    public let result: Result
    /// How buckets are reduced.
    public enum Overlap: String, Sendable {
        /// Blocking allreduces after backward.
        case none
        /// Non-blocking allreduces (not in place) started during backward as buckets become
        /// ready; they progress in the MPI calls made between layers. On fewer than 4 ranks
        /// OpenMPI 4.1's non-blocking allreduce is a binomial reduce + broadcast, about twice the
        /// latency and traffic of the blocking call, so overlap costs more than it hides there.
        case nonBlocking
        /// A communication thread runs blocking allreduces on its own communicator, in bucket
        /// order, as buckets become ready (`useReductionThread(on:)`).
        case thread
    }

    /// How buckets are reduced (default: non-blocking during backward).
    public private(set) var overlap = Overlap.nonBlocking
    private var reductionThread: ReductionThread?

    /// Whether buckets start during backward as they become ready (non-blocking calls); when
    /// false, `finishStep()` reduces every bucket with a blocking allreduce.
    public var overlapsBackward: Bool {
        get { overlap != .none }
        set {
            precondition(overlap != .thread, "a reducer with a communication thread keeps it")
            overlap = newValue ? .nonBlocking : .none
        }
    }

    /// Reduces buckets on a communication thread that owns `communicator` (a duplicate of this
    /// reducer's, so its collectives never match the training thread's). Every rank must choose
    /// the same way.
    public func useReductionThread(on communicator: Communicator) {
        precondition(communicator.size == self.communicator.size, "the reduction thread needs a communicator over the same ranks")
        reductionThread?.stop()
        reductionThread = ReductionThread(communicator: communicator)
        overlap = .thread
    }

    public private(set) var buckets: [Bucket] = []
    /// Elements in the packed buffer.
    public let packedCount: Int
    /// Elements reduced per step (packed + in place).
    public let elementsPerStep: Int
    /// Bytes passed to allreduce per step: `4 × elementsPerStep`.
    public var bytesPerStep: Int { elementsPerStep * MemoryLayout<Float>.stride }
    /// Bytes passed to allreduce since this reducer was built.
    public private(set) var bytesReduced: Int = 0
    /// Where the reducer's time went since it was built (or since `timings` was reset).
    public var timings = Timings()
    /// When things happened in the last step, seconds after `beginStep`.
    public private(set) var lastStep = StepTimes()

    /// Moments of one step, seconds after `beginStep`.
    public struct StepTimes: Sendable {
        /// When each bucket's last segment became ready (it could start).
        public var bucketReady: [Double] = []
        /// When `finishStep` was called (backward is over) and when it returned.
        public var finishCalled = 0.0
        public var finished = 0.0
        public init() {}
    }

    /// Seconds spent in each phase, summed over steps.
    public struct Timings: Sendable {
        /// Copying gradients into the packed buffer.
        public var gather = 0.0
        /// Inside allreduce calls: starting, blocking, waiting.
        public var communicate = 0.0
        /// Copying reduced values back (and scaling for `.average`).
        public var scatter = 0.0
        public init() {}
    }

    private let communicator: Communicator
    private let entries: [Entry]
    private let activeOffsets: [[Int32]]
    private let bucketOfSegment: [Int]
    private let packed: UnsafeMutableBufferPointer<Float>

    // Per-step state.
    private var gradients: UnsafeMutableBufferPointer<Float>?
    /// Segments whose gradient was written straight into the packed buffer this step.
    private var bornPacked: [Bool]
    private var pending: [Int] = []
    private var requests: [CommRequest?] = []
    private var nextToStart = 0
    private var stepStart = 0.0

    /// Builds the index lists and buckets for `mask` and checks, collectively, that every rank
    /// has the same layout and active counts.
    /// - Parameters:
    ///   - segments: tiling of the gradient buffer, in layer (forward) order.
    ///   - mask: 0/1 mask with the same layout (only masked segments are read).
    ///   - bucketCapBytes: a packed bucket closes once it holds this many bytes.
    ///   - inPlaceMinElements: runs of adjacent fully active segments at least this large are
    ///     reduced in place.
    ///   - inPlaceCapElements: adjacent in-place segments merge into one bucket up to this size.
    public convenience init(
        segments: [BufferSegment], mask: UnsafeBufferPointer<Float>, communicator: Communicator,
        result: Result = .average, bucketCapBytes: Int = 4 << 20, inPlaceMinElements: Int = 1 << 16,
        inPlaceCapElements: Int = 8 << 20
    ) throws {
        try segments.validateTiling(total: mask.count)
        try self.init(segments: segments, total: mask.count, activePositions: { i in
            segments[i].count == 0 ? [] : nonZeroPositions(of: mask.baseAddress! + segments[i].offset, count: segments[i].count)
        }, communicator: communicator, result: result, bucketCapBytes: bucketCapBytes,
           inPlaceMinElements: inPlaceMinElements, inPlaceCapElements: inPlaceCapElements)
    }

    /// The same from the active positions of each masked segment i (`activePositions(i)`,
    /// ascending, relative to its offset) — the mask's owner holds them — without reading a
    /// dense mask; `total` is the buffer's length.
    public init(
        segments: [BufferSegment], total: Int, activePositions: (Int) -> [Int32], communicator: Communicator,
        result: Result = .average, bucketCapBytes: Int = 4 << 20, inPlaceMinElements: Int = 1 << 16,
        inPlaceCapElements: Int = 8 << 20
    ) throws {
        try segments.validateTiling(total: total)
        self.segments = segments
        self.result = result
        self.communicator = communicator

        // Active positions of each masked segment, relative to its offset.
        var offsets = [[Int32]](repeating: [], count: segments.count)
        var activeCounts = [Int](repeating: 0, count: segments.count)
        for (i, s) in segments.enumerated() {
            guard s.masked else { activeCounts[i] = s.count; continue }
            guard s.count <= Int(Int32.max) else {
                throw CommError.invalidArgument("segment '\(s.name)' exceeds 2^31 elements")
            }
            let list = activePositions(i)
            precondition(list.count <= s.count && (list.last.map { Int($0) < s.count } ?? true),
                         "active positions of '\(s.name)' outside the segment")
            activeCounts[i] = list.count
            if list.count < s.count { offsets[i] = list }
        }
        activeOffsets = offsets

        // Buckets in reverse order. A bucket is either packed or a contiguous in-place range.
        var entries = [Entry](repeating: .none, count: segments.count)
        var bucketOf = [Int](repeating: -1, count: segments.count)
        var buckets: [Bucket] = []
        var open: [Int] = []
        var openInPlace: Range<Int>? = nil
        var openStart = 0
        var packedEnd = 0
        let capElements = max(1, bucketCapBytes / MemoryLayout<Float>.stride)
        func closeOpen() {
            guard !open.isEmpty else { return }
            for i in open { bucketOf[i] = buckets.count }
            let transport: Transport =
                openInPlace.map { .inPlace($0) } ?? .packed(openStart..<packedEnd)
            buckets.append(Bucket(segmentIndices: open, transport: transport))
            open = []
            openInPlace = nil
            openStart = packedEnd
        }
        // Runs of consecutive fully active segments (dense ones, masks of all ones) are reduced
        // in place when the run is large; short runs are packed with their neighbours.
        var inPlace = [Bool](repeating: false, count: segments.count)
        var runEnd = segments.count - 1
        while runEnd >= 0 {
            var runStart = runEnd + 1
            var runElements = 0
            while runStart > 0, segments[runStart - 1].count > 0,
                activeCounts[runStart - 1] == segments[runStart - 1].count {
                runStart -= 1
                runElements += segments[runStart].count
            }
            if runElements >= inPlaceMinElements {
                for k in runStart...runEnd { inPlace[k] = true }
            }
            runEnd = min(runStart, runEnd) - 1
        }
        for i in segments.indices.reversed() {
            let s = segments[i]
            let active = activeCounts[i]
            if inPlace[i] {
                entries[i] = .inPlace
                if let r = openInPlace, r.lowerBound == s.range.upperBound,
                    r.count + s.count <= max(capElements, inPlaceCapElements) {
                    openInPlace = s.offset..<r.upperBound
                } else {
                    closeOpen()
                    openInPlace = s.range
                }
                open.append(i)
                continue
            }
            if openInPlace != nil { closeOpen() }
            if active == 0 {
                entries[i] = .none
            } else if active == s.count {
                entries[i] = .whole(packedAt: packedEnd)
            } else {
                entries[i] = .indexed(packedAt: packedEnd)
            }
            packedEnd += active
            open.append(i)
            if packedEnd - openStart >= capElements { closeOpen() }
        }
        closeOpen()
        self.entries = entries
        self.bucketOfSegment = bucketOf
        self.buckets = buckets
        self.packedCount = packedEnd
        self.elementsPerStep = activeCounts.reduce(0, +)
        self.packed = .allocate(capacity: max(packedEnd, 1))
        self.packed.initialize(repeating: 0)
        bornPacked = [Bool](repeating: false, count: segments.count)

        try verifyLayout(activeCounts: activeCounts)
    }

    deinit {
        requests.forEach { try? $0?.wait() }
        // A step left unfinished (an error) may still have buckets on the thread.
        try? reductionThread?.waitForAll()
        reductionThread?.stop()
        packed.deallocate()
    }

    /// Checks that all ranks agree on segment names, sizes and active counts.
    private func verifyLayout(activeCounts: [Int]) throws {
        let comm = communicator
        try comm.verifySameCount(segments.count, operation: "gradient reducer layout")
        let keys = segments.indices.map { i -> Int64 in
            let s = segments[i]
            let text = "\(s.name)|\(s.count)|\(s.masked)|\(activeCounts[i])"
            return Int64(bitPattern: checksum64(text))
        }
        let (lo, hi) = try comm.minMax(keys)
        if let bad = keys.indices.first(where: { lo[$0] != hi[$0] }) {
            let s = segments[bad]
            throw CommError.layoutMismatch(
                "segment '\(s.name)' (\(s.count) elements, \(activeCounts[bad]) active on rank "
                    + "\(comm.rank)) differs on another rank")
        }
    }

    // MARK: - One step

    /// Starts a step over `gradients` (same layout as the segments).
    public func beginStep(gradients: UnsafeMutableBufferPointer<Float>) {
        precondition(gradients.count == segments.last.map { $0.offset + $0.count } ?? 0,
                     "gradient buffer does not match the reducer's layout")
        precondition(self.gradients == nil, "beginStep called twice without finishStep")
        self.gradients = gradients
        pending = buckets.map(\.segmentIndices.count)
        requests = Array(repeating: nil, count: buckets.count)
        nextToStart = 0
        for i in bornPacked.indices { bornPacked[i] = false }
        stepStart = seconds()
        lastStep = StepTimes()
        lastStep.bucketReady = Array(repeating: 0, count: buckets.count)
    }

    /// The packed slot of a masked segment that travels gathered (some but not all entries
    /// active): its active gradient entries in ascending position order. A layer may write its
    /// gradient there directly during a step ("born packed", see `segmentReady(_:bornPacked:)`);
    /// nil for segments reduced in place, whole, or with no active entry.
    public func packedSlot(segment i: Int) -> UnsafeMutableBufferPointer<Float>? {
        guard case .indexed(let at) = entries[i] else { return nil }
        return UnsafeMutableBufferPointer(start: packed.baseAddress! + at, count: activeOffsets[i].count)
    }

    /// The reduced gradient of a born-packed segment after `finishStep()` (it is not scattered
    /// back into the dense buffer), else nil.
    public func reducedPackedGradient(segment i: Int) -> UnsafeMutablePointer<Float>? {
        bornPacked[i] ? packedSlot(segment: i)?.baseAddress : nil
    }

    /// Marks segment `index`'s gradient as final; starts buckets that are complete. With
    /// `bornPacked` the gradient is already in `packedSlot(segment:)`: it is neither gathered
    /// nor scattered back.
    public func segmentReady(_ index: Int, bornPacked packedAlready: Bool = false) throws {
        if packedAlready {
            precondition(packedSlot(segment: index) != nil, "segment \(segments[index].name) has no packed slot")
            bornPacked[index] = true
        }
        let b = bucketOfSegment[index]
        pending[b] -= 1
        precondition(pending[b] >= 0, "segment \(segments[index].name) marked ready twice")
        if pending[b] == 0 { lastStep.bucketReady[b] = seconds() - stepStart }
        guard overlap != .none else { return }
        while nextToStart < buckets.count && pending[nextToStart] == 0 {
            try start(nextToStart)
            nextToStart += 1
        }
        guard overlap == .nonBlocking else { return }
        // Drive progress of buckets in flight (shared-memory transports progress only in MPI calls).
        for r in requests.prefix(nextToStart) { _ = try r?.test() }
    }

    /// Starts every bucket not yet started, waits for all, and scatters the results back.
    public func finishStep() throws {
        guard let g = gradients else { preconditionFailure("finishStep without beginStep") }
        lastStep.finishCalled = seconds() - stepStart
        defer {
            gradients = nil
            lastStep.finished = seconds() - stepStart
        }
        while nextToStart < buckets.count {
            try start(nextToStart, blocking: overlap == .none)
            nextToStart += 1
        }
        if let thread = reductionThread {
            let t0 = seconds()
            try thread.waitForAll()
            timings.communicate += seconds() - t0
        }
        let scale = result == .average ? 1 / Float(communicator.size) : 1
        for (b, bucket) in buckets.enumerated() {
            let t0 = seconds()
            try requests[b]?.wait()
            requests[b] = nil
            let t1 = seconds()
            timings.communicate += t1 - t0
            defer { timings.scatter += seconds() - t1 }
            switch bucket.transport {
            case .packed:
                for i in bucket.segmentIndices {
                    if bornPacked[i] {
                        if scale != 1, let slot = packedSlot(segment: i) { scaleInPlace(slot.baseAddress!, slot.count, scale) }
                    } else {
                        scatter(segment: i, into: g, scale: scale)
                    }
                }
            case .inPlace(let r):
                if scale != 1 { scaleInPlace(g.baseAddress! + r.lowerBound, r.count, scale) }
            }
        }
    }

    /// Reduces all segments of `gradients` at once, with blocking allreduces (no overlap with
    /// backward; MPI's blocking collectives are faster than its non-blocking ones when nothing
    /// else runs meanwhile).
    public func reduce(gradients: UnsafeMutableBufferPointer<Float>) throws {
        beginStep(gradients: gradients)
        while nextToStart < buckets.count {
            try start(nextToStart, blocking: true)
            nextToStart += 1
        }
        try finishStep()
    }

    private func start(_ b: Int, blocking: Bool = false) throws {
        let g = gradients!
        let bucket = buckets[b]
        let region: UnsafeMutableBufferPointer<Float>
        let t0 = seconds()
        switch bucket.transport {
        case .packed(let r):
            for i in bucket.segmentIndices where !bornPacked[i] { gather(segment: i, from: g) }
            region = UnsafeMutableBufferPointer(rebasing: packed[r])
        case .inPlace(let r):
            region = UnsafeMutableBufferPointer(rebasing: g[r])
        }
        let t1 = seconds()
        timings.gather += t1 - t0
        defer { timings.communicate += seconds() - t1 }
        bytesReduced += region.count * MemoryLayout<Float>.stride
        if region.isEmpty {
            return
        } else if let thread = reductionThread {
            thread.reduce(region)
        } else if blocking {
            try communicator.allreduce(region, op: .sum, counts: .trusted)
        } else {
            requests[b] = try communicator.startAllreduce(region, op: .sum)
        }
    }

    // MARK: - Kernels

    private func gather(segment i: Int, from g: UnsafeMutableBufferPointer<Float>) {
        let src = g.baseAddress! + segments[i].offset
        switch entries[i] {
        case .whole(let at):
            (packed.baseAddress! + at).update(from: src, count: segments[i].count)
        case .indexed(let at):
            let dst = packed.baseAddress! + at
            activeOffsets[i].withUnsafeBufferPointer { idx in
                let n = idx.count
                var k = 0
                while k < n {
                    dst[k] = src[Int(idx[k])]
                    k &+= 1
                }
            }
        case .none, .inPlace:
            break
        }
    }

    private func scatter(segment i: Int, into g: UnsafeMutableBufferPointer<Float>, scale: Float) {
        let dst = g.baseAddress! + segments[i].offset
        switch entries[i] {
        case .whole(let at):
            let src = packed.baseAddress! + at
            if scale == 1 {
                dst.update(from: src, count: segments[i].count)
            } else {
                for k in 0..<segments[i].count { dst[k] = src[k] * scale }
            }
        case .indexed(let at):
            let src = packed.baseAddress! + at
            activeOffsets[i].withUnsafeBufferPointer { idx in
                let n = idx.count
                var k = 0
                if scale == 1 {
                    while k < n {
                        dst[Int(idx[k])] = src[k]
                        k &+= 1
                    }
                } else {
                    while k < n {
                        dst[Int(idx[k])] = src[k] * scale
                        k &+= 1
                    }
                }
            }
        case .none, .inPlace:
            break
        }
    }
}

/// Monotonic seconds.
@inline(__always)
private func seconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
}

/// `p[0..<n] *= s`.
@inline(__always)
private func scaleInPlace(_ p: UnsafeMutablePointer<Float>, _ n: Int, _ s: Float) {
    var i = 0
    while i < n {
        p[i] *= s
        i &+= 1
    }
}
