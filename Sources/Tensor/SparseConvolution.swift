import CSparseKernels
import Dispatch

/// The sparse passes of a masked k×k convolution (any stride and padding) on channel-major
/// activations `[C][N][H][W]`, with the activations in `ConvolutionFrames` so that each active
/// weight is one element offset and the linear kernels (`stsp_spmm`, `stsp_sddmm`, unit stride)
/// run unchanged:
/// - forward `Y = W ⊛ X`: rows o over positions of the forward frame, entries (c, kh, kw);
/// - weight gradient `dW[o, c, kh, kw] = Σ_p dYframe[o][p] · Xframe[p + source]` at the mask only;
/// - input gradient: per phase (a, b), rows c over the gradient frame, entries (o, kh, kw) with
///   kh ≡ a, kw ≡ b (mod s).
/// Work is split by chunks of whole frame rows (forward, dX; each worker owns its chunks and a
/// scratch for their outputs) or by output rows (dW; disjoint results).
///
/// `index` is the forward index over W viewed as `[Cout × Cin·k²]`, one source block, so entry k
/// is the k-th active weight in row-major order (`rowMajorPosition[k] == k`): values gathered
/// in index order and the weight gradient in index order are the reducer's packed order.
public final class SparseConvolution {
    public let outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int
    public let index: SparseIndex
    /// Positions per chunk of the forward and input-gradient passes aim for this many floats of
    /// frame window across the channels read.
    static let windowFloats = 1 << 15
    /// Positions per chunk of the weight gradient, whatever the channels: each active weight's
    /// dot product runs over a chunk and ends in a horizontal sum and a write, so short chunks
    /// (64 positions at 512 channels) spent as much on those as on the products. Measured with
    /// `bench conv` (4 alternating runs): 512→512 at 4×4, density 0.1, 35–45 ms with 64 → 24–27
    /// ms; 2×2 12–17 → 8–11 ms; 256→256 at 8×8 24–37 → 16–27 ms; 64→64 at 32×32 22–31 → 17–21 ms.
    static let weightGradientPositions = 4096
    /// Outputs of the planes passes from this many bytes up (more than a core's L2 holds) are
    /// written with non-temporal stores (`stsp_plane_spmm`'s `stream`): a plain store first reads
    /// each output line from memory. VGG16-BN at uniform 0.99 (`bench step`, 2 threads,
    /// alternating runs): its 3 → 64 layer 2.0 → 0.9–1.1 ms per step, 64 → 64 at 32×32 (33.5 MB
    /// outputs) 16.7–18.1 → 13.5–15.1, the step 97.7–110.9 → 90.8–96.3 ms. Two 1-thread processes
    /// side by side (as two ranks on this 2-core host share its L3), ResNet-20 at 0.99 and batch
    /// 64 each: 47–49 ms per step with a threshold of 8 MiB, 42–44 with 1 MiB (its 4 MiB outputs),
    /// 43 with 0; one 2-thread process: no difference from 0 to 8 MiB that the noise shows.
    public var streamedOutputBytes = 1 << 20

    private var frames: ConvolutionFrames?
    /// Frames of the input in `inputFrame` (nil: none loaded).
    private var loadedInput: ConvolutionFrames?
    enum GradientLayout { case forward, gradient }
    /// Which dY `gradientFrame` holds, for which frames, in which layout (nil: none).
    fileprivate var placedGradient: (dy: UnsafePointer<Float>, frames: ConvolutionFrames, layout: GradientLayout)?
    private var sourcesBuiltFor: (ConvolutionFrames, Int)?
    var generation = 0
    private let forwardSource = Buffer<Int32>(), values = Buffer<Float>()
    /// Input-gradient index: blocks = phases a·s + b, rows = input channels; entries keep the
    /// column `o·k² + kh·k + kw` and the forward entry they belong to.
    let phaseRowStart = Buffer<Int32>(), phaseColumn = Buffer<Int32>()
    private let phaseEntry = Buffer<Int32>()
    private let phaseSource = Buffer<Int32>(), phaseValues = Buffer<Float>()
    /// Rebuild scratch: per weight column its bucket and tap, per (worker, bucket) a cursor, and
    /// the offsets of every weight column and phase column in the current frames.
    private let columnBucket = Buffer<Int32>(), columnTap = Buffer<Int32>(), phaseCursor = Buffer<Int32>()
    private let sourceTable = Buffer<Int32>()
    private let inputFrame = Buffer<Float>(), gradientFrame = Buffer<Float>(), scratch = Buffer<Float>()

    /// Where the passes read and write activations: padded frames (any geometry), or the
    /// unpadded planes themselves (odd k×k with padding k / 2 up to 7×7: any H·W at stride 1, even H
    /// and W at stride 2 from a copy split into the four phases; outputs stored in place; see
    /// `stsp_plane_spmm`).
    public enum Layout: String, CaseIterable, Sendable { case automatic, frames, planes }
    /// `.automatic`: planes where they apply, the AVX-512 or AVX2 kernels run, and either the kernel is
    /// larger than 3×3, the images (the output grid) are at most 8×8 or the density is below 0.4
    /// (measured up to 0.317); else frames. `bench conv
    /// --layout planes|frames`, forward and input gradient each, batch 128, 2 threads: 64 → 64 at
    /// 32×32 density 0.317 38–39 against 46–63 ms, 0.1 14–15 against 23–26, 0.01 5.5–6.4 against
    /// 7–10; 128 → 128 at 16×16 0.317 35 against 45–53, 0.1 14 against 17–20; 512 → 512 at 4×4
    /// 0.317 37–39 against 78–84, 0.1 14–15 against 28–34; at 2×2 0.1 3.5–4.4 against 10–11.
    /// The AVX2 kernels (`--isa avx2`, the same Zen 4 host, batch 128): 0.317 47–50 against 52–80 ms
    /// at 32×32 … 4×4, 12 against 29 at 2×2; 0.1 17–20 against 19–34; 0.01 0.6–9 against 4–15 (at
    /// 32×32 8–9 against 7–15); batch 32, ResNet-50's 56×56 … 7×7 at 0.177 22–24 against 23–34.
    /// The planes kernels sum each output's entries in index order, as the frame kernels do, so
    /// forward and input gradient round alike in both layouts (summing them tap by tap moved a
    /// 52-step ResNet-20 run 9e-4 from the dense engine: ReLU units within rounding of zero flip;
    /// it was also slower: VGG16 uniform 0.99 126–134 ms per step against 115).
    public var layout: Layout = .automatic
    /// Planes layout: per entry its offset and tap, in forward-index order and in input-gradient
    /// (phase-index) order with flipped taps; the lane masks; what they were built for.
    let planeSource = Buffer<Int32>(), planeTap = Buffer<UInt8>()
    let planeSourceT = Buffer<Int32>(), planeTapT = Buffer<UInt8>(), planeMasks = Buffer<UInt16>()
    var planesBuiltFor: (batch: Int, height: Int, width: Int, generation: Int)?
    /// Whether the planes passes read their inputs from a copy with spread channels: nil follows
    /// the rule of `channelPitch`; true or false force it (tests).
    public var spreadsChannels: Bool? { didSet { planesBuiltFor = nil } }
    /// The weight gradient's groups on planes (see `preparePlaneGroups`) and the mask generation
    /// they were built for.
    let planeRowGroups = Buffer<Int32>(), planeGroupEntries = Buffer<Int32>()
    let planeGroupTap = Buffer<UInt8>(), planeGroupCount = Buffer<UInt8>()
    var planeGroupsBuiltFor: Int?
    /// The input of the last forward or `loadInput` in the planes layout (read in place).
    /// `staged`: the planes the passes read (x itself, or a copy at `channelPitch`).
    var planeInput: (x: UnsafePointer<Float>, staged: UnsafePointer<Float>, batch: Int, height: Int, width: Int)?
    /// `stagedInput`: the input copied at the channel pitch or split into phases; `stagedGradient`:
    /// dY copied at its pitch; `phaseGradient`: a stride-2 input gradient per phase before it is
    /// interleaved into dX.
    let stagedInput = Buffer<Float>(), stagedGradient = Buffer<Float>(), phaseGradient = Buffer<Float>()

    public init(outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int) {
        self.outChannels = outChannels
        self.inChannels = inChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        index = SparseIndex(weightRows: outChannels, weightColumns: inChannels * kernelSize * kernelSize, orientation: .rows)
    }

    /// Active weights.
    public var count: Int { index.count }
    private var phases: Int { stride * stride }

    /// Rebuilds both indices from a 0/1 mask `[Cout][Cin][k][k]` with `threads` workers; storage
    /// is reused.
    public func rebuild(mask: UnsafePointer<Float>, threads: Int = 1) {
        index.rebuild(mask: mask, blockWidth: inChannels * kernelSize * kernelSize, threads: threads)
        buildPhaseIndex(threads: threads)
    }

    /// Rebuilds both indices from the active positions of the weight (offsets into
    /// `[Cout][Cin][k][k]`, ascending), in time proportional to their number.
    public func rebuild(activePositions positions: UnsafeBufferPointer<Int32>, threads: Int = 1) {
        index.rebuildRows(activePositions: positions, threads: threads)
        buildPhaseIndex(threads: threads)
    }

    /// The input-gradient index from the forward index.
    private func buildPhaseIndex(threads: Int) {
        let taps = kernelSize * kernelSize, columns = inChannels * taps
        let total = index.count, buckets = phases * inChannels
        let starts = phaseRowStart.reserve(buckets + 1)
        let column = phaseColumn.reserve(total), entry = phaseEntry.reserve(total)
        // Per weight column t = c·k² + tap: its (phase, input channel) bucket and its tap.
        let bucketOf = columnBucket.reserve(columns), tapOf = columnTap.reserve(columns)
        for t in 0..<columns {
            let tap = t % taps, kh = tap / kernelSize, kw = tap % kernelSize
            bucketOf[t] = Int32(((kh % stride) * stride + kw % stride) * inChannels + t / taps)
            tapOf[t] = Int32(tap)
        }
        // Counting sort of the forward entries (row-major) into the buckets by `parts` workers,
        // each over a range of output channels. Worker p's entries of a bucket follow those of
        // workers before it, so every bucket lists its entries by ascending o as one worker would.
        let parts = threads > 1 && total >= 1 << 16 ? threads : 1
        let bounds = index.balancedRowSplit(parts: parts)
        let cursors = phaseCursor.reserve(parts * buckets)
        cursors.update(repeating: 0, count: parts * buckets)
        let rs = SendablePointer(index.rowStart), src = SendablePointer(index.source)
        let bt = SendablePointer(bucketOf), tt = SendablePointer(tapOf), cur = SendablePointer(cursors)
        let col = SendablePointer(column), ent = SendablePointer(entry)
        parallelChunks(parts, chunks: parts) { range in
            for p in range {
                let mine = cur.pointer + p * buckets
                for k in Int(rs.pointer[bounds[p]])..<Int(rs.pointer[bounds[p + 1]]) {
                    mine[Int(bt.pointer[Int(src.pointer[k])])] &+= 1
                }
            }
        }
        var running: Int32 = 0
        for b in 0..<buckets {
            starts[b] = running
            for p in 0..<parts {
                let n = cursors[p * buckets + b]
                cursors[p * buckets + b] = running
                running &+= n
            }
        }
        starts[buckets] = running
        parallelChunks(parts, chunks: parts) { range in
            for p in range {
                let mine = cur.pointer + p * buckets
                for o in bounds[p]..<bounds[p + 1] {
                    for k in Int(rs.pointer[o])..<Int(rs.pointer[o + 1]) {
                        let t = Int(src.pointer[k]), b = Int(bt.pointer[t]), e = Int(mine[b])
                        col.pointer[e] = Int32(o * taps) &+ tt.pointer[t]
                        ent.pointer[e] = Int32(k)
                        mine[b] = Int32(e + 1)
                    }
                }
            }
        }
        generation &+= 1
    }

    /// Points the passes at activations of `batch` images of `height × width`: frames and the
    /// entries' offsets follow (recomputed only when the shape or the mask changed).
    private func prepare(batch: Int, height: Int, width: Int, threads: Int) -> ConvolutionFrames {
        let g = ConvGeometry(channels: inChannels, height: height, width: width, kernelH: kernelSize,
                             kernelW: kernelSize, stride: stride, padding: padding)
        let f = ConvolutionFrames(g, batch: batch)
        precondition(f.inputCount < Int(Int32.max) && outChannels * f.gradientPlane < Int(Int32.max),
                     "sparse convolution frames are limited to 2^31 floats")
        return ensureSources(f, threads: threads)
    }

    /// `f` as the current frames, with the entries' offsets computed for it and the current mask.
    @discardableResult
    private func ensureSources(_ f: ConvolutionFrames, threads: Int) -> ConvolutionFrames {
        frames = f
        if let built = sourcesBuiltFor, built.0 == f, built.1 == generation { return f }
        // Each entry's offset is a function of its weight column (forward: c, kh, kw) or its
        // phase column (input gradient: o, kh, kw): tabulate those, then look every entry up.
        let total = index.count, taps = kernelSize * kernelSize, columns = inChannels * taps
        let table = sourceTable.reserve(columns + outChannels * taps)
        for t in 0..<columns { table[t] = Int32(f.forwardSource(column: t)) }
        for t in 0..<(outChannels * taps) {
            table[columns + t] = Int32(f.gradientSource(outChannel: t / taps, kh: t % taps / kernelSize, kw: t % kernelSize))
        }
        let forward = SendablePointer(forwardSource.reserve(total)), phase = SendablePointer(phaseSource.reserve(total))
        let lookup = SendablePointer(table), src = SendablePointer(index.source), col = SendablePointer(phaseColumn.pointer)
        parallelChunks(total, chunks: threads > 1 && total >= 1 << 16 ? threads : 1) { range in
            for k in range {
                forward.pointer[k] = lookup.pointer[Int(src.pointer[k])]
                phase.pointer[k] = lookup.pointer[columns + Int(col.pointer[k])]
            }
        }
        sourcesBuiltFor = (f, generation)
        return f
    }

    /// Where the weight gradient's sampled products go: a dense gradient at each entry's weight
    /// offset, or packed in index order (no positions).
    func target(_ output: SampledOutput) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>?) {
        switch output {
        case .dense(let g): return (g, index.weightOffset)
        case .packed(let g): return (g, nil)
        }
    }

    /// Positions per chunk when `channels` frame channels (× planes) are read.
    private func chunkTarget(channels: Int) -> Int {
        min(1024, max(64, Self.windowFloats / max(1, channels)))
    }

    /// Runs `body(scratch, i)` for items `0 ..< items` on up to `threads` workers (item i on
    /// worker i mod workers), each worker with its own scratch of `area` floats.
    private func forEachItem(
        _ items: Int, area: Int, threads: Int, _ body: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    ) {
        let workers = max(1, min(threads, items))
        let s = SendablePointer(scratch.reserve(max(1, workers * area)))
        if workers == 1 {
            for i in 0..<items { body(s.pointer, i) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for i in Swift.stride(from: w, to: items, by: workers) { body(s.pointer + w * area, i) }
        }
    }

    /// Writes the forward frame of `x` (`[Cin][N][H][W]`), which `weightGradient` reads — or, in
    /// the planes layout, keeps `x` itself (which must then stay unchanged until the weight gradient).
    public func loadInput(_ x: UnsafePointer<Float>, batch: Int, height: Int, width: Int, isa: KernelISA = .best,
                          threads: Int = 1) {
        if usesPlanes(height: height, width: width, isa: isa) {
            planeInput = (x, stagedPlanes(x, batch: batch, height: height, width: width, threads: threads), batch, height, width)
            loadedInput = nil
            return
        }
        planeInput = nil
        loadFrame(x, batch: batch, height: height, width: width, threads: threads)
    }

    /// Writes the forward frame of `x`, which the frames' weight gradient reads.
    private func loadFrame(_ x: UnsafePointer<Float>, batch: Int, height: Int, width: Int, threads: Int) {
        let f = prepare(batch: batch, height: height, width: width, threads: threads)
        f.packInput(x, into: inputFrame.reserve(f.inputCount), threads: threads)
        loadedInput = f
        outputGradientChanged()
    }

    /// `y[Cout][N][Ho][Wo] = (W⊙M) ⊛ x[Cin][N][H][W]` (dense weights `w`, read at the mask).
    /// Keeps the forward frame of x for `weightGradient`.
    public func forward(
        weights w: UnsafePointer<Float>, x: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
        y: UnsafeMutablePointer<Float>, isa: KernelISA = .best, threads: Int = 1
    ) {
        forward(weights: .dense(w), x: x, batch: batch, height: height, width: width, y: y, isa: isa, threads: threads)
    }

    /// `forward` with dense or packed weights (packed: read as they are, index order being
    /// row-major order).
    public func forward(
        weights: SparseWeights, x: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
        y: UnsafeMutablePointer<Float>, isa: KernelISA = .best, threads: Int = 1
    ) {
        loadInput(x, batch: batch, height: height, width: width, isa: isa, threads: threads)
        let vals: UnsafePointer<Float>
        switch weights {
        case .packed(let p): vals = p
        case .dense(let w):
            let gathered = values.reserve(index.count)
            SparseKernels.gatherValues(index, weights: w, into: gathered, threads: threads)
            vals = UnsafePointer(gathered)
        }
        if let input = planeInput {
            planeForward(values: vals, input: input, y: y, isa: isa, threads: threads)
            return
        }
        let f = frames!, frame = inputFrame.pointer
        let rs = SendablePointer(index.rowStart), src = SendablePointer(forwardSource.pointer)
        let v = SendablePointer(UnsafeMutablePointer(mutating: vals)), xf = SendablePointer(frame), yp = SendablePointer(y)
        let isaCode = Int32(isa.rawValue), cout = outChannels
        let chunks = ConvolutionFrames.chunks(total: f.forwardPositions, width: f.cols,
                                              target: chunkTarget(channels: inChannels * f.planes))
        forEachItem(chunks.count, area: cout * (chunks.first?.1 ?? 0), threads: threads) { out, i in
            let (first, count) = chunks[i]
            stsp_spmm(isaCode, rs.pointer, src.pointer, nil, v.pointer, xf.pointer + first, 1, Int32(count),
                      out, count, 0, Int32(cout), 0, nil, 0, 0)
            f.storeOutput(out, channels: cout, first: first, count: count, into: yp.pointer)
        }
    }

    /// `dW += dY ⊛ X` at the mask's positions only, for the input of the last `forward` or
    /// `loadInput`: into a dense `[Cout][Cin][k][k]` gradient (`.dense`) or in index order (`.packed`).
    public func weightGradient(
        dy: UnsafePointer<Float>, into output: SampledOutput, isa: KernelISA = .best, threads: Int = 1
    ) {
        if let input = planeInput {
            let grid = planeGrid(height: input.height, width: input.width)
            if planesForWeightGradient(height: grid.height, width: grid.width, isa: isa) {
                planeWeightGradient(dy: dy, input: input, into: output, isa: isa, threads: threads)
                return
            }
            if loadedInput == nil {
                // This pass runs on frames: frame the input the forward read in place.
                loadFrame(input.x, batch: input.batch, height: input.height, width: input.width, threads: threads)
            }
        }
        guard let f = loadedInput else { preconditionFailure("SparseConvolution.weightGradient before loadInput") }
        ensureSources(f, threads: threads)
        let (frame, ld) = outputGradientInForwardFrame(dy, f, threads: threads)
        let (out, positions) = target(output)
        let rs = SendablePointer(index.rowStart), src = SendablePointer(forwardSource.pointer)
        let d = SendablePointer(frame), xf = SendablePointer(inputFrame.pointer), op = SendablePointer(out)
        let pos = positions.map { SendablePointer($0) }, isaCode = Int32(isa.rawValue)
        let chunks = ConvolutionFrames.chunks(total: f.forwardPositions, width: f.cols, target: Self.weightGradientPositions)
        let parts = threads > 1 && index.count * f.forwardPositions >= 1 << 16 ? threads : 1
        let bounds = index.balancedRowSplit(parts: parts)
        let run = { @Sendable (t: Int) in
            for (first, count) in chunks {
                stsp_sddmm(isaCode, rs.pointer, 0, 1, src.pointer, d.pointer + first, ld, xf.pointer + first, 1, Int32(count),
                           op.pointer, pos?.pointer, Int32(bounds[t]), Int32(bounds[t + 1]))
            }
        }
        if parts == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: run) }
    }

    /// `dx[Cin][N][H][W] = (W⊙M)ᵀ ⊛ dy` (dense weights `w`, read at the mask) for `batch` inputs
    /// of `height × width`.
    public func inputGradient(
        weights w: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
        batch: Int, height: Int, width: Int, isa: KernelISA = .best, threads: Int = 1
    ) {
        inputGradient(weights: .dense(w), dy: dy, dx: dx, batch: batch, height: height, width: width, isa: isa, threads: threads)
    }

    /// `inputGradient` with dense or packed weights.
    public func inputGradient(
        weights: SparseWeights, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
        batch: Int, height: Int, width: Int, isa: KernelISA = .best, threads: Int = 1
    ) {
        let total = index.count, vals = phaseValues.reserve(total), entry = phaseEntry.pointer
        switch weights {
        case .dense(let w): for e in 0..<total { vals[e] = w[Int(index.weightOffset[Int(entry[e])])] }
        case .packed(let p): for e in 0..<total { vals[e] = p[Int(entry[e])] }
        }
        if usesPlanes(height: height, width: width, isa: isa) {
            planeInputGradient(values: vals, dy: dy, dx: dx, batch: batch, height: height, width: width, isa: isa,
                               threads: threads)
            return
        }
        let f = prepare(batch: batch, height: height, width: width, threads: threads)
        if kernelSize < stride {
            // Phases without taps: their pixels get no gradient.
            dx.update(repeating: 0, count: inChannels * f.batch * f.geometry.inPlane)
        }
        let frame = outputGradientInGradientFrame(dy, f, threads: threads)
        let rs = SendablePointer(phaseRowStart.pointer), src = SendablePointer(phaseSource.pointer)
        let v = SendablePointer(vals), df = SendablePointer(frame), dxp = SendablePointer(dx)
        let isaCode = Int32(isa.rawValue), cin = inChannels, s = stride, side = f.phaseSide
        let chunks = ConvolutionFrames.chunks(total: f.gradientPositions, width: f.gradientCols,
                                              target: chunkTarget(channels: outChannels))
        // Work items: (phase, chunk) over the phases that have taps.
        let items = (0..<side).flatMap { a in (0..<side).flatMap { b in chunks.map { (a, b, $0.0, $0.1) } } }
        forEachItem(items.count, area: cin * (chunks.first?.1 ?? 0), threads: threads) { out, i in
            let (a, b, first, count) = items[i]
            stsp_spmm(isaCode, rs.pointer + (a * s + b) * cin, src.pointer, nil, v.pointer, df.pointer + first, 1,
                      Int32(count), out, count, 0, Int32(cin), 0, nil, 0, 0)
            f.storeInputGradient(out, channels: cin, phase: a, b, first: first, count: count, into: dxp.pointer)
        }
    }
}

extension SparseConvolution {
    /// Marks the output gradient frames stale: the next pass given a `dy` places it again (the
    /// passes of one backward share it). Called by each `loadInput`; a caller whose forward ran
    /// elsewhere calls it before the backward.
    public func outputGradientChanged() { placedGradient = nil }

    /// dY in the gradient frame (placed once per backward).
    fileprivate func outputGradientInGradientFrame(
        _ dy: UnsafePointer<Float>, _ f: ConvolutionFrames, threads: Int
    ) -> UnsafeMutablePointer<Float> {
        if let p = placedGradient, p.dy == dy, p.frames == f, p.layout == .gradient { return gradientFrame.pointer }
        let frame = gradientFrame.reserve(outChannels * f.gradientPlane)
        f.place(dy, channels: outChannels, frameRows: f.gradientRows, frameCols: f.gradientCols,
                planeSize: f.gradientPlane, at: f.gradientTop, into: frame, threads: threads)
        placedGradient = (dy, f, .gradient)
        return frame
    }

    /// dY in the forward frame with its row stride: the gradient frame seen `gradientTop` rows
    /// and columns in when the two have the same pitch (stride 1), else a frame of its own.
    fileprivate func outputGradientInForwardFrame(
        _ dy: UnsafePointer<Float>, _ f: ConvolutionFrames, threads: Int
    ) -> (UnsafeMutablePointer<Float>, Int) {
        let shift = f.gradientTop * f.cols + f.gradientTop
        if f.planes == 1, f.rows == f.gradientRows, f.cols == f.gradientCols,
           f.forwardPositions + shift <= f.gradientPlane {
            return (outputGradientInGradientFrame(dy, f, threads: threads) + shift, f.gradientPlane)
        }
        if let p = placedGradient, p.dy == dy, p.frames == f, p.layout == .forward { return (gradientFrame.pointer, f.planeStride) }
        let frame = gradientFrame.reserve(outChannels * f.planeStride)
        f.place(dy, channels: outChannels, frameRows: f.rows, frameCols: f.cols, planeSize: f.planeStride, at: 0,
                into: frame, threads: threads)
        placedGradient = (dy, f, .forward)
        return (frame, f.planeStride)
    }
}

/// A growable array of `T` that keeps its storage (capacity only grows), starting on a cache line.
final class Buffer<T> {
    private(set) var pointer: UnsafeMutablePointer<T> = Buffer.allocate(1)
    private var capacity = 1

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<T> {
        allocateAligned(byteCount: count * MemoryLayout<T>.stride)
            .bindMemory(to: T.self, capacity: count)
    }

    /// Storage for at least `count` elements (contents kept only while it does not grow).
    func reserve(_ count: Int) -> UnsafeMutablePointer<T> {
        if count > capacity {
            pointer.deallocate()
            capacity = max(count, capacity * 5 / 4)
            pointer = Self.allocate(capacity)
        }
        return pointer
    }

    deinit { pointer.deallocate() }
}
