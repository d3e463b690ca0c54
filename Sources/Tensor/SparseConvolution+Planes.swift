import CSparseKernels
import Dispatch

/// The planes layout of `SparseConvolution` (3×3, stride 1, padding 1): which passes use it, the
/// per-entry offsets and taps, the lane masks, and the weight gradient on planes.
extension SparseConvolution {
    /// Whether passes over `height × width` inputs run in the planes layout with kernel `isa`.
    public func usesPlanes(height: Int, width: Int, isa: KernelISA) -> Bool {
        guard kernelSize == 3, stride == 1, padding == 1 else { return false }
        switch layout {
        case .frames: return false
        case .planes: return true
        case .automatic: return isa == .avx512 && (height * width <= 64 || index.density < 0.4)
        }
    }

    /// Whether the weight gradient of a planes-layout layer runs on the planes too: below density
    /// 0.2, and for images of at most 16 pixels. Its products come in groups of one tap (one lane
    /// mask per vector for eight entries); the frames need a copy of the input on top of theirs.
    /// `bench conv --layout planes|automatic` (dW on frames, the copy not counted), batch 128,
    /// 2 threads: density 0.1 planes 13–15 ms against 13–15 (64 → 64 at 32×32 … 512 → 512 at 4×4),
    /// 3.0 against 6.0 at 2×2; 0.317 37–46 against 32–35 at 32×32 … 8×8, 40 against 42 at 4×4,
    /// 9.2 against 15.6 at 2×2; batch 32, ResNet-50's 56×56 … 7×7 at 0.177 17–18 against 14–16,
    /// at 0.087 8.6–9.7 against 8.2–9.7.
    func planesForWeightGradient(height: Int, width: Int) -> Bool {
        layout == .planes || index.density < 0.2 || height * width <= 16
    }

    /// Floats between channels of the planes the kernels read. A tile reads the same window of
    /// every channel, so channels whose planes lie a multiple of the L2's way size apart (64 KiB:
    /// 1 MiB, 16 ways) fall into the same sets: `gcd(plane bytes, 64 KiB) / 64 KiB` of the
    /// channels share each group of sets, and when more than 8 do (half the ways: the outputs'
    /// rows fall into the same sets too), they thrash L2 (VGG16 at batch
    /// 128: a 32×32 plane is 512 KiB, all 64 channels in one group; planes lost to frames at density
    /// 0.064, 21 against 17 ms). Such inputs are read from a copy whose channels lie 17 cache lines
    /// further apart. ResNet-50's 56×56 planes at batch 32 (392 KiB: 8 channels per group) are read
    /// in place: `bench conv --threads 1`, 64 → 64 at density 0.177, forward 32 ms in place against
    /// 36–44 from the copy.
    /// `spreadsChannels` forces either layout.
    func channelPitch(plane: Int, channels: Int) -> Int {
        let spread = spreadsChannels ?? {
            let way = 1 << 16
            var a = plane * MemoryLayout<Float>.stride, b = way
            while b != 0 { (a, b) = (b, a % b) }
            return channels * a / way > 8
        }()
        return spread ? plane + 17 * 16 : plane
    }

    /// `x` (`channels` planes of `plane` floats) at `channelPitch`: x itself, or a copy in `buffer`.
    func staged(_ x: UnsafePointer<Float>, channels: Int, plane: Int, into buffer: Buffer<Float>,
                threads: Int) -> UnsafePointer<Float> {
        let pitch = channelPitch(plane: plane, channels: channels)
        guard pitch != plane else { return x }
        let dst = SendablePointer(buffer.reserve(channels * pitch)), src = SendablePointer(UnsafeMutablePointer(mutating: x))
        parallelChunks(channels, chunks: channels * plane > 1 << 16 ? threads : 1) { range in
            for c in range { (dst.pointer + c * pitch).update(from: src.pointer + c * plane, count: plane) }
        }
        return UnsafePointer(dst.pointer)
    }

    /// Entry offsets, taps and lane masks of the planes layout for `batch` images of
    /// `height × width` (recomputed only when the shape or the mask changed).
    func preparePlanes(batch: Int, height: Int, width: Int) {
        if let b = planesBuiltFor, b == (batch, height, width, generation) { return }
        let plane = batch * height * width
        // The input's channels at its pitch (forward, weight gradient), dY's at its own (input gradient).
        let pitch = channelPitch(plane: plane, channels: inChannels)
        let pitchT = channelPitch(plane: plane, channels: outChannels)
        precondition((max(inChannels, outChannels) + 1) * max(pitch, pitchT) < Int(Int32.max),
                     "sparse convolution planes are limited to 2^31 floats")
        let total = index.count
        let src = planeSource.reserve(total), tap = planeTap.reserve(total)
        /// Offset of tap t (kh·3 + kw) from the output position.
        func shift(_ t: Int) -> Int { (t / 3 - 1) * width + t % 3 - 1 }
        for k in 0..<total {
            let column = Int(index.source[k]), t = column % 9
            src[k] = Int32(column / 9 * pitch + shift(t))
            tap[k] = UInt8(t)
        }
        // The input-gradient (phase) index: rows = input channels, entries (o, t) read dY at
        // −shift(t), which is the flipped tap 8 − t.
        let column = phaseColumn.pointer
        let srcT = planeSourceT.reserve(total), tapT = planeTapT.reserve(total)
        for e in 0..<total {
            let c = Int(column[e]), t = c % 9
            srcT[e] = Int32(c / 9 * pitchT - shift(t))
            tapT[e] = UInt8(8 - t)
        }
        let phases = Int(stsp_plane_phases(Int32(height), Int32(width), Int32(plane)))
        stsp_plane_masks(Int32(height), Int32(width), Int32(plane), planeMasks.reserve((phases + 1) * 72))
        planesBuiltFor = (batch, height, width, generation)
    }

    /// Runs `body(tile0, tile1)` over contiguous ranges of the `plane / 128` tiles on up to `threads` workers.
    func forEachTileRange(plane: Int, threads: Int, _ body: @Sendable (Int32, Int32) -> Void) {
        let tiles = (plane + 127) / 128
        parallelChunks(tiles, chunks: min(threads, tiles)) { body(Int32($0.lowerBound), Int32($0.upperBound)) }
    }


    /// The groups of the planes weight gradient (`stsp_plane_sddmm`): each row's entries by tap
    /// (in index order within a tap), in groups of at most 8 of one tap; rebuilt after a mask change.
    func preparePlaneGroups() {
        if planeGroupsBuiltFor == generation { return }
        let rows = outChannels, total = index.count
        // Per row, Σ_t ⌈n_t / 8⌉ ≤ n / 8 + 9 groups.
        let capacity = total / 8 + 9 * rows + 1
        let rowGroups = planeRowGroups.reserve(rows + 1), entries = planeGroupEntries.reserve(8 * capacity)
        let taps = planeGroupTap.reserve(capacity), counts = planeGroupCount.reserve(capacity)
        var sorted = [Int32](repeating: 0, count: inChannels * 9), start = [Int](repeating: 0, count: 10)
        var g = 0
        for r in 0..<rows {
            rowGroups[r] = Int32(g)
            let k0 = Int(index.rowStart[r]), k1 = Int(index.rowStart[r + 1])
            // Counting sort of the row's entries by tap.
            for t in 0...9 { start[t] = 0 }
            for k in k0..<k1 { start[Int(index.source[k] % 9) + 1] += 1 }
            for t in 0..<9 { start[t + 1] += start[t] }
            for k in k0..<k1 {
                let t = Int(index.source[k] % 9)
                sorted[start[t]] = Int32(k)
                start[t] += 1
            }
            // start[t] is now the end of tap t's run.
            var i = 0
            for t in 0..<9 {
                while i < start[t] {
                    let n = min(8, start[t] - i)
                    for j in 0..<8 { entries[8 * g + j] = sorted[i + (j < n ? j : 0)] }
                    taps[g] = UInt8(t)
                    counts[g] = UInt8(n)
                    g += 1
                    i += n
                }
            }
        }
        rowGroups[rows] = Int32(g)
        planeGroupsBuiltFor = generation
    }

    /// The weight gradient in the planes layout: dY and the input read in place, rows split
    /// between workers, positions in chunks of 32 tiles (a chunk's input window stays in cache).
    func planeWeightGradient(
        dy: UnsafePointer<Float>,
        input: (x: UnsafePointer<Float>, staged: UnsafePointer<Float>, batch: Int, height: Int, width: Int),
        into output: SampledOutput, isa: KernelISA, threads: Int
    ) {
        let (_, x, batch, height, width) = input
        preparePlanes(batch: batch, height: height, width: width)
        preparePlaneGroups()
        let plane = batch * height * width, tiles = (plane + 127) / 128, chunk = 32
        let (out, positions) = target(output)
        let rg = SendablePointer(planeRowGroups.pointer), ge = SendablePointer(planeGroupEntries.pointer)
        let gt = SendablePointer(planeGroupTap.pointer), gc = SendablePointer(planeGroupCount.pointer)
        let src = SendablePointer(planeSource.pointer), m = SendablePointer(planeMasks.pointer)
        let d = SendablePointer(UnsafeMutablePointer(mutating: dy)), xp = SendablePointer(UnsafeMutablePointer(mutating: x))
        let op = SendablePointer(out), pos = positions.map { SendablePointer($0) }, isaCode = Int32(isa.rawValue)
        let parts = threads > 1 && index.count * plane >= 1 << 16 ? threads : 1
        let bounds = index.balancedRowSplit(parts: parts)
        let run = { @Sendable (t: Int) in
            for t0 in Swift.stride(from: 0, to: tiles, by: chunk) {
                stsp_plane_sddmm(isaCode, rg.pointer, ge.pointer, gt.pointer, gc.pointer, src.pointer, d.pointer, plane,
                                 xp.pointer, m.pointer,
                                 Int32(height), Int32(width), Int32(plane), op.pointer, pos?.pointer,
                                 Int32(bounds[t]), Int32(bounds[t + 1]), Int32(t0), Int32(min(tiles, t0 + chunk)))
            }
        }
        if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
    }
}
