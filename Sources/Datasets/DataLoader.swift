import Dispatch
import Foundation
import Tensor

/// A batch of transformed images, NCHW floats, with labels.
public struct Batch: Sendable {
    public var images: [Float]
    public var labels: [Int32]
    public var count: Int { labels.count }
}

/// Which samples each rank reads in an epoch.
///
/// Each epoch has one permutation of `0..<count` drawn from (seed, epoch), the same on every
/// rank. Step s uses positions `[s·B·R, (s+1)·B·R)` of it, and rank r takes the r-th block of B.
/// Every rank thus gets `⌊count / (B·R)⌋` batches of exactly B — the same number, so collective
/// calls line up — and the last `count mod (B·R)` positions of the permutation are left out of
/// that epoch (a different set each epoch).
public struct Sharding: Sendable, Equatable {
    public var count: Int
    public var batchSize: Int
    public var rank: Int
    public var worldSize: Int
    public var seed: UInt64
    public var shuffle: Bool

    public init(count: Int, batchSize: Int, rank: Int, worldSize: Int, seed: UInt64, shuffle: Bool = true) {
        self.count = count
        self.batchSize = batchSize
        self.rank = rank
        self.worldSize = worldSize
        self.seed = seed
        self.shuffle = shuffle
    }

    public var batchesPerEpoch: Int { count / (batchSize * worldSize) }

    /// The epoch's permutation (Fisher–Yates from (seed, epoch)).
    public func permutation(epoch: Int) -> [Int] {
        var p = Array(0..<count)
        guard shuffle else { return p }
        var rng = Xoshiro256(seed: seed ^ (UInt64(epoch) &* 0xD1B5_4A32_D192_ED03))
        for i in stride(from: count - 1, to: 0, by: -1) { p.swapAt(i, rng.nextIndex(below: i + 1)) }
        return p
    }

    /// This rank's sample indices for each step of `epoch`.
    public func batches(epoch: Int) -> [[Int]] {
        let p = permutation(epoch: epoch)
        let global = batchSize * worldSize
        return (0..<batchesPerEpoch).map { s in
            Array(p[(s * global + rank * batchSize)..<(s * global + (rank + 1) * batchSize)])
        }
    }

    /// Evaluation: every sample exactly once over all ranks (rank r takes r, r+R, …), in
    /// batches of at most `batchSize`; ranks may get different numbers of batches.
    public func evaluationBatches() -> [[Int]] {
        let mine = Array(stride(from: rank, to: count, by: worldSize))
        return stride(from: 0, to: mine.count, by: batchSize).map { Array(mine[$0..<min($0 + batchSize, mine.count)]) }
    }
}

/// Produces an epoch's batches on a background thread, `depth` batches ahead, decoding and
/// augmenting the images of a batch on `threads` threads. Augmentation randomness comes from
/// (seed, epoch, sample), so batches do not depend on thread timing.
public final class DataLoader: @unchecked Sendable {
    public let dataset: ImageDataset
    public let transform: ImageTransform
    public let depth: Int
    public let threads: Int
    /// Skip images that fail to decode (counted in `skipped`) instead of stopping.
    public let skipBad: Bool

    private let lock = NSCondition()
    private var queue: [Result<Batch, Error>] = []
    private var finished = false
    private var cancelled = false
    private var worker: Thread?
    /// Smallest number of ready batches seen when the trainer asked for one (0 = it waited;
    /// the end-of-epoch call does not count).
    public private(set) var minimumReady = Int.max
    public private(set) var skipped = 0

    public init(dataset: ImageDataset, transform: ImageTransform, depth: Int = 4, threads: Int = 1, skipBad: Bool = false) {
        self.dataset = dataset
        self.transform = transform
        self.depth = max(1, depth)
        self.threads = max(1, threads)
        self.skipBad = skipBad
    }

    deinit { stop() }

    /// Starts producing `batches` (lists of sample indices) for `epoch`.
    public func start(batches: [[Int]], epoch: Int, seed: UInt64) {
        stop()
        lock.lock()
        queue = []
        finished = false
        cancelled = false
        minimumReady = Int.max
        lock.unlock()
        let thread = Thread { [self] in
            for indices in batches {
                lock.lock()
                while queue.count >= depth && !cancelled { lock.wait() }
                let stopNow = cancelled
                lock.unlock()
                if stopNow { break }
                let result = Result { try makeBatch(indices, epoch: epoch, seed: seed) }
                lock.lock()
                queue.append(result)
                lock.broadcast()
                lock.unlock()
                if case .failure = result { break }
            }
            lock.lock()
            finished = true
            lock.broadcast()
            lock.unlock()
        }
        thread.stackSize = 1 << 22
        worker = thread
        thread.start()
    }

    /// The next batch, waiting for it if needed; nil at the end of the epoch.
    public func next() throws -> Batch? {
        lock.lock()
        defer { lock.unlock() }
        if !(queue.isEmpty && finished) { minimumReady = min(minimumReady, queue.count) }
        while queue.isEmpty && !finished { lock.wait() }
        guard !queue.isEmpty else { return nil }
        let r = queue.removeFirst()
        lock.broadcast()
        return try r.get()
    }

    /// Stops the background thread (if any) and drops its batches.
    public func stop() {
        guard let w = worker else { return }
        lock.lock()
        cancelled = true
        lock.broadcast()
        while !finished { lock.wait() }
        lock.unlock()
        _ = w
        worker = nil
    }

    /// Decodes and transforms one batch.
    public func makeBatch(_ indices: [Int], epoch: Int, seed: UInt64) throws -> Batch {
        let n = indices.count, per = transform.outputCount
        var images = [Float](repeating: 0, count: n * per)
        var labels = [Int32](repeating: 0, count: n)
        var bad = [Bool](repeating: false, count: n)
        let failure = ErrorBox()
        let ds = dataset, tf = transform, skip = skipBad
        images.withUnsafeMutableBufferPointer { imgBuf in
            labels.withUnsafeMutableBufferPointer { labBuf in
                bad.withUnsafeMutableBufferPointer { badBuf in
                    let ip = SendablePointer(imgBuf.baseAddress!), lp = SendablePointer(labBuf.baseAddress!)
                    let bp = SendablePointer(badBuf.baseAddress!)
                    parallelChunks(n, chunks: threads) { range in
                        for k in range where !failure.isSet {
                            let index = indices[k]
                            var rng = Xoshiro256(seed: seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(index) &* 0xBF58_476D_1CE4_E5B9))
                            do {
                                let image = try ds.image(at: index)
                                try tf.apply(image, rng: &rng, into: ip.pointer + k * per)
                                lp.pointer[k] = Int32(ds.label(at: index))
                            } catch let e as DatasetError {
                                if skip { bp.pointer[k] = true } else { failure.set(e.naming(index, of: ds)) }
                            } catch {
                                if skip { bp.pointer[k] = true } else { failure.set(error) }
                            }
                        }
                    }
                }
            }
        }
        if let error = failure.error { throw error }
        let badCount = bad.filter { $0 }.count
        if badCount > 0 {
            // Replace skipped samples by copies of good ones so the batch keeps its size.
            lock.lock(); skipped += badCount; lock.unlock()
            guard let good = bad.firstIndex(of: false) else { throw DatasetError("every image of a batch failed to decode") }
            for k in 0..<n where bad[k] {
                for j in 0..<per { images[k * per + j] = images[good * per + j] }
                labels[k] = labels[good]
            }
        }
        return Batch(images: images, labels: labels)
    }
}
