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
    /// 0.05. Its masked loads cost a mask per multiply-add, the frames' copies one pass over the
    /// activations: `bench conv --layout planes|frames` (batch 128, 2 threads) at density 0.01
    /// planes 0.4–3.9 ms against frames 1.1–6.2 (64 → 64 at 32×32 … 512 → 512 at 2×2), at 0.1
    /// 14–19 against 13–15 at 32×32 and 16×16 (3.6 against 5.9 at 2×2), at 0.317 41 against 31–35.
    /// (Planes at 2×2 up to 0.1 would be faster, but moved the 52-step ResNet-20 comparison with the
    /// dense engine to 4.5e-5, not yet explained; frames keep it at 1e-6.)
    func planesForWeightGradient(height: Int, width: Int) -> Bool {
        layout == .planes || index.density < 0.05
    }

    /// Floats between channels of the planes the kernels read. At batch 128 a plane is a power of
    /// two floats (32×32: 512 KB), so every channel's window of a tile falls into the same cache
    /// sets and 64 of them thrash L1 and L2; planes whose size is a multiple of 4 KB are read from a
    /// copy whose channels lie 17 cache lines further apart.
    static func channelPitch(plane: Int) -> Int { plane % 1024 == 0 ? plane + 17 * 16 : plane }

    /// `x` (`channels` planes of `plane` floats) at `channelPitch`: x itself, or a copy in `buffer`.
    func staged(_ x: UnsafePointer<Float>, channels: Int, plane: Int, into buffer: Buffer<Float>,
                threads: Int) -> UnsafePointer<Float> {
        let pitch = Self.channelPitch(plane: plane)
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
        let plane = batch * height * width, pitch = Self.channelPitch(plane: plane)
        precondition((max(inChannels, outChannels) + 1) * pitch < Int(Int32.max), "sparse convolution planes are limited to 2^31 floats")
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
            srcT[e] = Int32(c / 9 * pitch - shift(t))
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


    /// The weight gradient in the planes layout: dY and the input read in place, rows split
    /// between workers, positions in chunks of 32 tiles (a chunk's input window stays in cache).
    func planeWeightGradient(
        dy: UnsafePointer<Float>,
        input: (x: UnsafePointer<Float>, staged: UnsafePointer<Float>, batch: Int, height: Int, width: Int),
        into output: SampledOutput, isa: KernelISA, threads: Int
    ) {
        let (_, x, batch, height, width) = input
        preparePlanes(batch: batch, height: height, width: width)
        let plane = batch * height * width, tiles = (plane + 127) / 128, chunk = 32
        let (out, positions) = target(output)
        let rs = SendablePointer(index.rowStart), src = SendablePointer(planeSource.pointer)
        let tap = SendablePointer(planeTap.pointer), m = SendablePointer(planeMasks.pointer)
        let d = SendablePointer(UnsafeMutablePointer(mutating: dy)), xp = SendablePointer(UnsafeMutablePointer(mutating: x))
        let op = SendablePointer(out), pos = positions.map { SendablePointer($0) }, isaCode = Int32(isa.rawValue)
        let parts = threads > 1 && index.count * plane >= 1 << 16 ? threads : 1
        let bounds = index.balancedRowSplit(parts: parts)
        let run = { @Sendable (t: Int) in
            for t0 in Swift.stride(from: 0, to: tiles, by: chunk) {
                stsp_plane_sddmm(isaCode, rs.pointer, src.pointer, tap.pointer, d.pointer, plane, xp.pointer, m.pointer,
                                 Int32(height), Int32(width), Int32(plane), op.pointer, pos?.pointer,
                                 Int32(bounds[t]), Int32(bounds[t + 1]), Int32(t0), Int32(min(tiles, t0 + chunk)))
            }
        }
        if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
    }
}
