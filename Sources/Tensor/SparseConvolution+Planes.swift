import CSparseKernels
import Dispatch

/// The planes layout of `SparseConvolution` (odd k×k kernels with padding k / 2, stride 1 or 2):
/// which passes use it, the per-entry offsets and taps, the lane masks, and the passes on planes.
///
/// Stride 1 reads the input planes (H × W) as they are, tap (kh, kw) shifted by (kh − p, kw − p),
/// p = k / 2. Stride 2 (H and W even) reads a copy split into its four phases, each on the output
/// grid Ho × Wo = H/2 × W/2: phase β = 2·(kh mod 2) + (kw mod 2) of channel c is plane
/// `β·Cin + c`, `X'[β·Cin + c][n][i][j] = X[c][n][2i + (kh − p) mod 2][2j + (kw − p) mod 2]`, and
/// tap (kh, kw) reads it shifted by (⌊(kh − p) / 2⌋, ⌊(kw − p) / 2⌋) with that shift's lane masks —
/// a stride-1 pass over the grid with 4·Cin input planes (3×3: shifts −1 and 0; ResNet-50's 7×7
/// stem: −2 … 1). Its input gradient is computed per phase (rows of the phase index, whose
/// buckets are the same β) and interleaved into dX.
extension SparseConvolution {
    /// Whether passes over `height × width` inputs run in the planes layout with kernel `isa`.
    /// `.automatic` (see `layout`) takes larger kernels always: ResNet-50's stem at density 0.42
    /// (`bench conv --kernel 7 --stride 2 --shapes 3:64:224 --batch 32`, 2 threads) forward 41–44 ms
    /// on planes against 50–51 on frames, input gradient 45–46 against 66–88.
    public func usesPlanes(height: Int, width: Int, isa: KernelISA) -> Bool {
        guard kernelSize % 2 == 1, kernelSize <= 7, padding == kernelSize / 2,
              stride == 1 || (stride == 2 && height % 2 == 0 && width % 2 == 0) else { return false }
        let grid = planeGrid(height: height, width: width)
        switch layout {
        case .frames: return false
        case .planes: return true
        case .automatic:
            return isa != .portable && (grid.height * grid.width <= 64 || index.density < 0.4 || kernelSize > 3)
        }
    }

    /// The largest shift of a tap on the grid (the lane masks cover shifts −reach … reach).
    var planeReach: Int { stride == 1 ? padding : (padding + 1) / 2 }

    /// The grid the planes kernels run on for `height × width` inputs: the output's.
    func planeGrid(height: Int, width: Int) -> (height: Int, width: Int) { (height / stride, width / stride) }

    /// For weight column `c·k² + kh·k + kw`: the staged plane its entries read and the tap
    /// (shift and lane masks on the grid, `(dh + reach)·(2·reach + 1) + dw + reach`) they read it at.
    private func planeEntry(column: Int) -> (plane: Int, tap: Int) {
        let k = kernelSize, c = column / (k * k), kh = column % (k * k) / k, kw = column % k
        let r = planeReach, side = 2 * r + 1
        guard stride == 2 else { return (c, (kh - padding + r) * side + kw - padding + r) }
        // ⌊(kh − p) / 2⌋ for kh − p ≥ −p.
        func shift(_ i: Int) -> Int { (i - padding + 2 * padding) / 2 - padding }
        return (((kh % 2) * 2 + kw % 2) * inChannels + c, (shift(kh) + r) * side + shift(kw) + r)
    }

    /// Whether the weight gradient of a planes-layout layer with kernels `isa` runs on the planes
    /// too: below density 0.2 (AVX2: 0.05), and for images of at most 16 pixels. Its products come
    /// in groups of one tap (one lane mask per vector for eight entries); the frames need a copy of
    /// the input on top of theirs.
    /// `bench conv --layout planes|automatic` (dW on frames, the copy not counted), batch 128,
    /// 2 threads: density 0.1 planes 13–15 ms against 13–15 (64 → 64 at 32×32 … 512 → 512 at 4×4),
    /// 3.0 against 6.0 at 2×2; 0.317 37–46 against 32–35 at 32×32 … 8×8, 40 against 42 at 4×4,
    /// 9.2 against 15.6 at 2×2; batch 32, ResNet-50's 56×56 … 7×7 at 0.177 17–18 against 14–16,
    /// at 0.087 8.6–9.7 against 8.2–9.7. Larger kernels keep it on frames: ResNet-50's 7×7 stem
    /// (`bench conv --kernel 7 --stride 2 --shapes 3:64:224 --batch 32`) 47–58 against 37–38 ms at
    /// density 0.42, 31 against 23–24 at 0.2. The AVX2 kernels (same commands with `--isa avx2`, on
    /// the same Zen 4 host): 0.177 at 56×56 … 7×7 18–21 against 15–16 ms, 0.043 4.4–7.7 against
    /// 4.6–7.3, batch 128 0.1 12–14 against 13–16, 0.01 0.4–4.7 against 1.1–5.5.
    func planesForWeightGradient(height: Int, width: Int, isa: KernelISA) -> Bool {
        layout == .planes || kernelSize == 3 && (index.density < (isa == .avx512 ? 0.2 : 0.05) || height * width <= 16)
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

    /// The planes the passes read for input `x` (`[Cin][batch][height][width]`): x itself, a copy
    /// at `channelPitch`, or (stride 2) its phases at `channelPitch`, in `stagedInput`.
    func stagedPlanes(_ x: UnsafePointer<Float>, batch: Int, height: Int, width: Int, threads: Int) -> UnsafePointer<Float> {
        guard stride == 2 else {
            return staged(x, channels: inChannels, plane: batch * height * width, into: stagedInput, threads: threads)
        }
        let grid = planeGrid(height: height, width: width), plane = batch * grid.height * grid.width
        let pitch = channelPitch(plane: plane, channels: 4 * inChannels)
        let dst = SendablePointer(stagedInput.reserve(4 * inChannels * pitch))
        let src = SendablePointer(UnsafeMutablePointer(mutating: x)), cin = inChannels, images = batch, p = padding
        parallelChunks(cin, chunks: cin * batch * height * width > 1 << 16 ? threads : 1) { range in
            for c in range {
                for row in 0..<(images * height) {
                    let from = src.pointer + (c * images * height + row) * width, i = row / 2
                    // Tap kh reads input row 2i + kh − p: rows of parity π are phase βa = (π + p) mod 2.
                    let rowPhase = (row % 2 + p) % 2
                    // Columns of parity π go to phase βb = (π + p) mod 2.
                    let even = dst.pointer + ((rowPhase * 2 + p % 2) * cin + c) * pitch + i * grid.width
                    let odd = dst.pointer + ((rowPhase * 2 + (1 + p) % 2) * cin + c) * pitch + i * grid.width
                    deinterleave(from, even: even, odd: odd, count: grid.width)
                }
            }
        }
        return UnsafePointer(dst.pointer)
    }

    /// Entry offsets, taps and lane masks of the planes layout for `batch` images on the grid
    /// `height × width` (recomputed only when the shape or the mask changed).
    func preparePlanes(batch: Int, height: Int, width: Int) {
        if let b = planesBuiltFor, b == (batch, height, width, generation) { return }
        let plane = batch * height * width, planesIn = stride * stride * inChannels
        // The input's planes at their pitch (forward, weight gradient), dY's at its own (input gradient).
        let pitch = channelPitch(plane: plane, channels: planesIn)
        let pitchT = channelPitch(plane: plane, channels: outChannels)
        precondition((max(planesIn, outChannels) + 1) * max(pitch, pitchT) < Int(Int32.max),
                     "sparse convolution planes are limited to 2^31 floats")
        let total = index.count
        let src = planeSource.reserve(total), tap = planeTap.reserve(total)
        /// Offset of tap t from the output position on the grid.
        let r = planeReach, side = 2 * r + 1, taps = side * side
        func shift(_ t: Int) -> Int { (t / side - r) * width + t % side - r }
        for k in 0..<total {
            let (p, t) = planeEntry(column: Int(index.source[k]))
            src[k] = Int32(p * pitch + shift(t))
            tap[k] = UInt8(t)
        }
        // The input-gradient (phase) index: rows = input channels (of each phase), entries (o, t)
        // read dY at −shift(t), which is the flipped tap taps − 1 − t.
        let column = phaseColumn.pointer, k2 = kernelSize * kernelSize
        let srcT = planeSourceT.reserve(total), tapT = planeTapT.reserve(total)
        for e in 0..<total {
            let c = Int(column[e]), t = planeEntry(column: c % k2).tap
            srcT[e] = Int32(c / k2 * pitchT - shift(t))
            tapT[e] = UInt8(taps - 1 - t)
        }
        let phases = Int(stsp_plane_phases(Int32(height), Int32(width), Int32(plane)))
        stsp_plane_masks(Int32(height), Int32(width), Int32(plane), Int32(r), planeMasks.reserve((phases + 1) * taps * 8))
        planesBuiltFor = (batch, height, width, generation)
    }

    /// The forward pass on planes: `y` stored in place on the grid.
    func planeForward(
        values vals: UnsafePointer<Float>,
        input: (x: UnsafePointer<Float>, staged: UnsafePointer<Float>, batch: Int, height: Int, width: Int),
        y: UnsafeMutablePointer<Float>, isa: KernelISA, threads: Int
    ) {
        let grid = planeGrid(height: input.height, width: input.width)
        preparePlanes(batch: input.batch, height: grid.height, width: grid.width)
        let plane = input.batch * grid.height * grid.width, cout = Int32(outChannels), isaCode = Int32(isa.rawValue)
        let rs = SendablePointer(index.rowStart), src = SendablePointer(planeSource.pointer)
        let tap = SendablePointer(planeTap.pointer), m = SendablePointer(planeMasks.pointer)
        let v = SendablePointer(UnsafeMutablePointer(mutating: vals)), reach = Int32(planeReach)
        let xp = SendablePointer(UnsafeMutablePointer(mutating: input.staged)), yp = SendablePointer(y)
        let stream: Int32 = plane * outChannels * MemoryLayout<Float>.stride >= streamedOutputBytes ? 1 : 0
        forEachTileRange(plane: plane, threads: threads) { t0, t1 in
            stsp_plane_spmm(isaCode, rs.pointer, src.pointer, tap.pointer, v.pointer, xp.pointer, m.pointer, reach,
                            Int32(grid.height), Int32(grid.width), Int32(plane), yp.pointer, plane, 0, cout, t0, t1, stream)
        }
    }

    /// The input gradient on planes (values in phase-index order): stored in place at stride 1;
    /// at stride 2 per phase into `phaseGradient`, then interleaved into `dx`.
    func planeInputGradient(
        values vals: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
        batch: Int, height: Int, width: Int, isa: KernelISA, threads: Int
    ) {
        let grid = planeGrid(height: height, width: width)
        preparePlanes(batch: batch, height: grid.height, width: grid.width)
        let plane = batch * grid.height * grid.width, rows = Int32(stride * stride * inChannels)
        let isaCode = Int32(isa.rawValue)
        let rs = SendablePointer(phaseRowStart.pointer), src = SendablePointer(planeSourceT.pointer)
        let tap = SendablePointer(planeTapT.pointer), m = SendablePointer(planeMasks.pointer)
        let v = SendablePointer(UnsafeMutablePointer(mutating: vals))
        let dys = staged(dy, channels: outChannels, plane: plane, into: stagedGradient, threads: threads)
        let dp = SendablePointer(UnsafeMutablePointer(mutating: dys)), reach = Int32(planeReach)
        let out = SendablePointer(stride == 1 ? dx : phaseGradient.reserve(Int(rows) * plane))
        let stream: Int32 = plane * Int(rows) * MemoryLayout<Float>.stride >= streamedOutputBytes ? 1 : 0
        forEachTileRange(plane: plane, threads: threads) { t0, t1 in
            stsp_plane_spmm(isaCode, rs.pointer, src.pointer, tap.pointer, v.pointer, dp.pointer, m.pointer, reach,
                            Int32(grid.height), Int32(grid.width), Int32(plane), out.pointer, plane, 0, rows, t0, t1, stream)
        }
        guard stride == 2 else { return }
        // dX[c][n][2i + π][2j + π'] = plane c of phase β = (2·((π + p) mod 2) + (π' + p) mod 2) at (n, i, j).
        let to = SendablePointer(dx), cin = inChannels, gw = grid.width, p = padding
        parallelChunks(cin, chunks: cin * batch * height * width > 1 << 16 ? threads : 1) { range in
            for c in range {
                for row in 0..<(batch * height) {
                    let dst = to.pointer + (c * batch * height + row) * width, i = row / 2, rowPhase = (row % 2 + p) % 2
                    let evenColumns = out.pointer + ((rowPhase * 2 + p % 2) * cin + c) * plane + i * gw
                    let oddColumns = out.pointer + ((rowPhase * 2 + (1 + p) % 2) * cin + c) * plane + i * gw
                    interleave(even: evenColumns, odd: oddColumns, count: gw, into: dst)
                }
            }
        }
    }

    /// Runs `body(tile0, tile1)` over contiguous ranges of the `plane / 128` tiles on up to `threads` workers.
    func forEachTileRange(plane: Int, threads: Int, _ body: @Sendable (Int32, Int32) -> Void) {
        let tiles = (plane + 127) / 128
        parallelChunks(tiles, chunks: min(threads, tiles)) { body(Int32($0.lowerBound), Int32($0.upperBound)) }
    }


    /// The groups of the planes weight gradient (`stsp_plane_sddmm`): each row's entries by tap
    /// (in index order within a tap), in groups of at most 8 of one tap; rebuilt after a mask change.
    /// The taps are the planes' (`preparePlanes` first).
    func preparePlaneGroups() {
        if planeGroupsBuiltFor == generation { return }
        let rows = outChannels, total = index.count, tapOf = planeTap.pointer
        let side = 2 * planeReach + 1, tapCount = side * side
        // Per row, Σ_t ⌈n_t / 8⌉ ≤ n / 8 + taps groups.
        let capacity = total / 8 + tapCount * rows + 1
        let rowGroups = planeRowGroups.reserve(rows + 1), entries = planeGroupEntries.reserve(8 * capacity)
        let taps = planeGroupTap.reserve(capacity), counts = planeGroupCount.reserve(capacity)
        var sorted = [Int32](repeating: 0, count: inChannels * kernelSize * kernelSize)
        var start = [Int](repeating: 0, count: tapCount + 1)
        var g = 0
        for r in 0..<rows {
            rowGroups[r] = Int32(g)
            let k0 = Int(index.rowStart[r]), k1 = Int(index.rowStart[r + 1])
            // Counting sort of the row's entries by tap.
            for t in 0...tapCount { start[t] = 0 }
            for k in k0..<k1 { start[Int(tapOf[k]) + 1] += 1 }
            for t in 0..<tapCount { start[t + 1] += start[t] }
            for k in k0..<k1 {
                let t = Int(tapOf[k])
                sorted[start[t]] = Int32(k)
                start[t] += 1
            }
            // start[t] is now the end of tap t's run.
            var i = 0
            for t in 0..<tapCount {
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
        let (_, x, batch, inputHeight, inputWidth) = input
        let (height, width) = planeGrid(height: inputHeight, width: inputWidth)
        preparePlanes(batch: batch, height: height, width: width)
        preparePlaneGroups()
        let plane = batch * height * width, tiles = (plane + 127) / 128, chunk = 32
        let (out, positions) = target(output)
        let rg = SendablePointer(planeRowGroups.pointer), ge = SendablePointer(planeGroupEntries.pointer)
        let gt = SendablePointer(planeGroupTap.pointer), gc = SendablePointer(planeGroupCount.pointer)
        let src = SendablePointer(planeSource.pointer), m = SendablePointer(planeMasks.pointer)
        let d = SendablePointer(UnsafeMutablePointer(mutating: dy)), xp = SendablePointer(UnsafeMutablePointer(mutating: x))
        let op = SendablePointer(out), pos = positions.map { SendablePointer($0) }, isaCode = Int32(isa.rawValue)
        let reach = Int32(planeReach)
        let parts = threads > 1 && index.count * plane >= 1 << 16 ? threads : 1
        let bounds = index.balancedRowSplit(parts: parts)
        let run = { @Sendable (t: Int) in
            for t0 in Swift.stride(from: 0, to: tiles, by: chunk) {
                stsp_plane_sddmm(isaCode, rg.pointer, ge.pointer, gt.pointer, gc.pointer, src.pointer, d.pointer, plane,
                                 xp.pointer, m.pointer, reach,
                                 Int32(height), Int32(width), Int32(plane), op.pointer, pos?.pointer,
                                 Int32(bounds[t]), Int32(bounds[t + 1]), Int32(t0), Int32(min(tiles, t0 + chunk)))
            }
        }
        if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
    }
}

/// `even[j] = row[2j]`, `odd[j] = row[2j + 1]` for j < count, eight pairs per 16-float vector.
@inline(__always)
private func deinterleave(_ row: UnsafePointer<Float>, even: UnsafeMutablePointer<Float>, odd: UnsafeMutablePointer<Float>,
                          count: Int) {
    var j = 0
    while j + 8 <= count {
        let v = UnsafeRawPointer(row + 2 * j).loadUnaligned(as: SIMD16<Float>.self)
        UnsafeMutableRawPointer(even + j).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(odd + j).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self)
        j += 8
    }
    while j < count {
        even[j] = row[2 * j]
        odd[j] = row[2 * j + 1]
        j += 1
    }
}

/// `row[2j] = even[j]`, `row[2j + 1] = odd[j]` for j < count: the inverse of `deinterleave`.
@inline(__always)
private func interleave(even: UnsafePointer<Float>, odd: UnsafePointer<Float>, count: Int, into row: UnsafeMutablePointer<Float>) {
    var j = 0
    while j + 8 <= count {
        var v = SIMD16<Float>()
        v.evenHalf = UnsafeRawPointer(even + j).loadUnaligned(as: SIMD8<Float>.self)
        v.oddHalf = UnsafeRawPointer(odd + j).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(row + 2 * j).storeBytes(of: v, as: SIMD16<Float>.self)
        j += 8
    }
    while j < count {
        row[2 * j] = even[j]
        row[2 * j + 1] = odd[j]
        j += 1
    }
}
