import CSparseKernels

/// The sparse passes of a masked k×k convolution on small images (a few pixels, as VGG's 4×4 and
/// 2×2 layers) as one sparse matrix over (channel, pixel) features, run by the linear kernels:
///
///     W_u[(o, q), (c, p)] = W[o, c, kh, kw]   when output pixel q reads input pixel p by tap (kh, kw)
///
/// so `Y_u = W_u·X_u`, `dX_u = W_uᵀ·dY_u` and `dW[o, c, kh, kw] = Σ_(q,p) dY_u[(o, q)]·X_u[(c, p)]`
/// over the pixel pairs of the tap, with `X_u[(c, p)][n] = x[c][n][p]` (the batch innermost).
/// A tap that falls in the padding has no entry, so nothing is computed for it: on a 2×2 image
/// the framed kernels (`SparseConvolution`) compute 81 products per 16 useful ones.
///
/// Built from the active weights' offsets (row-major, ascending) for one image size, in time
/// proportional to the entries: rows of `W_u` list their sources ascending (for a fixed output
/// row and input channel the input pixel grows with the tap); rows of `W_uᵀ` by output channel
/// (the kernels do not need sorted sources).
public final class UnrolledConvolution {
    public let outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int
    /// Input images of at most this many pixels take this path in a masked convolution.
    /// (4×4 images would also run faster unrolled — VGG16 ERK 0.9's 4×4 layers 100 → 70 ms — but
    /// their index has ~11 entries per weight, whose rebuild after a mask change alone would take
    /// longer than all the other layers' together.)
    public static let maxInputPixels = 4

    private var built: (height: Int, width: Int, token: Int)?
    private var inPixels = 0, outPixels = 0
    /// Entries of `W_u` (products per image and pass).
    public private(set) var entries = 0
    /// Row index of `W_u` (rows (o, q), sources (c, p)) and of `W_uᵀ` (rows (c, p), sources
    /// (o, q)): row starts and sources; per forward entry its weight's offset and rank among the
    /// active weights (the packed order), per transposed entry its weight's offset.
    private let forwardStart = Buffer<Int32>(), forwardSource = Buffer<Int32>()
    private let forwardWeight = Buffer<Int32>(), forwardRank = Buffer<Int32>()
    private let transposedStart = Buffer<Int32>(), transposedSource = Buffer<Int32>(), transposedWeight = Buffer<Int32>()
    private let values = Buffer<Float>()
    /// Build scratch: per active weight its input channel, tap and output channel; the weights by
    /// input channel (taps, output channels, offsets); per channel run starts, entry starts and
    /// cursors; (c, t) per offset in a run, valid pixels per tap, and pixel lookups per tap.
    private let channelOf = Buffer<Int32>(), tapOf = Buffer<Int32>(), outputChannelOf = Buffer<Int32>()
    private let weightsByInput = Buffer<Int32>(), groupStart = Buffer<Int32>(), groupEntries = Buffer<Int>()
    private let inputCursor = Buffer<Int32>(), lookupTable = Buffer<Int32>(), lookupPixels = Buffer<Int32>()
    /// X_u of the last forward (or `loadInput`), dY_u placed for `placedGradient`, and a scratch
    /// for outputs in the unrolled layout.
    private let inputU = Buffer<Float>(), gradientU = Buffer<Float>(), outputU = Buffer<Float>()
    private var loadedBatch = 0
    private var placedGradient: UnsafePointer<Float>?

    public init(outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int) {
        self.outChannels = outChannels
        self.inChannels = inChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
    }

    /// Builds the indices for `height × width` inputs from `count` active weight offsets
    /// (ascending) unless they were built for that size and `token` (the caller's mask
    /// generation) already.
    public func prepare(height: Int, width: Int, activeOffsets: UnsafePointer<Int32>, count: Int, token: Int, threads: Int = 1) {
        if let b = built, b.height == height, b.width == width, b.token == token { return }
        let g = ConvGeometry(channels: inChannels, height: height, width: width, kernelH: kernelSize,
                             kernelW: kernelSize, stride: stride, padding: padding)
        let P = g.inPlane, Q = g.outPlane, taps = kernelSize * kernelSize, perRow = inChannels * taps
        inPixels = P
        outPixels = Q
        precondition(outChannels * Q * inChannels * P < Int(Int32.max), "unrolled convolution limited to 2^31 positions")
        // Input pixel of (tap, output pixel), −1 in the padding; output pixel of (tap, input pixel).
        var inputOf = [Int32](repeating: -1, count: taps * Q), outputOf = [Int32](repeating: -1, count: taps * P)
        for t in 0..<taps {
            let kh = t / kernelSize, kw = t % kernelSize
            for oh in 0..<g.outHeight {
                for ow in 0..<g.outWidth {
                    let ih = oh * stride + kh - padding, iw = ow * stride + kw - padding
                    guard ih >= 0, ih < height, iw >= 0, iw < width else { continue }
                    inputOf[t * Q + oh * g.outWidth + ow] = Int32(ih * width + iw)
                    outputOf[t * P + ih * width + iw] = Int32(oh * g.outWidth + ow)
                }
            }
        }
        // Per active weight j (ascending offset v = (o·Cin + c)·k² + t): c, t and o, with (c, t)
        // looked up from v's place in its output channel's run; per output channel the start of
        // its run and of its entries; per input channel its number of weights and entries.
        let cOf = channelOf.reserve(max(1, count)), tOf = tapOf.reserve(max(1, count)), oOf = outputChannelOf.reserve(max(1, count))
        let table = lookupTable.reserve(2 * perRow + 2 * taps)
        let channelAt = table, tapAt = table + perRow, validQ = table + 2 * perRow, validP = validQ + taps
        for r in 0..<perRow { channelAt[r] = Int32(r / taps); tapAt[r] = Int32(r % taps) }
        for t in 0..<taps {
            validQ[t] = Int32((0..<Q).filter { inputOf[t * Q + $0] >= 0 }.count)
            validP[t] = Int32((0..<P).filter { outputOf[t * P + $0] >= 0 }.count)
        }
        let runStart = groupStart.reserve(outChannels + 1 + inChannels + 1)
        let inputStart = runStart + outChannels + 1
        let firstEntry = groupEntries.reserve(outChannels + 1 + inChannels + 1)
        let firstInputEntry = firstEntry + outChannels + 1
        inputStart.update(repeating: 0, count: inChannels + 1)
        firstInputEntry.update(repeating: 0, count: inChannels + 1)
        runStart[0] = 0
        firstEntry[0] = 0
        var o = 0, total = 0
        for j in 0..<count {
            let v = Int(activeOffsets[j])
            while v >= (o + 1) &* perRow { o &+= 1; runStart[o] = Int32(truncatingIfNeeded: j); firstEntry[o] = total }
            let r = v &- o &* perRow
            let c = channelAt[r], t = tapAt[r]
            cOf[j] = c
            tOf[j] = t
            oOf[j] = Int32(truncatingIfNeeded: o)
            inputStart[Int(c) &+ 1] &+= 1
            firstInputEntry[Int(c) &+ 1] &+= Int(validP[Int(t)])
            total &+= Int(validQ[Int(t)])
        }
        for r in (o + 1)...outChannels { runStart[r] = Int32(count); firstEntry[r] = total }
        for c in 0..<inChannels {
            inputStart[c + 1] &+= inputStart[c]
            firstInputEntry[c + 1] &+= firstInputEntry[c]
        }
        entries = total
        let parts = threads > 1 && total >= 1 << 16 ? threads : 1
        let lookup = lookupPixels.reserve(taps * (P + Q))
        for i in 0..<(taps * Q) { lookup[i] = inputOf[i] }
        for i in 0..<(taps * P) { lookup[taps * Q + i] = outputOf[i] }
        // Forward rows (o, q), each over its output channel's weights (c, t) ascending.
        let fStart = forwardStart.reserve(outChannels * Q + 1), fSource = forwardSource.reserve(max(1, total))
        let fWeight = forwardWeight.reserve(max(1, total)), fRank = forwardRank.reserve(max(1, total))
        let rs = SendablePointer(runStart), fe = SendablePointer(firstEntry), tp = SendablePointer(tOf), cp = SendablePointer(cOf)
        let lk = SendablePointer(lookup), offsets = SendablePointer(UnsafeMutablePointer(mutating: activeOffsets))
        let fs = SendablePointer(fStart), fsrc = SendablePointer(fSource), fw = SendablePointer(fWeight), fr = SendablePointer(fRank)
        let cout = outChannels, cin = inChannels
        parallelChunks(cout, chunks: parts) { range in
            _ = stsp_unroll_rows(rs.pointer, Int32(range.lowerBound), Int32(range.upperBound), Int32(Q), tp.pointer, cp.pointer,
                                 lk.pointer, Int32(P), offsets.pointer, fs.pointer, fsrc.pointer, fw.pointer, fr.pointer,
                                 fe.pointer[range.lowerBound])
        }
        fStart[outChannels * Q] = Int32(total)
        // Transposed rows (c, p): the weights of input channel c, gathered by a counting sort
        // (output channel, then tap, ascending) with their tap, output channel and offset.
        let inTap = weightsByInput.reserve(max(1, 3 * count))
        let inOut = inTap + count, inOffset = inTap + 2 * count
        let cursor = inputCursor.reserve(inChannels)
        cursor.update(from: inputStart, count: inChannels)
        for j in 0..<count {
            let c = Int(cOf[j]), i = Int(cursor[c])
            inTap[i] = tOf[j]
            inOut[i] = oOf[j]
            inOffset[i] = activeOffsets[j]
            cursor[c] = Int32(truncatingIfNeeded: i &+ 1)
        }
        let tStart = transposedStart.reserve(inChannels * P + 1), tSource = transposedSource.reserve(max(1, total))
        let tWeight = transposedWeight.reserve(max(1, total))
        let ins = SendablePointer(inputStart), fie = SendablePointer(firstInputEntry)
        let it = SendablePointer(inTap), io = SendablePointer(inOut), iv = SendablePointer(inOffset)
        let ts = SendablePointer(tStart), tsrc = SendablePointer(tSource), tw = SendablePointer(tWeight)
        parallelChunks(cin, chunks: parts) { range in
            _ = stsp_unroll_rows(ins.pointer, Int32(range.lowerBound), Int32(range.upperBound), Int32(P), it.pointer, io.pointer,
                                 lk.pointer + taps * Q, Int32(Q), iv.pointer, ts.pointer, tsrc.pointer, tw.pointer, nil,
                                 fie.pointer[range.lowerBound])
        }
        tStart[inChannels * P] = Int32(total)
        built = (height, width, token)
        placedGradient = nil
        loadedBatch = 0
    }

    /// Row boundaries (multiples of `align`) splitting rows `0 ..< rows` of a row index into
    /// `parts` runs of about equal entries.
    private static func split(_ start: UnsafeMutablePointer<Int32>, rows: Int, parts: Int, align: Int) -> [Int] {
        let total = Int(start[rows])
        var bounds = [0]
        for t in 1..<max(1, parts) {
            let target = Int32(total * t / parts)
            var lo = bounds.last!, hi = rows
            while lo < hi { let mid = (lo + hi) / 2; if start[mid] < target { lo = mid + 1 } else { hi = mid } }
            bounds.append(max(bounds.last!, min(rows, (lo + align / 2) / align * align)))
        }
        bounds.append(rows)
        return bounds
    }

    /// `y[r][n] = Σ_k values[k]·x[source[k]][n]` for the rows of an index, by `threads` workers
    /// owning runs of rows.
    private func multiply(start: UnsafeMutablePointer<Int32>, source: UnsafeMutablePointer<Int32>, rows: Int,
                          values: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, batch: Int,
                          y: UnsafeMutablePointer<Float>, isa: SparseISA, threads: Int) {
        let parts = threads > 1 && entries * batch >= 1 << 16 ? threads : 1
        let bounds = Self.split(start, rows: rows, parts: parts, align: 1)
        let sp = SendablePointer(start), src = SendablePointer(source), vp = SendablePointer(values)
        let xp = SendablePointer(UnsafeMutablePointer(mutating: x)), yp = SendablePointer(y), isaCode = Int32(isa.rawValue)
        parallelChunks(parts, chunks: parts) { range in
            for t in range {
                stsp_spmm(isaCode, sp.pointer, src.pointer, nil, vp.pointer, xp.pointer, batch, Int32(batch), yp.pointer, batch,
                          Int32(bounds[t]), Int32(bounds[t + 1]), 0)
            }
        }
    }

    /// `dst[(c·P + p)·N + n] = src[(c·N + n)·P + p]` for `channels` channels.
    private static func unroll(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                               batch: Int, pixels: Int, threads: Int) {
        let s = SendablePointer(UnsafeMutablePointer(mutating: src)), d = SendablePointer(dst)
        parallelChunks(channels, chunks: channels * batch * pixels >= 1 << 16 ? threads : 1) { range in
            for c in range {
                let from = s.pointer + c * batch * pixels, to = d.pointer + c * batch * pixels
                for n in 0..<batch { for p in 0..<pixels { to[p * batch + n] = from[n * pixels + p] } }
            }
        }
    }

    /// The inverse of `unroll`.
    private static func roll(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                             batch: Int, pixels: Int, threads: Int) {
        let s = SendablePointer(UnsafeMutablePointer(mutating: src)), d = SendablePointer(dst)
        parallelChunks(channels, chunks: channels * batch * pixels >= 1 << 16 ? threads : 1) { range in
            for c in range {
                let from = s.pointer + c * batch * pixels, to = d.pointer + c * batch * pixels
                for n in 0..<batch { for p in 0..<pixels { to[n * pixels + p] = from[p * batch + n] } }
            }
        }
    }

    /// `values[k] = w[offset[k]]` for every entry.
    private func gather(_ w: UnsafePointer<Float>, _ offset: UnsafeMutablePointer<Int32>, threads: Int) -> UnsafeMutablePointer<Float> {
        let n = entries, v = values.reserve(max(1, n))
        let vp = SendablePointer(v), op = SendablePointer(offset), wp = SendablePointer(UnsafeMutablePointer(mutating: w))
        parallelChunks(n, chunks: n >= 1 << 16 ? threads : 1) { r in for k in r { vp.pointer[k] = wp.pointer[Int(op.pointer[k])] } }
        return v
    }

    /// Keeps X_u of `x` (`[Cin][N][H][W]`) for `weightGradient`.
    public func loadInput(_ x: UnsafePointer<Float>, batch: Int, threads: Int = 1) {
        Self.unroll(x, into: inputU.reserve(inChannels * inPixels * batch), channels: inChannels, batch: batch,
                    pixels: inPixels, threads: threads)
        loadedBatch = batch
        placedGradient = nil
    }

    /// `y[Cout][N][Ho][Wo] = (W⊙M) ⊛ x` (dense weights `w`, read at the mask); keeps X_u.
    public func forward(weights w: UnsafePointer<Float>, x: UnsafePointer<Float>, batch: Int,
                        y: UnsafeMutablePointer<Float>, isa: SparseISA = .best, threads: Int = 1) {
        precondition(built != nil, "UnrolledConvolution.forward before prepare")
        loadInput(x, batch: batch, threads: threads)
        let v = gather(w, forwardWeight.pointer, threads: threads)
        let out = outputU.reserve(outChannels * outPixels * batch)
        multiply(start: forwardStart.pointer, source: forwardSource.pointer, rows: outChannels * outPixels, values: v,
                 x: inputU.pointer, batch: batch, y: out, isa: isa, threads: threads)
        Self.roll(out, into: y, channels: outChannels, batch: batch, pixels: outPixels, threads: threads)
    }

    /// Marks dY_u stale: the next backward pass places its `dy` again (called at every forward of
    /// the layer, whichever path ran: a gradient buffer may come back at the same address).
    public func outputGradientChanged() { placedGradient = nil }

    /// dY_u of `dy`, placed once per backward.
    private func placedGradientU(_ dy: UnsafePointer<Float>, batch: Int, threads: Int) -> UnsafeMutablePointer<Float> {
        if placedGradient == dy { return gradientU.pointer }
        Self.unroll(dy, into: gradientU.reserve(outChannels * outPixels * batch), channels: outChannels, batch: batch,
                    pixels: outPixels, threads: threads)
        placedGradient = dy
        return gradientU.pointer
    }

    /// `dx[Cin][N][H][W] = (W⊙M)ᵀ ⊛ dy`.
    public func inputGradient(weights w: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                              batch: Int, isa: SparseISA = .best, threads: Int = 1) {
        precondition(built != nil, "UnrolledConvolution.inputGradient before prepare")
        let v = gather(w, transposedWeight.pointer, threads: threads)
        let d = placedGradientU(dy, batch: batch, threads: threads)
        let out = outputU.reserve(inChannels * inPixels * batch)
        multiply(start: transposedStart.pointer, source: transposedSource.pointer, rows: inChannels * inPixels, values: v,
                 x: d, batch: batch, y: out, isa: isa, threads: threads)
        Self.roll(out, into: dx, channels: inChannels, batch: batch, pixels: inPixels, threads: threads)
    }

    /// `dW += dY ⊛ X` at the mask's positions, for the input of the last `forward` or
    /// `loadInput`: into a dense `[Cout][Cin][k][k]` gradient or packed (rank order). Threads own
    /// whole output channels (all pixel rows of a weight), so the entries of one weight are
    /// added by one thread.
    public func weightGradient(dy: UnsafePointer<Float>, into output: SampledOutput, isa: SparseISA = .best, threads: Int = 1) {
        precondition(built != nil && loadedBatch > 0, "UnrolledConvolution.weightGradient before loadInput")
        let batch = loadedBatch
        let d = placedGradientU(dy, batch: batch, threads: threads)
        let (out, positions): (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Int32>)
        switch output {
        case .dense(let g): (out, positions) = (g, forwardWeight.pointer)
        case .packed(let g): (out, positions) = (g, forwardRank.pointer)
        }
        let parts = threads > 1 && entries * batch >= 1 << 16 ? threads : 1
        let b = Self.split(forwardStart.pointer, rows: outChannels * outPixels, parts: parts, align: outPixels)
        let rs = SendablePointer(forwardStart.pointer), src = SendablePointer(forwardSource.pointer)
        let dp = SendablePointer(d), xp = SendablePointer(inputU.pointer), op = SendablePointer(out), pp = SendablePointer(positions)
        let isaCode = Int32(isa.rawValue)
        parallelChunks(parts, chunks: parts) { range in
            for t in range where b[t] < b[t + 1] {
                stsp_sddmm(isaCode, rs.pointer, src.pointer, dp.pointer, batch, xp.pointer, batch, Int32(batch),
                           op.pointer, pp.pointer, Int32(b[t]), Int32(b[t + 1]))
            }
        }
    }
}
