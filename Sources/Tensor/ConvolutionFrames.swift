import CSparseKernels

/// The layouts in which a k×k, stride-s, padding-p convolution becomes a sparse matrix product
/// over **contiguous positions**, so the sparse kernels read activations with unit stride and
/// every weight entry is one element offset ("source") into a frame.
///
/// - Forward frame (input side): the zero-padded input split into `phaseSide²` phase planes
///   (`phaseSide = min(s, k)`), plane (a, b) holding padded pixels (s·i + a, s·j + b), frame
///   rows of `cols` positions, `rows` rows per image. Layout `[C][plane][N·rows·cols + tail]`.
///   Output pixel (n, i, j) is position `p = (n·rows + i)·cols + j`, and tap (c, kh, kw) reads
///   `p + c·channelStride + plane(kh mod s, kw mod s)·planeStride + ⌊kh/s⌋·cols + ⌊kw/s⌋`.
///   Neighbouring rows and images share their zero padding where it is as wide as the overshoot
///   (a read past a row's end lands in the next row's leading zeros): a "same" 3×3 convolution
///   has `cols = W + 1`, `rows = H + 1`. Positions with i ≥ Ho or j ≥ Wo are computed and
///   dropped; the output gradient laid out in this frame (zero there) gives the weight gradient
///   as a sampled product.
/// - Gradient frame (output side, for dX): dY at row and column offset `shift − skip` in
///   `[Cout][N·gradientRows·gradientCols + tail]`, zero around. dX pixel
///   (s·(i + skip) + a − p, s·(j + skip) + b − p) is position (n, i, j) of phase (a, b), which
///   gathers the taps kh ≡ a, kw ≡ b (mod s) at offsets
///   `o·gradientPlane + (shift − ⌊kh/s⌋)·gradientCols + shift − ⌊kw/s⌋`.
///
/// `shift = ⌊(k−1)/s⌋`; `skip` = the leading rows every phase plane has in its padding. Position
/// counts end at the last valid pixel; planes have a zero tail for the reads past it.
public struct ConvolutionFrames: Equatable, Sendable {
    public let geometry: ConvGeometry
    public let batch: Int
    public let phaseSide: Int, shift: Int, skip: Int
    public let rows: Int, cols: Int
    public let gradientRows: Int, gradientCols: Int
    public let planeStride: Int, forwardPositions: Int
    public let gradientPlane: Int, gradientPositions: Int

    public init(_ g: ConvGeometry, batch: Int) {
        precondition(g.kernelH == g.kernelW, "square kernels only")
        geometry = g
        self.batch = batch
        let k = g.kernelH, s = g.stride, p = g.padding, ho = g.outHeight, wo = g.outWidth
        let side = min(s, k), shift = (k - 1) / s
        // ⌈(p − side + 1) / s⌉ within [0, shift]: zero rows (and columns) leading every phase plane.
        let lead = p - side + 1, skip = min(shift, lead > 0 ? (lead + s - 1) / s : 0)
        phaseSide = side
        self.shift = shift
        self.skip = skip
        /// Pitch of the forward frame along one axis: shared padding when the rows it drops are
        /// padding in every plane.
        func pitch(_ out: Int, _ size: Int) -> Int {
            let shared = out + shift - skip
            return s * shared - p >= size ? shared : out + shift
        }
        rows = pitch(ho, g.height)
        cols = pitch(wo, g.width)
        let forwardLast = ((batch - 1) * rows + ho - 1) * cols + wo - 1
        forwardPositions = forwardLast + 1
        planeStride = max(batch * rows * cols, forwardLast + shift * cols + shift + 1)
        let top = shift - skip
        let lastI = (g.height - 1 + p) / s - skip, lastJ = (g.width - 1 + p) / s - skip
        gradientRows = max(top + ho, lastI + shift + 1 - top)
        gradientCols = max(top + wo, lastJ + shift + 1 - top)
        let gradientLast = ((batch - 1) * gradientRows + lastI) * gradientCols + lastJ
        gradientPositions = gradientLast + 1
        gradientPlane = max(batch * gradientRows * gradientCols, gradientLast + shift * gradientCols + shift + 1)
    }

    public var planes: Int { phaseSide * phaseSide }
    public var channelStride: Int { planes * planeStride }
    /// Row and column offset of dY in the gradient frame.
    public var gradientTop: Int { shift - skip }
    /// Floats of the forward frame of `channels` channels.
    public var inputCount: Int { geometry.channels * channelStride }

    /// Forward-frame offset of weight column `t = c·k² + kh·k + kw`.
    public func forwardSource(column t: Int) -> Int {
        let k = geometry.kernelH, s = geometry.stride
        let c = t / (k * k), kh = t % (k * k) / k, kw = t % k
        return c * channelStride + ((kh % s) * phaseSide + kw % s) * planeStride + (kh / s) * cols + kw / s
    }

    /// Gradient-frame offset of output channel `o` at tap (kh, kw).
    public func gradientSource(outChannel o: Int, kh: Int, kw: Int) -> Int {
        let s = geometry.stride
        return o * gradientPlane + (shift - kh / s) * gradientCols + shift - kw / s
    }

    /// Position chunks of whole frame rows (`width` positions each), about `target` positions
    /// long: `(first, count)` over `0 ..< total`.
    public static func chunks(total: Int, width: Int, target: Int) -> [(Int, Int)] {
        let step = max(1, target / max(width, 1)) * max(width, 1)
        return Swift.stride(from: 0, to: total, by: step).map { ($0, min(step, total - $0)) }
    }

    /// Writes the forward frame of x (`[C][N][H][W]`): every plane, padding and unused tail
    /// positions zero. Parallel over channels.
    public func packInput(_ x: UnsafePointer<Float>, into frame: UnsafeMutablePointer<Float>, threads: Int) {
        let g = geometry, n = batch, rows = rows, cols = cols, side = phaseSide, s = g.stride, p = g.padding
        let xs = SendablePointer(UnsafeMutablePointer(mutating: x)), fs = SendablePointer(frame)
        let cs = channelStride, ps = planeStride, plane = g.height * g.width
        parallelChunks(g.channels, chunks: cs * g.channels > 1 << 16 ? threads : 1) { range in
            for c in range {
                for a in 0..<side {
                    for b in 0..<side {
                        let dst0 = fs.pointer + c * cs + (a * side + b) * ps
                        (dst0 + n * rows * cols).update(repeating: 0, count: ps - n * rows * cols)
                        for img in 0..<n {
                            let src = xs.pointer + (c * n + img) * plane, image = dst0 + img * rows * cols
                            // Frame rows i read input row s·i + a − p: those in [0, H) hold data.
                            let i0 = min(rows, max(0, (p - a + s - 1) / s))
                            let top = g.height - 1 + p - a
                            let i1 = top < 0 ? i0 : max(i0, min(rows, top / s + 1))
                            image.update(repeating: 0, count: i0 * cols)
                            (image + i1 * cols).update(repeating: 0, count: (rows - i1) * cols)
                            guard i1 > i0 else { continue }
                            let line = src + (s * i0 + a - p) * g.width
                            if s == 1 {
                                // Columns j ↔ input j − p: leading zeros, the line, trailing zeros.
                                let lo = min(p, cols), count = max(0, min(g.width, cols - p))
                                padRows(line + (lo - p), stride: g.width, count: count, into: image + i0 * cols,
                                        stride: cols, lead: lo, width: cols, rows: i1 - i0)
                                continue
                            }
                            for i in i0..<i1 {
                                let row = image + i * cols, input = line + (i - i0) * s * g.width
                                for j in 0..<cols {
                                    let iw = s * j + b - p
                                    row[j] = iw >= 0 && iw < g.width ? input[iw] : 0
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes `[channels][N][Ho][Wo]` activations into a frame of `planeSize` floats per channel
    /// with images of `frameRows × frameCols`, at row and column offset `at`, zero elsewhere (the
    /// output gradient in the forward frame with `at = 0`, or in the gradient frame at
    /// `gradientTop`).
    public func place(
        _ y: UnsafePointer<Float>, channels: Int, frameRows: Int, frameCols: Int, planeSize: Int, at shift: Int,
        into frame: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let ho = geometry.outHeight, wo = geometry.outWidth, n = batch
        let ys = SendablePointer(UnsafeMutablePointer(mutating: y)), fs = SendablePointer(frame)
        parallelChunks(channels, chunks: planeSize * channels > 1 << 16 ? threads : 1) { range in
            for c in range {
                let dst = fs.pointer + c * planeSize
                // Each element written once: rows without data zero, rows with data padded.
                let first = min(shift, frameRows), last = min(frameRows, shift + ho)
                for img in 0..<n {
                    let image = dst + img * frameRows * frameCols
                    image.update(repeating: 0, count: first * frameCols)
                    (image + last * frameCols).update(repeating: 0, count: (frameRows - last) * frameCols)
                    padRows(ys.pointer + (c * n + img) * ho * wo, stride: wo, count: wo, into: image + first * frameCols,
                            stride: frameCols, lead: shift, width: frameCols, rows: last - first)
                }
                let used = n * frameRows * frameCols
                (dst + used).update(repeating: 0, count: planeSize - used)
            }
        }
    }

    /// Copies the valid pixels of a chunk of forward positions (`chunk[r·count + q]` for position
    /// `first + q`, row-aligned `first`) into `y[r][N][Ho][Wo]`.
    public func storeOutput(
        _ chunk: UnsafePointer<Float>, channels: Int, first: Int, count: Int, into y: UnsafeMutablePointer<Float>
    ) {
        let ho = geometry.outHeight, wo = geometry.outWidth, plane = ho * wo, ldy = batch * plane
        var p = first
        while p < first + count {
            let img = p / (rows * cols), i = p / cols % rows
            if i < ho {
                padRows(chunk + (p - first), stride: count, count: min(wo, first + count - p),
                        into: y + img * plane + i * wo, stride: ldy, rows: channels)
            }
            p += cols
        }
    }

    /// Copies a chunk of phase (a, b) gradient positions into the valid pixels
    /// (s·(i + skip) + a − p, s·(j + skip) + b − p) of `dx[r][N][H][W]`.
    public func storeInputGradient(
        _ chunk: UnsafePointer<Float>, channels: Int, phase a: Int, _ b: Int, first: Int, count: Int,
        into dx: UnsafeMutablePointer<Float>
    ) {
        let g = geometry, s = g.stride, pad = g.padding - s * skip, plane = g.height * g.width, ldx = batch * plane
        let gr = gradientRows, gc = gradientCols
        var jLo = 0
        while s * jLo + b - pad < 0 { jLo += 1 }
        var jHi = jLo
        while jHi < gc && s * jHi + b - pad < g.width { jHi += 1 }
        var p = first
        while p < first + count {
            let img = p / (gr * gc), i = p / gc % gr, ih = s * i + a - pad
            if ih >= 0 && ih < g.height {
                let hi = min(jHi, first + count - p), src = chunk + (p - first), dst = dx + img * plane + ih * g.width
                if s == 1 && jLo < hi {
                    padRows(src + jLo, stride: count, count: hi - jLo, into: dst + jLo + b - pad, stride: ldx, rows: channels)
                } else if jLo < hi {
                    for r in 0..<channels {
                        for j in jLo..<hi { dst[r * ldx + s * j + b - pad] = src[r * count + j] }
                    }
                }
            }
            p += gc
        }
    }
}

/// For r in [0, rows), row r of `dst` (pitch `stride`) gets `width` floats (default `count`):
/// `lead` zeros, `count` floats of row r of `src` (pitch `stride`), zeros — `stsp_pad_rows`,
/// one call for many short frame rows.
@inline(__always)
public func padRows(_ src: UnsafePointer<Float>, stride srcStride: Int, count: Int, into dst: UnsafeMutablePointer<Float>,
                    stride dstStride: Int, lead: Int = 0, width: Int? = nil, rows: Int, isa: KernelISA = .best) {
    guard rows > 0 else { return }
    stsp_pad_rows(Int32(isa.rawValue), src, srcStride, Int32(count), dst, dstStride, Int32(lead),
                  Int32(width ?? count), Int32(rows))
}
